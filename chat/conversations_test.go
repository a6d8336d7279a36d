package chat

import (
	"database/sql"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// uniqueClock is real time made strictly increasing, a millisecond at
// least per reading, across every client that shares it: messages sent
// one after the other by different clients get distinct send times, so
// the list's order is the order of the test's steps.
type uniqueClock struct {
	mu   sync.Mutex
	last time.Time
}

func (u *uniqueClock) now() time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	t := time.Now().Truncate(time.Millisecond)
	if !t.After(u.last) {
		t = u.last.Add(time.Millisecond)
	}
	u.last = t
	return t
}

func (u *uniqueClock) opt(c *Config) { c.Client.Clock = u.now }

// rowName names a row of a conversation list for a test.
func rowName(cv Conversation) string {
	switch {
	case cv.Group != "":
		return "group " + cv.Group
	case cv.Request:
		return "request " + cv.Peer.String()
	}
	return cv.Handle
}

// rowsBy indexes a conversation list by rowName.
func rowsBy(cs []Conversation) map[string]Conversation {
	out := map[string]Conversation{}
	for _, cv := range cs {
		out[rowName(cv)] = cv
	}
	return out
}

func lastText(cv Conversation) string {
	if cv.Last == nil {
		return ""
	}
	return cv.Last.Text()
}

