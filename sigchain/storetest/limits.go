package storetest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// next builds the link of typ after st.
func next(t *testing.T, id *kez.Identity, st *sigchain.State, typ string, body []byte) (*sigchain.State, *sigchain.Link) {
	t.Helper()
	l, err := sigchain.NewLink(id, st, typ, body, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err = st.Extend([]*sigchain.Link{l})
	if err != nil {
		t.Fatal(err)
	}
	return st, l
}

func eldest(id *kez.Identity, handle string) []byte {
	return sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, handle)
}

// capped serves a handler over s with only the caps of l on, and returns
// a client of it.
func capped(t *testing.T, s sigchain.Store, maxLinks int, maxBytes int64) *sigchain.Client {
	l := sigchain.NoLimits()
	l.MaxLinks, l.MaxBytes = maxLinks, maxBytes
	srv := httptest.NewServer(sigchain.NewHandler(s, sigchain.WithLimits(l), sigchain.WithLogger(slog.New(slog.DiscardHandler))))
	t.Cleanup(srv.Close)
	return &sigchain.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}
}

// wantFull checks that err is a 413 refusal of the cap named reason.
func wantFull(t *testing.T, what string, err error, reason string) {
	t.Helper()
	var se *sigchain.ServerError
	if !errors.Is(err, sigchain.ErrChainFull) || !errors.As(err, &se) || se.StatusCode != 413 || se.Reason != reason {
		t.Fatalf("%s: %v, want a 413 %s refusal matching ErrChainFull", what, err, reason)
	}
}

// testCaps grows a chain past the link cap and another past the byte
// cap through the sig-server's handler over the store: the append over
// each cap is refused (also by a second handler that has never seen the
// chain, as another replica), exactly at the cap it is not, and the
// chains stay readable.
func testCaps(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	c := capped(t, s, 5, -1)
	id := Identity(t, 20)
	var st *sigchain.State
	var l *sigchain.Link
	for i := range 5 {
		typ, body := sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("c%d@kez.lat", i))
		if i == 0 {
			typ, body = sigchain.TypeEldest, eldest(id, "")
		}
		st, l = next(t, id, st, typ, body)
		if err := c.Append(ctx, l); err != nil {
			t.Fatalf("link %d of 5: %v", i+1, err)
		}
	}
	_, sixth := next(t, id, st, sigchain.TypeSetHandle, sigchain.SetHandleBody("six@kez.lat"))
	wantFull(t, "the 6th link with a cap of 5", c.Append(ctx, sixth), sigchain.ReasonChainLinks)
	wantFull(t, "the 6th link at another replica", capped(t, another(), 5, -1).Append(ctx, sixth), sigchain.ReasonChainLinks)
	if got, err := c.FetchVerified(ctx, id.PublicKey(), nil); err != nil || got.Pin() != st.Pin() {
		t.Fatalf("the full chain does not read back: %v", err)
	}
	// Positive control: without the cap the same link is stored.
	if err := capped(t, s, -1, -1).Append(ctx, sixth); err != nil {
		t.Fatalf("control: %v", err)
	}

	// Bytes: three links, then a cap that leaves room for exactly one
	// small link.
	id = Identity(t, 21)
	st = nil
	var size int64
	for i, body := range [][]byte{eldest(id, ""), []byte(`{"files":"` + strings.Repeat("a", 10_000) + `"}`), sigchain.SetHandleBody("b@kez.lat")} {
		typ := []string{sigchain.TypeEldest, sigchain.TypeSetSharedFiles, sigchain.TypeSetHandle}[i]
		st, l = next(t, id, st, typ, body)
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
		size += int64(len(l.Bytes()))
	}
	_, big := next(t, id, st, sigchain.TypeSetSharedFiles, []byte(`{"files":"`+strings.Repeat("b", 10_000)+`"}`))
	st2, small := next(t, id, st, sigchain.TypeSetHandle, sigchain.SetHandleBody("b2@kez.lat"))
	maxBytes := size + int64(len(small.Bytes()))
	c = capped(t, s, -1, maxBytes)
	wantFull(t, "a 10 KB link past the byte cap", c.Append(ctx, big), sigchain.ReasonChainBytes)
	if err := c.Append(ctx, small); err != nil {
		t.Fatalf("a link that fills the chain to exactly the cap: %v", err)
	}
	_, more := next(t, id, st2, sigchain.TypeSetHandle, sigchain.SetHandleBody("b3@kez.lat"))
	wantFull(t, "one more link", c.Append(ctx, more), sigchain.ReasonChainBytes)
	wantFull(t, "one more link at another replica", capped(t, another(), -1, maxBytes).Append(ctx, more), sigchain.ReasonChainBytes)
	if got, err := c.FetchVerified(ctx, id.PublicKey(), nil); err != nil || got.Pin() != st2.Pin() {
		t.Fatalf("the full chain does not read back: %v", err)
	}
}

// collector returns s as an OrphanCollector or skips the test.
func collector(t *testing.T, s sigchain.Store) sigchain.OrphanCollector {
	c, ok := s.(sigchain.OrphanCollector)
	if !ok {
		t.Skipf("%T does not collect orphan chains", s)
	}
	return c
}

