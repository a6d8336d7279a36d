// Package storetest is the contract every [sigchain.Store] keeps, as
// tests that any implementation runs against itself:
//
//	func TestContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (sigchain.Store, func() sigchain.Store) {
//			path := filepath.Join(t.TempDir(), "sig.db")
//			open := func() sigchain.Store { s, _ := sqlitestore.Open(path); ...; return s }
//			return open(), open
//		})
//	}
//
// The SQLite store (sigchain/sqlitestore) and the JetStream store
// (sigchain/jsstore) both run it. It also checks the sig-server's caps on
// a chain's size through [sigchain.NewHandler] over the store, and, for
// a store that is a [sigchain.OrphanCollector], the collection of orphan
// chains, and for a [sigchain.PrekeyStore] the prekey directory, through
// the handler too (records of others, forged, expired, rolled back,
// oversized and junk, floods), and for a [sigchain.DeviceStore] and
// [sigchain.LinkRequestStore] the device index and the link requests
// (devices claimed by two chains, revoked devices' prekeys, forged,
// expired and future requests, guessed codes, floods). [NewPerson]
// builds chains with devices. With a transparency log (sigchain.WithLog
// over a translog/logserver log) it checks that appends, repairs of links
// stored behind the log's back, deletions and racing appends are logged.
// [Chain] builds valid chains for tests and benchmarks. Use it only from
// tests.
package storetest

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Open makes a fresh, empty store for one test. It returns the store and
// a function that opens another handle on the same data, as a second
// process (another sig-server replica) would; the concurrency tests race
// through both. Open registers the cleanup of everything it opens.
type Open func(t *testing.T) (s sigchain.Store, another func() sigchain.Store)

// Run runs the whole contract as subtests of t.
func Run(t *testing.T, open Open) {
	t.Run("AppendHeadLinks", func(t *testing.T) { testAppendHeadLinks(t, open) })
	t.Run("Paging", func(t *testing.T) { testPaging(t, open) })
	t.Run("Fork", func(t *testing.T) { testFork(t, open) })
	t.Run("IndependentChains", func(t *testing.T) { testIndependent(t, open) })
	t.Run("ConcurrentAppends", func(t *testing.T) { testConcurrentSame(t, open) })
	t.Run("ConcurrentForks", func(t *testing.T) { testConcurrentForks(t, open) })
	t.Run("Caps", func(t *testing.T) { testCaps(t, open) })
	t.Run("Orphans", func(t *testing.T) { testOrphans(t, open) })
	t.Run("OrphanRace", func(t *testing.T) { testOrphanRace(t, open) })
	runPrekeys(t, open)
	runDevices(t, open)
	runLog(t, open)
}

// Identity returns a fixed identity for i: the same i gives the same keys.
func Identity(t testing.TB, i int) *kez.Identity {
	t.Helper()
	seed := sha512.Sum512(fmt.Appendf(nil, "sigchain/storetest identity %d", i))
	id, err := kez.FromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Chain returns n valid links of id's chain: an eldest link, then
// set_handle links.
func Chain(t testing.TB, id *kez.Identity, n int) []*sigchain.Link {
	t.Helper()
	var (
		st  *sigchain.State
		out []*sigchain.Link
	)
	now := time.Now()
	typ, body := sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "")
	for i := range n {
		l, err := sigchain.NewLink(id, st, typ, body, now)
		if err != nil {
			t.Fatal(err)
		}
		if st, err = st.Extend([]*sigchain.Link{l}); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
		typ, body = sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("h%d@kez.lat", i))
	}
	return out
}

// fork returns two different valid links that both follow first.
func fork(t *testing.T, id *kez.Identity, first *sigchain.Link) (a, b *sigchain.Link) {
	t.Helper()
	st, err := sigchain.Verify([]*sigchain.Link{first})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(h string) *sigchain.Link {
		l, err := sigchain.NewLink(id, st, sigchain.TypeSetHandle, sigchain.SetHandleBody(h), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	return mk("a@kez.lat"), mk("b@kez.lat")
}

func appendAll(t *testing.T, s sigchain.Store, links []*sigchain.Link) {
	t.Helper()
	for _, l := range links {
		if err := s.Append(context.Background(), l); err != nil {
			t.Fatalf("append %d: %v", l.Seqno(), err)
		}
	}
}

func head(l *sigchain.Link) sigchain.Head { return sigchain.Head{Seqno: l.Seqno(), ID: l.ID()} }

// wantConflict checks that err is a *ConflictError with head want.
func wantConflict(t *testing.T, what string, err error, want sigchain.Head) {
	t.Helper()
	var ce *sigchain.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, sigchain.ErrConflict) {
		t.Fatalf("%s: %v, want a *ConflictError", what, err)
	}
	if ce.Head.Seqno != want.Seqno || ce.Head.ID != want.ID {
		t.Fatalf("%s: conflict with head %d %v, want %d %v", what, ce.Head.Seqno, ce.Head.ID, want.Seqno, want.ID)
	}
}

// sameLinks checks that got are the exact bytes of want.
func sameLinks(t *testing.T, what string, got [][]byte, want []*sigchain.Link) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d links, want %d", what, len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i].Bytes()) {
			t.Fatalf("%s: link %d is not the bytes of seqno %d", what, i, want[i].Seqno())
		}
	}
}

