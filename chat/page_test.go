package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// openOffline opens a client with no servers in a fresh home, closed in
// t.Cleanup.
func openOffline(t testing.TB, name string) *Client {
	t.Helper()
	c, err := Open(testCtx(t), Config{Client: client.Config{Identity: stacktest.Identity(name), Home: t.TempDir(), Domain: "kez.test"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// store writes entries into c's history, in one transaction.
func storeEntries(t testing.TB, c *Client, es []*Entry) {
	t.Helper()
	if err := c.db.write(testCtx(t), func(tx *sql.Tx) error {
		for _, e := range es {
			if _, err := c.db.insertEntry(tx, e); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// conversationOf makes n messages between me and peer, alternately
// received and sent, three at a time with the same send time, stream
// sequence and arrival (only their IDs tell them apart), and returns them
// in the display order.
func conversationOf(me, peer kez.PublicKey, n int, start time.Time, group string) []*Entry {
	var es []*Entry
	for i := range n {
		at := start.Add(time.Duration(i/3) * time.Second)
		e := &Entry{ID: NewMessageID(), Incoming: i%2 == 0, Peer: peer, PeerHandle: "bob@kez.test", SentAt: at, ReceivedAt: at,
			Kind: KindText, Body: fmt.Appendf(nil, "m%03d", i), Trust: TrustTrusted, Group: group}
		e.From, e.To = peer, me
		if !e.Incoming {
			e.From, e.To, e.State, e.Read = me, peer, StateSent, true
		}
		if group != "" && !e.Incoming {
			e.Peer, e.To = kez.PublicKey{}, kez.PublicKey{}
		}
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b *Entry) int {
		if c := a.SentAt.Compare(b.SentAt); c != 0 {
			return c
		}
		return slices.Compare(a.ID[:], b.ID[:])
	})
	return es
}

func ids(es []*Entry) []MessageID {
	out := make([]MessageID, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// walk reads a conversation back page by page with limit.
func walk(t *testing.T, c *Client, q PageQuery) (all []*Entry, pages int) {
	t.Helper()
	for {
		p, err := c.Page(testCtx(t), q)
		if err != nil {
			t.Fatal(err)
		}
		if len(p) == 0 {
			return all, pages
		}
		if want := cmpLimit(q.Limit); len(p) > want {
			t.Fatalf("a page of %d with limit %d", len(p), q.Limit)
		}
		pages++
		all = append(p, all...)
		q.Before = p[0]
	}
}

func cmpLimit(l int) int {
	if l == 0 {
		return DefaultPageSize
	}
	return l
}

// Page walks a 120-message conversation back, in pages of 7 and of the
// default size, without gaps or repeats though messages share their send
// time, sequence and arrival; a group's pages hold only the group's
// messages and a person's none of them.
func TestPage(t *testing.T) {
	c := openOffline(t, "alice")
	me, bob := c.me, stacktest.Identity("bob").PublicKey()
	start := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
	conv := conversationOf(me, bob, 120, start, "")
	grp := conversationOf(me, bob, 40, start, "team@kez.test")
	storeEntries(t, c, append(slices.Clone(conv), grp...))

	for _, limit := range []int{7, 0, MaxPageSize} {
		all, pages := walk(t, c, PageQuery{Peer: bob, Limit: limit})
		if !slices.Equal(ids(all), ids(conv)) {
			t.Fatalf("limit %d: the pages do not add up to the conversation (%d messages)", limit, len(all))
		}
		if want := (120 + cmpLimit(limit) - 1) / cmpLimit(limit); pages != want {
			t.Errorf("limit %d: %d pages, want %d", limit, pages, want)
		}
	}
	newest, err := c.Page(testCtx(t), PageQuery{Peer: bob})
	if err != nil || len(newest) != DefaultPageSize || newest[len(newest)-1].ID != conv[119].ID || newest[0].ID != conv[70].ID {
		t.Fatalf("the newest page: %d, %v", len(newest), err)
	}
	// The History a caller knew before agrees.
	h, err := c.History(testCtx(t), bob.String(), 0)
	if err != nil || !slices.Equal(ids(h), ids(conv)) {
		t.Errorf("History and Page disagree: %v", err)
	}

	all, _ := walk(t, c, PageQuery{Group: "team", Limit: 9})
	if !slices.Equal(ids(all), ids(grp)) {
		t.Fatalf("the group's pages: %d messages", len(all))
	}
	for _, e := range all {
		if e.Group != "team@kez.test" {
			t.Fatalf("a group page holds %+v", e)
		}
	}

	// A message not in the conversation as Before: the page is what
	// comes before its place in the order.
	before := &Entry{SentAt: start.Add(10 * time.Second)}
	p, err := c.Page(testCtx(t), PageQuery{Peer: bob, Before: before, Limit: 500})
	if err != nil || len(p) != 30 {
		t.Errorf("before a time: %d, %v", len(p), err)
	}
}

// Abuse: queries naming both or neither conversation, or limits out of
// range, are refused with ErrBadPageQuery; an unknown peer or group is an
// empty page, not another conversation.
func TestPageBadQueries(t *testing.T) {
	c := openOffline(t, "alice")
	bob := stacktest.Identity("bob").PublicKey()
	ctx := testCtx(t)
	for _, q := range []PageQuery{
		{},
		{Peer: bob, Group: "team"},
		{Peer: bob, Limit: -1},
		{Peer: bob, Limit: MaxPageSize + 1},
		{Group: "team", Limit: 1 << 40},
		{Group: "not a group name!"},
	} {
		if _, err := c.Page(ctx, q); !errors.Is(err, ErrBadPageQuery) {
			t.Errorf("%+v: %v", q, err)
		}
	}
	storeEntries(t, c, conversationOf(c.me, bob, 5, time.Now(), ""))
	for _, q := range []PageQuery{{Peer: stacktest.Identity("carol").PublicKey()}, {Group: "team"}} {
		if p, err := c.Page(ctx, q); err != nil || len(p) != 0 {
			t.Errorf("%+v: %d, %v", q, len(p), err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := c.Page(ctx, PageQuery{Peer: bob}); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled page: %v", err)
	}
}