// testOrphans makes chains that never named a handle and chains that
// did: a collection with a cutoff before they were made deletes nothing,
// one after deletes exactly the orphans, and an orphan's key can start a
// new chain, which is an orphan again.
func testOrphans(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	c := collector(t, s)
	type chain struct {
		name   string
		links  []*sigchain.Link
		orphan bool
	}
	build := func(i int, name string, orphan bool, steps ...[2]string) *chain {
		id := Identity(t, i)
		var st *sigchain.State
		ch := &chain{name: name, orphan: orphan}
		for j, step := range steps {
			typ, body := step[0], []byte(step[1])
			if j == 0 {
				body = eldest(id, step[1])
			}
			var l *sigchain.Link
			st, l = next(t, id, st, typ, body)
			if err := s.Append(ctx, l); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			ch.links = append(ch.links, l)
		}
		return ch
	}
	el, sh := sigchain.TypeEldest, sigchain.TypeSetHandle
	chains := []*chain{
		build(30, "eldest without a handle", true, [2]string{el, ""}),
		build(31, "eldest with a handle", false, [2]string{el, "b@kez.lat"}),
		build(32, "a handle set later", false, [2]string{el, ""}, [2]string{sigchain.TypeAddClaim, string(sigchain.AddClaimBody("github", "c", "https://example.org/c"))}, [2]string{sh, string(sigchain.SetHandleBody("c@kez.lat"))}),
		build(33, "a handle released", false, [2]string{el, "d@kez.lat"}, [2]string{sh, string(sigchain.SetHandleBody(""))}),
		build(34, "claims but no handle", true, [2]string{el, ""}, [2]string{sigchain.TypeAddClaim, string(sigchain.AddClaimBody("github", "e", "https://example.org/e"))}, [2]string{sh, string(sigchain.SetHandleBody(""))}),
	}
	check := func(when string) {
		t.Helper()
		for _, ch := range chains {
			got, h, err := s.Links(ctx, ch.links[0].Key(), 0, 100)
			if ch.orphan && when == "after" {
				if !errors.Is(err, sigchain.ErrNotFound) {
					t.Fatalf("%s %s collection: %d links, %v; want it collected", when, ch.name, len(got), err)
				}
				continue
			}
			if err != nil || h != head(ch.links[len(ch.links)-1]) {
				t.Fatalf("%s %s collection: head %v, %v", when, ch.name, h, err)
			}
			sameLinks(t, ch.name, got, ch.links)
		}
	}
	if n, err := c.CollectOrphans(ctx, time.Now().Add(-time.Hour)); n != 0 || err != nil {
		t.Fatalf("a cutoff before every chain: %d collected, %v", n, err)
	}
	check("before")
	if n, err := c.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 2 || err != nil {
		t.Fatalf("collected %d, %v; want the 2 orphans", n, err)
	}
	check("after")
	if n, err := c.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 0 || err != nil {
		t.Fatalf("again: %d, %v", n, err)
	}
	// The key of a collected orphan starts over; the new chain is an
	// orphan again, until it names a handle.
	again := build(30, "eldest without a handle, again", true, [2]string{el, ""})
	if n, err := c.CollectOrphans(ctx, time.Now().Add(-time.Hour)); n != 0 || err != nil {
		t.Fatalf("the new chain is young: %d, %v", n, err)
	}
	if n, err := c.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("the new orphan: %d, %v", n, err)
	}
	if _, err := s.Head(ctx, again.links[0].Key()); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("the new orphan is still there: %v", err)
	}
	named := build(34, "the second chain of a key, with a handle", false, [2]string{el, "e@kez.lat"})
	if n, err := c.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 0 || err != nil {
		t.Fatalf("a chain with a handle was collected: %d, %v", n, err)
	}
	if h, err := s.Head(ctx, named.links[0].Key()); err != nil || h != head(named.links[0]) {
		t.Fatalf("%v %v", h, err)
	}
}

// testOrphanRace appends a link naming a handle to an old orphan while
// a collection (through another handle on the data) runs: either the
// append wins and the chain is kept whole, or the collection wins and
// the append is refused as a conflict. Never both.
func testOrphanRace(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	collector(t, s)
	c := collector(t, another())
	kept, collected := 0, 0
	for i := range 12 {
		id := Identity(t, 100+i)
		st, l := next(t, id, nil, sigchain.TypeEldest, eldest(id, ""))
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
		_, named := next(t, id, st, sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("r%d@kez.lat", i)))
		var appendErr, gcErr error
		var wg sync.WaitGroup
		start := make(chan struct{})
		wg.Go(func() { <-start; appendErr = s.Append(ctx, named) })
		wg.Go(func() { <-start; _, gcErr = c.CollectOrphans(ctx, time.Now().Add(time.Hour)) })
		close(start)
		wg.Wait()
		if gcErr != nil {
			t.Fatal(gcErr)
		}
		got, h, err := s.Links(ctx, id.PublicKey(), 0, 10)
		switch {
		case appendErr == nil:
			if err != nil || h != head(named) {
				t.Fatalf("round %d: the append succeeded but the chain is %v, %v", i, h, err)
			}
			sameLinks(t, "kept", got, []*sigchain.Link{l, named})
			kept++
		case errors.Is(appendErr, sigchain.ErrConflict):
			if !errors.Is(err, sigchain.ErrNotFound) {
				t.Fatalf("round %d: the append was refused but the chain is still there: %v", i, h)
			}
			collected++
		default:
			t.Fatalf("round %d: append: %v", i, appendErr)
		}
	}
	t.Logf("%d rounds kept the chain, %d collected it", kept, collected)
}