func testAppendHeadLinks(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	links := Chain(t, Identity(t, 1), 5)
	key := links[0].Key()
	if _, err := s.Head(ctx, key); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("head of no chain: %v", err)
	}
	if _, _, err := s.Links(ctx, key, 0, 10); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("links of no chain: %v", err)
	}
	wantConflict(t, "seqno 2 on an empty chain", s.Append(ctx, links[1]), sigchain.Head{})
	if _, err := s.Head(ctx, key); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("a refused append created the chain: %v", err)
	}
	appendAll(t, s, links)
	// Re-appending a stored link, or skipping ahead, is a conflict.
	for _, l := range []*sigchain.Link{links[0], links[3], links[4]} {
		wantConflict(t, fmt.Sprintf("re-append %d", l.Seqno()), s.Append(ctx, l), head(links[4]))
	}
	if h, err := s.Head(ctx, key); err != nil || h != head(links[4]) {
		t.Fatalf("head %v %v", h, err)
	}
	got, h, err := s.Links(ctx, key, 1, 2)
	if err != nil || h != head(links[4]) {
		t.Fatalf("links since 1 limit 2: head %v %v", h, err)
	}
	sameLinks(t, "links since 1 limit 2", got, links[1:3])
	got, h, err = s.Links(ctx, key, 0, 100)
	if err != nil || h != head(links[4]) {
		t.Fatalf("all links: head %v %v", h, err)
	}
	sameLinks(t, "all links", got, links)
}

func testPaging(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	links := Chain(t, Identity(t, 1), 12)
	key := links[0].Key()
	appendAll(t, s, links)
	for _, tc := range []struct {
		since    uint64
		limit    int
		from, to int // want links[from:to]
	}{
		{0, 5, 0, 5}, {5, 5, 5, 10}, {10, 5, 10, 12}, {11, 1, 11, 12},
		{12, 5, 12, 12}, {100, 5, 12, 12}, {3, 100, 3, 12}, {0, 12, 0, 12},
	} {
		got, h, err := s.Links(ctx, key, tc.since, tc.limit)
		if err != nil || h != head(links[11]) {
			t.Fatalf("since %d limit %d: head %v %v", tc.since, tc.limit, h, err)
		}
		sameLinks(t, fmt.Sprintf("since %d limit %d", tc.since, tc.limit), got, links[tc.from:tc.to])
	}
}

func testFork(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	id := Identity(t, 1)
	links := Chain(t, id, 1)
	a, b := fork(t, id, links[0])
	appendAll(t, s, []*sigchain.Link{links[0], a})
	wantConflict(t, "the other fork", s.Append(ctx, b), head(a))
	got, _, err := s.Links(ctx, a.Key(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	sameLinks(t, "after the fork", got, []*sigchain.Link{links[0], a})
}

func testIndependent(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	one, two := Chain(t, Identity(t, 1), 3), Chain(t, Identity(t, 2), 2)
	appendAll(t, s, one[:1])
	appendAll(t, s, two)
	appendAll(t, s, one[1:])
	for _, c := range [][]*sigchain.Link{one, two} {
		key := c[0].Key()
		if h, err := s.Head(ctx, key); err != nil || h != head(c[len(c)-1]) {
			t.Fatalf("head of %.8s: %v %v", key.String(), h, err)
		}
		got, _, err := s.Links(ctx, key, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		sameLinks(t, "links of "+key.String()[:8], got, c)
	}
}

// race appends links[i] for every i at once, through s and another handle
// on the same data in turn, and returns the errors.
func race(t *testing.T, s sigchain.Store, another func() sigchain.Store, links []*sigchain.Link) []error {
	s2 := another()
	errs := make([]error, len(links))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, l := range links {
		store := s
		if i%2 == 1 {
			store = s2
		}
		wg.Go(func() {
			<-start
			errs[i] = store.Append(context.Background(), l)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// oneWinner checks that exactly one append succeeded and every other one
// is a conflict, and returns the winner's index.
func oneWinner(t *testing.T, errs []error) int {
	t.Helper()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			t.Errorf("append %d also won", i)
		case !errors.Is(err, sigchain.ErrConflict):
			t.Errorf("append %d: %v, want a conflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no append won")
	}
	return winner
}

func testConcurrentSame(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	links := Chain(t, Identity(t, 1), 2)
	appendAll(t, s, links[:1])
	racers := make([]*sigchain.Link, 40)
	for i := range racers {
		racers[i] = links[1]
	}
	oneWinner(t, race(t, s, another, racers))
	if h, err := s.Head(ctx, links[0].Key()); err != nil || h != head(links[1]) {
		t.Fatalf("head %v %v", h, err)
	}
}

func testConcurrentForks(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	id := Identity(t, 1)
	links := Chain(t, id, 1)
	appendAll(t, s, links)
	st, err := sigchain.Verify(links)
	if err != nil {
		t.Fatal(err)
	}
	// 16 different links at seqno 2: one is stored, whichever it is.
	racers := make([]*sigchain.Link, 16)
	for i := range racers {
		if racers[i], err = sigchain.NewLink(id, st, sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("f%d@kez.lat", i)), time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	w := oneWinner(t, race(t, s, another, racers))
	got, h, err := s.Links(ctx, id.PublicKey(), 0, 10)
	if err != nil || h != head(racers[w]) {
		t.Fatalf("head %v %v, want the winner's", h, err)
	}
	sameLinks(t, "after the race", got, []*sigchain.Link{links[0], racers[w]})
}
