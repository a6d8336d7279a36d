// Package storetest is the contract every [group.Store] keeps, as tests
// that any implementation runs against itself:
//
//	func TestGroupContract(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (storetest.Stores, func() storetest.Stores) {
//			path := filepath.Join(t.TempDir(), "sig.db")
//			open := func() storetest.Stores { s, _ := sqlitestore.Open(path); ...; return storetest.Stores{groupstore.New(s), s} }
//			return open(), open
//		})
//	}
//
// The SQLite store (sigchain/sqlitestore/groupstore) and the JetStream
// store (sigchain/jsstore) both run it. Besides the store's own contract
// (atomic compare-and-append, forks, paging, the creators' count), it
// drives [group.NewHandler] over the stores: creates, replays,
// conflicts and the groups-per-key cap. [Builder] makes valid chains for
// tests. Use it only from tests.
package storetest

import (
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Stores are a sig-server's two stores on one backend: the groups and
// the sigchains (for the handler's checks of creators and devices).
type Stores struct {
	Groups group.Store
	Chains sigchain.Store
}

// Open makes fresh, empty stores for one test. It returns them and a
// function that opens another handle on the same data, as a second
// process (another sig-server replica) would; the concurrency tests race
// through both. Open registers the cleanup of everything it opens.
type Open func(t *testing.T) (s Stores, another func() Stores)

// Run runs the whole contract as subtests of t.
func Run(t *testing.T, open Open) {
	t.Run("AppendHeadLinks", func(t *testing.T) { testAppendHeadLinks(t, open) })
	t.Run("Paging", func(t *testing.T) { testPaging(t, open) })
	t.Run("Fork", func(t *testing.T) { testFork(t, open) })
	t.Run("NameTaken", func(t *testing.T) { testNameTaken(t, open) })
	t.Run("IndependentGroups", func(t *testing.T) { testIndependent(t, open) })
	t.Run("CreatedBy", func(t *testing.T) { testCreatedBy(t, open) })
	t.Run("ConcurrentForks", func(t *testing.T) { testConcurrentForks(t, open) })
	t.Run("ConcurrentCreates", func(t *testing.T) { testConcurrentCreates(t, open) })
	t.Run("Handler", func(t *testing.T) { testHandler(t, open) })
}

// Identity returns a fixed identity for i: the same i gives the same keys.
func Identity(t testing.TB, i int) *kez.Identity {
	t.Helper()
	seed := sha512.Sum512(fmt.Appendf(nil, "group/storetest identity %d", i))
	id, err := kez.FromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Builder is a group's chain under construction for tests: the links
// made so far and the verified state after them. Links are signed by
// the persons' own keys (key = by).
type Builder struct {
	Links []*group.Link
	State *group.State
	Now   time.Time // the ctime of the next link; each link adds a second
}

// NewGroup makes the create link of name by owner (whose handle is
// handle) at now.
func NewGroup(t testing.TB, owner *kez.Identity, name, handle string, now time.Time) *Builder {
	t.Helper()
	l, err := group.NewCreate(owner, owner.PublicKey(), name, handle, "", now)
	if err != nil {
		t.Fatal(err)
	}
	b := &Builder{Now: now}
	b.keep(t, l)
	return b
}

// Make makes, without keeping it, the next link signed by signer for
// by: the chain goes on as if it was never made.
func (b *Builder) Make(t testing.TB, signer kez.Signer, by kez.PublicKey, typ string, body []byte) *group.Link {
	t.Helper()
	l, err := group.NewLink(signer, by, b.State, typ, body, b.Now.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Next makes, verifies and keeps the next link, signed by id for itself.
func (b *Builder) Next(t testing.TB, id *kez.Identity, typ string, body []byte) *group.Link {
	t.Helper()
	l := b.Make(t, id, id.PublicKey(), typ, body)
	b.keep(t, l)
	return l
}

// Forge makes, without keeping it, the next link signed by signer for
// by without checking any rule of the chain: the link a stranger, a
// member without the role or a stolen key would send. It is canonical
// and validly signed, so only the rules refuse it.
func (b *Builder) Forge(t testing.TB, signer kez.Signer, by kez.PublicKey, typ string, body []byte) *group.Link {
	t.Helper()
	cb, err := sigchain.Canonicalize(body)
	if err != nil {
		t.Fatal(err)
	}
	str := func(s string) string { j, _ := json.Marshal(s); return string(j) }
	head := fmt.Sprintf(`{"v":1,"group":%s,"seqno":%d,"prev":"%s","ctime":%d,"by":"%s","key":"%s","type":%s,"body":%s`,
		str(b.State.Name()), b.State.Seqno()+1, b.State.Head(), b.Now.Add(time.Second).Unix(), by, signer.PublicKey(), str(typ), cb)
	sig, err := signer.Sign(kez.ContextGroupLink, []byte(head+"}"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := group.ParseLink([]byte(head + `,"sig":"` + base64.RawURLEncoding.EncodeToString(sig) + `"}`))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// NextAs makes and keeps the next link signed by signer (a device) for
// by; the device rule is not checked here.
func (b *Builder) NextAs(t testing.TB, signer kez.Signer, by kez.PublicKey, typ string, body []byte) *group.Link {
	t.Helper()
	l := b.Make(t, signer, by, typ, body)
	b.keep(t, l)
	return l
}

// Add adds ids (handles h<i>@kez.lat, role member) to the group, signed by by.
func (b *Builder) Add(t testing.TB, by *kez.Identity, ids ...*kez.Identity) *group.Link {
	t.Helper()
	ms := make([]group.NewMember, len(ids))
	for i, id := range ids {
		ms[i] = group.NewMember{Key: id.PublicKey(), Handle: fmt.Sprintf("m%d@kez.lat", i), Role: group.RoleMember}
	}
	return b.Next(t, by, group.TypeAdd, group.AddBody(ms))
}

func anyDevice(context.Context, kez.PublicKey, kez.PublicKey, time.Time) error { return nil }

func (b *Builder) keep(t testing.TB, l *group.Link) {
	t.Helper()
	st, err := b.State.Extend(context.Background(), [][]byte{l.Bytes()}, anyDevice, group.WithClock(func() time.Time { return l.Ctime() }))
	if err != nil {
		t.Fatal(err)
	}
	b.State, b.Now = st, l.Ctime()
	b.Links = append(b.Links, l)
}

// titles returns a chain of n links: a create, then title changes.
func titles(t testing.TB, owner *kez.Identity, name string, n int) *Builder {
	t.Helper()
	_, domain, _ := strings.Cut(name, "@")
	b := NewGroup(t, owner, name, "owner@"+domain, time.Now().Add(-time.Hour))
	for i := 1; i < n; i++ {
		b.Next(t, owner, group.TypeTitle, group.TitleBody(fmt.Sprintf("title %d", i)))
	}
	return b
}

func bytesOf(ls []*group.Link) [][]byte {
	out := make([][]byte, len(ls))
	for i, l := range ls {
		out[i] = l.Bytes()
	}
	return out
}

func wantHead(t *testing.T, what string, s group.Store, name string, want *group.Link) {
	t.Helper()
	h, err := s.Head(context.Background(), name)
	if err != nil || h.Seqno != want.Seqno() || !h.ID.Equals(want.ID()) {
		t.Fatalf("%s: head %d %s, %v; want %d %s", what, h.Seqno, h.ID, err, want.Seqno(), want.ID())
	}
}

func wantConflict(t *testing.T, what string, err error, head *group.Link) {
	t.Helper()
	var ce *group.ConflictError
	if !errors.As(err, &ce) || !errors.Is(err, group.ErrConflict) {
		t.Fatalf("%s: %v, want a conflict", what, err)
	}
	if head == nil {
		if ce.Head.Seqno != 0 {
			t.Fatalf("%s: conflict head %d, want none", what, ce.Head.Seqno)
		}
		return
	}
	if ce.Head.Seqno != head.Seqno() || !ce.Head.ID.Equals(head.ID()) {
		t.Fatalf("%s: conflict head %d %s, want %d %s", what, ce.Head.Seqno, ce.Head.ID, head.Seqno(), head.ID())
	}
}

func appendAll(t *testing.T, s group.Store, ls []*group.Link) {
	t.Helper()
	for _, l := range ls {
		if err := s.Append(context.Background(), l); err != nil {
			t.Fatalf("append %d: %v", l.Seqno(), err)
		}
	}
}

func wantLinks(t *testing.T, what string, got [][]byte, want []*group.Link) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d links, want %d", what, len(got), len(want))
	}
	for i := range got {
		if string(got[i]) != string(want[i].Bytes()) {
			t.Fatalf("%s: link %d differs", what, i)
		}
	}
}

func testAppendHeadLinks(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	b := titles(t, Identity(t, 1), "team@kez.lat", 5)
	if _, err := s.Groups.Head(ctx, "team@kez.lat"); !errors.Is(err, group.ErrNotFound) {
		t.Fatalf("empty head: %v", err)
	}
	if _, _, err := s.Groups.Links(ctx, "team@kez.lat", 0, 10); !errors.Is(err, group.ErrNotFound) {
		t.Fatalf("empty links: %v", err)
	}
	wantConflict(t, "seqno 2 of no group", s.Groups.Append(ctx, b.Links[1]), nil)
	appendAll(t, s.Groups, b.Links)
	for _, l := range []*group.Link{b.Links[0], b.Links[3], b.Links[4]} {
		wantConflict(t, fmt.Sprintf("append %d again", l.Seqno()), s.Groups.Append(ctx, l), b.Links[4])
	}
	wantHead(t, "after 5", s.Groups, "team@kez.lat", b.Links[4])
	got, h, err := s.Groups.Links(ctx, "team@kez.lat", 1, 2)
	if err != nil || h.Seqno != 5 || !h.ID.Equals(b.Links[4].ID()) {
		t.Fatalf("links: head %v, %v", h, err)
	}
	wantLinks(t, "links 2–3", got, b.Links[1:3])
	got, _, err = s.Groups.Links(ctx, "team@kez.lat", 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	wantLinks(t, "all links", got, b.Links)
	for _, since := range []uint64{5, 6, 1 << 40, 1<<64 - 1} {
		got, h, err := s.Groups.Links(ctx, "team@kez.lat", since, 10)
		if err != nil || len(got) != 0 || h.Seqno != 5 {
			t.Fatalf("since %d beyond the head: %d links, head %d, %v", since, len(got), h.Seqno, err)
		}
	}
	if got, h, err := s.Groups.Links(ctx, "team@kez.lat", 0, 0); err != nil || len(got) != 0 || h.Seqno != 5 {
		t.Fatalf("limit 0: %d links, head %d, %v", len(got), h.Seqno, err)
	}
}

func testPaging(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	b := titles(t, Identity(t, 1), "big@kez.lat", 40)
	appendAll(t, s.Groups, b.Links)
	var all [][]byte
	for since := uint64(0); ; {
		page, h, err := s.Groups.Links(ctx, "big@kez.lat", since, 7)
		if err != nil || h.Seqno != 40 {
			t.Fatalf("page after %d: head %d, %v", since, h.Seqno, err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 7 {
			t.Fatalf("page of %d links, limit 7", len(page))
		}
		all = append(all, page...)
		since += uint64(len(page))
	}
	wantLinks(t, "paged", all, b.Links)
}

func testFork(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	owner := Identity(t, 1)
	b := titles(t, owner, "team@kez.lat", 2)
	appendAll(t, s.Groups, b.Links)
	// Two different links at seqno 3: the first wins, the second is a
	// conflict, and the head stays the first.
	x := b.Make(t, owner, owner.PublicKey(), group.TypeTitle, group.TitleBody("x"))
	y := b.Make(t, owner, owner.PublicKey(), group.TypeTitle, group.TitleBody("y"))
	if err := s.Groups.Append(ctx, x); err != nil {
		t.Fatal(err)
	}
	wantConflict(t, "forked append", s.Groups.Append(ctx, y), x)
	wantHead(t, "after the fork", s.Groups, "team@kez.lat", x)
	// A link at head+1 whose prev is not the head is a conflict too.
	c := titles(t, owner, "team@kez.lat", 4) // another chain of the same name
	wantConflict(t, "prev is not the head", s.Groups.Append(ctx, c.Links[3]), x)
	got, _, err := s.Groups.Links(ctx, "team@kez.lat", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	wantLinks(t, "after the fork", got, append(b.Links[:2:2], x))
}

func testNameTaken(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	a := NewGroup(t, Identity(t, 1), "team@kez.lat", "alice@kez.lat", time.Now())
	m := NewGroup(t, Identity(t, 2), "team@kez.lat", "mallory@kez.lat", time.Now())
	if err := s.Groups.Append(ctx, a.Links[0]); err != nil {
		t.Fatal(err)
	}
	wantConflict(t, "second create of the name", s.Groups.Append(ctx, m.Links[0]), a.Links[0])
	if n, err := s.Groups.CreatedBy(ctx, Identity(t, 2).PublicKey()); err != nil || n != 0 {
		t.Fatalf("the refused creator counts %d, %v", n, err)
	}
}

func testIndependent(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	owner := Identity(t, 1)
	// Names that share prefixes, in every part.
	names := []string{"team@kez.lat", "team@kez.la", "teams@kez.lat", "te@am.kez.lat", "team@kez.lat.example"}
	var bs []*Builder
	for i, n := range names {
		b := titles(t, owner, n, i+1)
		appendAll(t, s.Groups, b.Links)
		bs = append(bs, b)
	}
	for i, n := range names {
		wantHead(t, n, s.Groups, n, bs[i].Links[i])
		got, _, err := s.Groups.Links(ctx, n, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		wantLinks(t, n, got, bs[i].Links)
	}
}

func testCreatedBy(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	alice, bob := Identity(t, 1), Identity(t, 2)
	for i := range 3 {
		b := NewGroup(t, alice, fmt.Sprintf("a%d@kez.lat", i), "alice@kez.lat", time.Now())
		b.Add(t, alice, bob) // adds do not count
		appendAll(t, s.Groups, b.Links)
	}
	appendAll(t, s.Groups, NewGroup(t, bob, "b0@kez.lat", "bob@kez.lat", time.Now()).Links)
	for _, st := range []group.Store{s.Groups, another().Groups} {
		if n, err := st.CreatedBy(ctx, alice.PublicKey()); err != nil || n != 3 {
			t.Fatalf("alice created %d, %v; want 3", n, err)
		}
		if n, err := st.CreatedBy(ctx, bob.PublicKey()); err != nil || n != 1 {
			t.Fatalf("bob created %d, %v; want 1", n, err)
		}
		if n, err := st.CreatedBy(ctx, Identity(t, 3).PublicKey()); err != nil || n != 0 {
			t.Fatalf("a stranger created %d, %v; want 0", n, err)
		}
	}
}

// testConcurrentForks races different links at one seqno through two
// handles (two processes): exactly one is stored.
func testConcurrentForks(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	other := another()
	owner := Identity(t, 1)
	b := titles(t, owner, "race@kez.lat", 2)
	appendAll(t, s.Groups, b.Links)
	const n = 8
	links := make([]*group.Link, n)
	for i := range links {
		links[i] = b.Make(t, owner, owner.PublicKey(), group.TypeTitle, group.TitleBody(fmt.Sprintf("racer %d", i)))
	}
	wins := raceAppends(t, []group.Store{s.Groups, other.Groups}, links)
	if len(wins) != 1 {
		t.Fatalf("%d of %d forks stored, want exactly 1", len(wins), n)
	}
	wantHead(t, "after the race", s.Groups, "race@kez.lat", links[wins[0]])
	wantHead(t, "after the race, other handle", other.Groups, "race@kez.lat", links[wins[0]])
	_ = ctx
}

// testConcurrentCreates races creates of one name by different people:
// exactly one is stored and counted.
func testConcurrentCreates(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	other := another()
	const n = 6
	links := make([]*group.Link, n)
	for i := range links {
		links[i] = NewGroup(t, Identity(t, 10+i), "race@kez.lat", fmt.Sprintf("p%d@kez.lat", i), time.Now()).Links[0]
	}
	wins := raceAppends(t, []group.Store{s.Groups, other.Groups}, links)
	if len(wins) != 1 {
		t.Fatalf("%d of %d creates stored, want exactly 1", len(wins), n)
	}
	total := 0
	for i := range n {
		c, err := s.Groups.CreatedBy(ctx, Identity(t, 10+i).PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		total += c
	}
	if total != 1 {
		t.Fatalf("%d creators counted, want 1", total)
	}
}

// raceAppends appends links at once, alternating stores, and returns the
// indices of those stored; every other one must be a conflict.
func raceAppends(t *testing.T, stores []group.Store, links []*group.Link) []int {
	t.Helper()
	var (
		mu   sync.Mutex
		wins []int
		errs []error
		wg   sync.WaitGroup
	)
	start := make(chan struct{})
	for i, l := range links {
		wg.Go(func() {
			<-start
			err := stores[i%len(stores)].Append(context.Background(), l)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins = append(wins, i)
			case !errors.Is(err, group.ErrConflict):
				errs = append(errs, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return wins
}