// A real exchange gives every kind of row: contacts (one never written
// to, one flagged with a held message), a message request and a group,
// with unread counts and the newest first; ReadConversations reads the
// same rows from the open client's database; a request that claims a
// contact's handle stays a request of its own.
func TestConversations(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	clk := &uniqueClock{}
	au, bu, cu, du, mu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol"), st.NewUser(t, "dave"), st.NewUser(t, "mallory")
	alice := openClient(t, st, au, clk.opt, checkEveryTime)
	bob, mallory := openClient(t, st, bu, clk.opt), openClient(t, st, mu, clk.opt)
	ctx := testCtx(t)
	mustAdd(t, alice, "bob")
	mustAdd(t, alice, "carol")
	mustAdd(t, alice, "dave")
	mustAdd(t, bob, "alice")
	mustAdd(t, mallory, "alice")
	if _, err := alice.VerifyContact(ctx, "carol", cu.Key.Fingerprint()); err != nil {
		t.Fatal(err)
	}

	mustSend(t, alice, "dave", "hi dave")
	mustSend(t, bob, "alice", "one")
	mustSend(t, bob, "alice", "two")
	receiveN(t, alice, 2)
	mustSend(t, alice, "bob", "three")
	mustSend(t, mallory, "alice", "hello, I am mallory")
	receiveN(t, alice, 1)
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}

	if _, err := alice.CreateGroup(ctx, "team", "The team"); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddGroupMembers(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	team := "team@" + st.Domain
	if g := waitGroup(t, bob, team, func(g *Group) bool { return len(g.Members) == 2 }); g.Invited {
		mustAccept(t, bob, team)
	}
	mustGroupSend(t, bob, team, "hi team")
	waitGroupText(t, alice, team, "hi team")

	// Dave's handle goes to another key, which writes to alice: held.
	st.ReleaseHandle(t, "dave")
	imposter := stacktest.Identity("not-dave")
	registerAs(t, st, imposter, du.Handle)
	if _, err := alice.Send(ctx, "dave", "after"); !errors.Is(err, ErrKeyChanged) {
		t.Fatalf("send after dave's key changed: %v", err)
	}
	im := openClient(t, st, &stacktest.User{Name: "not-dave", Identity: imposter, Key: imposter.PublicKey(), Handle: du.Handle}, clk.opt)
	if _, err := im.SendKey(ctx, au.Key, "it is me, dave, new phone"); err != nil {
		t.Fatal(err)
	}
	receiveN(t, alice, 1)

	cs, err := alice.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		name, last    string
		unread, held  int
		request       bool
		flag          ContactFlag
		verified      bool
		handle, title string
		peer          kez.PublicKey
		lastIncoming  bool
	}
	want := []row{
		{name: "group " + team, last: "hi team", unread: 1, title: "The team", lastIncoming: true},
		{name: "request " + mu.Key.String(), last: "hello, I am mallory", unread: 1, request: true, handle: "mallory@" + st.Domain, peer: mu.Key, lastIncoming: true},
		{name: "bob@" + st.Domain, last: "three", handle: "bob@" + st.Domain, unread: 2, peer: bu.Key},
		{name: "dave@" + st.Domain, last: "hi dave", handle: "dave@" + st.Domain, held: 1, flag: FlagKeyChanged, peer: du.Key},
		{name: "carol@" + st.Domain, handle: "carol@" + st.Domain, verified: true, peer: cu.Key},
	}
	if len(cs) != len(want) {
		t.Fatalf("%d rows: %+v", len(cs), cs)
	}
	for i, w := range want {
		cv := cs[i]
		got := row{name: rowName(cv), last: lastText(cv), unread: cv.Unread, held: cv.Held, request: cv.Request, flag: cv.Flag, verified: cv.Verified,
			handle: cv.Handle, title: cv.Title, peer: cv.Peer, lastIncoming: cv.Last != nil && cv.Last.Incoming}
		if got != w {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, got, w)
		}
	}
	if cs[0].Group != team || !cs[0].Peer.IsZero() {
		t.Errorf("the group's row: %+v", cs[0])
	}

	// The same rows without a client, read while this one is open.
	read, err := ReadConversations(ctx, alice.cc.Home)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(read, cs) {
		t.Errorf("ReadConversations differs from Conversations:\n%+v\n%+v", read, cs)
	}

	// Reading marks nothing; MarkRead does.
	rows := rowsBy(cs)
	page, err := alice.Page(ctx, PageQuery{Peer: bu.Key})
	if err != nil || len(page) != 3 || page[0].Text() != "one" || page[2].Text() != "three" {
		t.Fatalf("bob's page: %v, %v", texts(page), err)
	}
	if err := alice.MarkRead(ctx, page...); err != nil {
		t.Fatal(err)
	}
	cs, err = alice.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := rowsBy(cs)["bob@"+st.Domain]; got.Unread != 0 || rows["bob@"+st.Domain].Unread != 2 {
		t.Errorf("bob's row after MarkRead: %+v", got)
	}
	held, err := alice.Page(ctx, PageQuery{Peer: imposter.PublicKey()})
	if err != nil || len(held) != 1 || held[0].Trust != TrustHeld {
		t.Errorf("the held message's page: %+v, %v", held, err)
	}

	// Attacker: mallory's stored requests claim bob's handle (as a row
	// written by a lookup gone wrong would). They stay a request of
	// mallory's key, and bob's row does not change.
	if err := alice.db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE messages SET peer_handle = ? WHERE from_key = ?`, "bob@"+st.Domain, mu.Key.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	forged, err := ReadConversations(ctx, alice.cc.Home)
	if err != nil {
		t.Fatal(err)
	}
	if len(forged) != len(want) {
		t.Fatalf("%d rows after the forgery", len(forged))
	}
	req := rowsBy(forged)["request "+mu.Key.String()]
	bobRow := rowsBy(forged)["bob@"+st.Domain]
	if !req.Request || req.Peer != mu.Key || req.Handle != "bob@"+st.Domain || lastText(req) != "hello, I am mallory" || req.Unread != 1 {
		t.Errorf("the forged request: %+v", req)
	}
	if bobRow.Request || bobRow.Peer != bu.Key || lastText(bobRow) != "three" || bobRow.Unread != 0 {
		t.Errorf("bob's row after the forgery: %+v", bobRow)
	}
	if p, err := alice.Page(ctx, PageQuery{Peer: bu.Key}); err != nil || len(p) != 3 {
		t.Errorf("bob's conversation after the forgery: %v, %v", texts(p), err)
	}
}
