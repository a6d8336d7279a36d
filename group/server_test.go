package group_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	gtest "github.com/kez-lat/kez-chat/group/storetest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore/groupstore"
	sigtest "github.com/kez-lat/kez-chat/sigchain/storetest"
)

// fixture is a sig-server's group API over a real SQLite file, with the
// chains of alice (owner of team@kez.lat), bob (a member) and mallory
// (a stranger of another domain) stored, and a clock tests may move.
type fixture struct {
	t       *testing.T
	st      *sqlitestore.Store
	groups  *groupstore.Store
	srv     *gtest.Server
	clock   *clock
	alice   *sigtest.Person
	bob     *sigtest.Person
	mallory *sigtest.Person
	team    *gtest.Builder
}

// clock is a settable clock, safe for concurrent use.
type clock struct{ unix atomic.Int64 }

func (c *clock) Now() time.Time          { return time.Unix(c.unix.Load(), 0) }
func (c *clock) Advance(d time.Duration) { c.unix.Add(int64(d / time.Second)) }

// newFixture starts the API with limits (their clock is the fixture's)
// and opts, and makes team@kez.lat: alice's create, then bob added.
func newFixture(t *testing.T, limits group.Limits, opts ...group.HandlerOption) *fixture {
	t.Helper()
	st, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{t: t, st: st, groups: groupstore.New(st), clock: &clock{}}
	f.clock.unix.Store(time.Now().Unix())
	now := f.clock.Now()
	f.alice = sigtest.NewPerson(t, gtest.Identity(t, 1), "alice@kez.lat", now)
	f.bob = sigtest.NewPerson(t, gtest.Identity(t, 2), "bob@kez.lat", now)
	f.mallory = sigtest.NewPerson(t, gtest.Identity(t, 3), "mallory@evil.example", now)
	for _, p := range []*sigtest.Person{f.alice, f.bob, f.mallory} {
		gtest.StoreChain(t, st, p.Links...)
	}
	limits.Now = f.clock.Now
	f.srv = gtest.StartServer(t, gtest.Stores{Groups: f.groups, Chains: st}, append([]group.HandlerOption{group.WithLimits(limits)}, opts...)...)
	f.team = gtest.NewGroup(t, f.alice.ID, "team@kez.lat", "alice@kez.lat", now)
	f.team.Next(t, f.alice.ID, group.TypeAdd, group.AddBody([]group.NewMember{{Key: f.bob.ID.PublicKey(), Handle: "bob@kez.lat", Role: group.RoleMember}}))
	for _, l := range f.team.Links {
		f.mustAppend(l)
	}
	return f
}

func (f *fixture) mustAppend(l *group.Link) {
	f.t.Helper()
	if err := f.srv.Client.Append(context.Background(), l); err != nil {
		f.t.Fatalf("append %s %d: %v", l.Type(), l.Seqno(), err)
	}
}

// answer is what the API answered a raw request.
type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func (a answer) reason() string { s, _ := a.body["reason"].(string); return s }

// post sends body as a raw POST /v1/groups with contentType.
func (f *fixture) post(body []byte, contentType string) answer {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+group.GroupsPath, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return f.do(req)
}

// get sends a raw GET of path (after the group route).
func (f *fixture) get(path string) answer {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL+group.GroupsPath+"/"+path, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.do(req)
}

func (f *fixture) do(req *http.Request) answer {
	f.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode, header: resp.Header}
	if err := json.NewDecoder(resp.Body).Decode(&a.body); err != nil {
		f.t.Fatalf("%s %s: the answer is not JSON: %v", req.Method, req.URL.Path, err)
	}
	return a
}

// wantRefused posts l and wants status and reason, the head unmoved.
func (f *fixture) wantRefused(what string, l *group.Link, status int, reason string) {
	f.t.Helper()
	before, _ := f.groups.Head(context.Background(), l.Group())
	a := f.post(l.Bytes(), "application/octet-stream")
	if a.status != status || a.reason() != reason {
		f.t.Fatalf("%s: %d %v, want %d reason %s", what, a.status, a.body, status, reason)
	}
	after, _ := f.groups.Head(context.Background(), l.Group())
	if after != before {
		f.t.Fatalf("%s: the head moved from %d to %d", what, before.Seqno, after.Seqno)
	}
}

// TestStrangerAppends: mallory, with a chain here but no member, signs
// links of alice's group for himself: each is refused and stores
// nothing.
func TestStrangerAppends(t *testing.T) {
	f := newFixture(t, group.NoLimits())
	m := f.mallory.ID
	for _, c := range []struct {
		what string
		typ  string
		body []byte
	}{
		{"a title", group.TypeTitle, group.TitleBody("owned")},
		{"adding himself", group.TypeAdd, group.AddBody([]group.NewMember{{Key: m.PublicKey(), Handle: "mallory@evil.example", Role: group.RoleAdmin}})},
		{"removing alice", group.TypeRemove, group.RemoveBody(f.alice.ID.PublicKey())},
		{"making himself owner", group.TypeRole, group.RoleBody(m.PublicKey(), group.RoleOwner)},
	} {
		l := f.team.Forge(t, m, m.PublicKey(), c.typ, c.body)
		a := f.post(l.Bytes(), "application/octet-stream")
		if a.status != http.StatusUnprocessableEntity || (a.reason() != group.ReasonNotMember && a.reason() != group.ReasonNotAllowed) {
			t.Fatalf("%s: %d %v", c.what, a.status, a.body)
		}
		err := f.srv.Client.Append(context.Background(), l)
		var re *group.RefusedError
		if !errors.As(err, &re) || !errors.Is(err, group.ErrInvalid) {
			t.Fatalf("%s through the client: %v", c.what, err)
		}
	}
	// Signing for alice with his own key is no better.
	f.wantRefused("mallory signs as alice", f.team.Forge(t, m, f.alice.ID.PublicKey(), group.TypeTitle, group.TitleBody("x")), http.StatusUnprocessableEntity, group.ReasonDeviceNotAllowed)
	if h, _ := f.groups.Head(context.Background(), "team@kez.lat"); h.Seqno != 2 {
		t.Fatalf("head %d after the stranger's tries", h.Seqno)
	}
}

// TestNonAdminLink: bob, a plain member, may leave but not add, remove,
// retitle or promote.
func TestNonAdminLink(t *testing.T) {
	f := newFixture(t, group.NoLimits())
	b := f.bob.ID
	carol := gtest.Identity(t, 4)
	f.wantRefused("bob adds carol", f.team.Forge(t, b, b.PublicKey(), group.TypeAdd, group.AddBody([]group.NewMember{{Key: carol.PublicKey(), Handle: "carol@kez.lat", Role: group.RoleMember}})), http.StatusUnprocessableEntity, group.ReasonNotAllowed)
	f.wantRefused("bob retitles", f.team.Forge(t, b, b.PublicKey(), group.TypeTitle, group.TitleBody("bob's")), http.StatusUnprocessableEntity, group.ReasonNotAllowed)
	f.wantRefused("bob promotes himself", f.team.Forge(t, b, b.PublicKey(), group.TypeRole, group.RoleBody(b.PublicKey(), group.RoleAdmin)), http.StatusUnprocessableEntity, group.ReasonNotAllowed)
	f.wantRefused("bob removes alice", f.team.Forge(t, b, b.PublicKey(), group.TypeRemove, group.RemoveBody(f.alice.ID.PublicKey())), http.StatusUnprocessableEntity, group.ReasonNotAllowed)
	err := f.srv.Client.Append(context.Background(), f.team.Forge(t, b, b.PublicKey(), group.TypeTitle, group.TitleBody("bob's")))
	if !errors.Is(err, group.ErrNotAllowed) {
		t.Fatalf("through the client: %v", err)
	}
	f.mustAppend(f.team.Next(t, b, group.TypeRemove, group.RemoveBody(b.PublicKey()))) // leaving
}

// TestNameSquat: a group's name must be of its creator's domain, as the
// creator's chain here says, and (with WithDomains) of the server's.
func TestNameSquat(t *testing.T) {
	f := newFixture(t, group.NoLimits(), group.WithDomains("kez.lat"))
	now := f.clock.Now()
	// mallory's chain names mallory@evil.example; his create link claims
	// a handle of kez.lat to pass the format's own domain rule.
	f.wantRefused("a kez.lat group by a handle of evil.example", gtest.NewGroup(t, f.mallory.ID, "squat@kez.lat", "mallory@kez.lat", now).Links[0], http.StatusUnprocessableEntity, group.ReasonNotLocal)
	// A group of his own domain is not kept here.
	f.wantRefused("an evil.example group", gtest.NewGroup(t, f.mallory.ID, "team@evil.example", "mallory@evil.example", now).Links[0], http.StatusUnprocessableEntity, group.ReasonNotLocal)
	// bob's chain says bob@kez.lat; a create link naming alice's handle.
	f.wantRefused("a create naming another's handle", gtest.NewGroup(t, f.bob.ID, "bobs@kez.lat", "alice@kez.lat", now).Links[0], http.StatusUnprocessableEntity, group.ReasonNotLocal)
	// dave has no chain here at all.
	f.wantRefused("a creator without a chain here", gtest.NewGroup(t, gtest.Identity(t, 5), "daves@kez.lat", "dave@kez.lat", now).Links[0], http.StatusUnprocessableEntity, group.ReasonNotLocal)
	// Without WithDomains, the creator's handle decides: mallory may
	// keep an evil.example group on a server that stores his chain.
	g := newFixture(t, group.NoLimits())
	g.mustAppend(gtest.NewGroup(t, g.mallory.ID, "team@evil.example", "mallory@evil.example", now).Links[0])
	g.wantRefused("a kez.lat group by a handle of evil.example", gtest.NewGroup(t, g.mallory.ID, "squat@kez.lat", "mallory@kez.lat", now).Links[0], http.StatusUnprocessableEntity, group.ReasonNotLocal)
	if n := f.srv.Handler.Stats().Refused[group.ReasonNotLocal]; n != 4 {
		t.Fatalf("%d not_local refusals counted", n)
	}
}

// TestCreateFlood: a person creates at most GroupsPerKey groups, also
// when the creates race each other.
func TestCreateFlood(t *testing.T) {
	limits := group.NoLimits()
	limits.GroupsPerKey = 4
	f := newFixture(t, limits) // team@kez.lat is alice's first
	now := f.clock.Now()
	const n = 12
	var (
		wg      sync.WaitGroup
		stored  atomic.Int32
		refused atomic.Int32
		errs    = make(chan error, n)
	)
	for i := range n {
		l := gtest.NewGroup(t, f.alice.ID, fmt.Sprintf("flood%d@kez.lat", i), "alice@kez.lat", now).Links[0]
		wg.Go(func() {
			switch err := f.srv.Client.Append(context.Background(), l); {
			case err == nil:
				stored.Add(1)
			case errors.Is(err, group.ErrTooManyGroups):
				refused.Add(1)
			default:
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if stored.Load() != 3 || refused.Load() != n-3 {
		t.Fatalf("%d stored, %d refused; want 3 and %d", stored.Load(), refused.Load(), n-3)
	}
	if c, err := f.groups.CreatedBy(context.Background(), f.alice.ID.PublicKey()); err != nil || c != 4 {
		t.Fatalf("alice created %d, %v", c, err)
	}
	a := f.post(gtest.NewGroup(t, f.alice.ID, "more@kez.lat", "alice@kez.lat", now).Links[0].Bytes(), "")
	if a.status != http.StatusTooManyRequests || a.reason() != group.ReasonGroupsPerKey {
		t.Fatalf("%d %v", a.status, a.body)
	}
	// Others are not held to alice's count.
	f.mustAppend(gtest.NewGroup(t, f.bob.ID, "bobs@kez.lat", "bob@kez.lat", now).Links[0])
}

// TestAppendFloodPerIP: one address sends at most AppendsPerIP appends,
// valid or not, and GETs are held to ReadsPerIP; the buckets refill
// with time.
func TestAppendFloodPerIP(t *testing.T) {
	limits := group.NoLimits()
	limits.AppendsPerIP = ratelimit.Limit{N: 4, Per: time.Hour}
	limits.ReadsPerIP = ratelimit.Limit{N: 2, Per: time.Minute}
	f := newFixture(t, limits) // two appends spent
	if a := f.post([]byte("junk"), ""); a.status != http.StatusBadRequest {
		t.Fatalf("junk: %d", a.status)
	}
	f.mustAppend(f.team.Next(t, f.alice.ID, group.TypeTitle, group.TitleBody("one")))
	next := f.team.Make(t, f.alice.ID, f.alice.ID.PublicKey(), group.TypeTitle, group.TitleBody("two"))
	a := f.post(next.Bytes(), "")
	if a.status != http.StatusTooManyRequests || a.header.Get("Retry-After") == "" {
		t.Fatalf("the fifth append: %d %v", a.status, a.body)
	}
	var rl *ratelimit.Error
	if err := f.srv.Client.Append(context.Background(), next); !errors.Is(err, group.ErrRateLimited) || !errors.As(err, &rl) || rl.RetryAfter <= 0 {
		t.Fatalf("through the client: %v", err)
	}
	for i := range 3 {
		a := f.get("team@kez.lat")
		if want := []int{200, 200, 429}[i]; a.status != want {
			t.Fatalf("read %d: %d", i, a.status)
		}
	}
	f.clock.Advance(time.Hour)
	f.team.Now = f.clock.Now()
	next = f.team.Make(t, f.alice.ID, f.alice.ID.PublicKey(), group.TypeTitle, group.TitleBody("two"))
	f.mustAppend(next)
	if _, _, err := f.srv.Client.Fetch(context.Background(), "team@kez.lat", 0); err != nil {
		t.Fatal(err)
	}
}

// TestOversizedAndMalformed: a body over MaxLinkSize is refused before
// it is parsed; one that is no link, or not sent as bytes, is refused.
func TestOversizedAndMalformed(t *testing.T) {
	f := newFixture(t, group.NoLimits())
	if a := f.post(bytes.Repeat([]byte("a"), group.MaxLinkSize+1), "application/octet-stream"); a.status != http.StatusRequestEntityTooLarge || a.reason() != group.ReasonMalformed {
		t.Fatalf("64 KiB + 1: %d %v", a.status, a.body)
	}
	if a := f.post(bytes.Repeat([]byte("a"), group.MaxLinkSize), "application/octet-stream"); a.status != http.StatusBadRequest || a.reason() != group.ReasonMalformed {
		t.Fatalf("64 KiB of junk: %d %v", a.status, a.body)
	}
	l := f.team.Make(t, f.alice.ID, f.alice.ID.PublicKey(), group.TypeTitle, group.TitleBody("x"))
	if a := f.post(l.Bytes(), "application/x-www-form-urlencoded"); a.status != http.StatusUnsupportedMediaType {
		t.Fatalf("a form post: %d %v", a.status, a.body)
	}
	for _, junk := range []string{"", "{}", "null", string(l.Bytes()) + " ", strings.Replace(string(l.Bytes()), `"title":"x"`, `"title":"y"`, 1)} {
		if a := f.post([]byte(junk), "application/octet-stream"); a.status != http.StatusBadRequest || a.reason() != group.ReasonMalformed {
			t.Fatalf("%.40q: %d %v", junk, a.status, a.body)
		}
	}
	if h, _ := f.groups.Head(context.Background(), "team@kez.lat"); h.Seqno != 2 {
		t.Fatalf("head %d", h.Seqno)
	}
}

// TestReplay: a stored link sent again is answered 200 and stores
// nothing; another link at a stored seqno is a conflict.
func TestReplay(t *testing.T) {
	f := newFixture(t, group.NoLimits())
	title := f.team.Next(t, f.alice.ID, group.TypeTitle, group.TitleBody("t"))
	f.mustAppend(title)
	stored := f.srv.Handler.Stats().Stored
	for _, l := range f.team.Links {
		a := f.post(l.Bytes(), "application/octet-stream")
		if a.status != http.StatusOK || a.body["head"] != l.ID().String() || a.body["seqno"] != float64(l.Seqno()) {
			t.Fatalf("replay of %d: %d %v", l.Seqno(), a.status, a.body)
		}
	}
	f.clock.Advance(time.Hour) // a stored link is answered 200 however old
	if a := f.post(f.team.Links[0].Bytes(), ""); a.status != http.StatusOK {
		t.Fatalf("an hour-old replay: %d %v", a.status, a.body)
	}
	if got := f.srv.Handler.Stats().Stored; got != stored {
		t.Fatalf("replays stored %d links", got-stored)
	}
	// Another link 2 (alice adds carol instead of bob): 409 with the head.
	other := gtest.NewGroup(t, f.alice.ID, "team@kez.lat", "alice@kez.lat", f.team.Links[0].Ctime())
	l2 := other.Add(t, f.alice.ID, gtest.Identity(t, 4))
	a := f.post(l2.Bytes(), "application/octet-stream")
	head, _ := a.body["head"].(map[string]any)
	if a.status != http.StatusConflict || a.reason() != group.ReasonConflict || head["seqno"] != float64(3) || head["id"] != title.ID().String() {
		t.Fatalf("another link 2: %d %v", a.status, a.body)
	}
	// A link of another group, replayed into this one, cannot be: the
	// name is signed. The server treats it as what it is.
	g := gtest.NewGroup(t, f.alice.ID, "other@kez.lat", "alice@kez.lat", f.clock.Now())
	f.mustAppend(g.Links[0])
	if a := f.post(g.Links[0].Bytes(), ""); a.status != http.StatusOK {
		t.Fatalf("the other group's create again: %d", a.status)
	}
}

// TestForkedAppend: two links at one seqno; the first is stored, the
// second gets 409 with the head, which the client reports as a
// *ConflictError to rebuild on.
func TestForkedAppend(t *testing.T) {
	f := newFixture(t, group.NoLimits())
	x := f.team.Make(t, f.alice.ID, f.alice.ID.PublicKey(), group.TypeTitle, group.TitleBody("x"))
	y := f.team.Make(t, f.alice.ID, f.alice.ID.PublicKey(), group.TypeTitle, group.TitleBody("y"))
	f.mustAppend(x)
	var ce *group.ConflictError
	err := f.srv.Client.Append(context.Background(), y)
	if !errors.As(err, &ce) || !errors.Is(err, group.ErrConflict) || ce.Head.Seqno != 3 || !ce.Head.ID.Equals(x.ID()) {
		t.Fatalf("the forked append: %v", err)
	}
	// A link two ahead of the head is a conflict too.
	f.team.Next(t, f.alice.ID, group.TypeTitle, group.TitleBody("y"))
	z := f.team.Next(t, f.alice.ID, group.TypeTitle, group.TitleBody("z"))
	if err := f.srv.Client.Append(context.Background(), z); !errors.As(err, &ce) || ce.Head.Seqno != 3 {
		t.Fatalf("a link past head+1: %v", err)
	}
}

// TestPaging: answers carry at most the page size; the client reads all
// pages; since at or beyond the head gives no links and the head; bad
// names and seqnos are refused; an unknown group is 404.
func TestPaging(t *testing.T) {
	f := newFixture(t, group.NoLimits(), group.WithMaxLinksPerResponse(3))
	for i := range 8 {
		f.mustAppend(f.team.Next(t, f.alice.ID, group.TypeTitle, group.TitleBody(fmt.Sprint(i))))
	}
	a := f.get("team@kez.lat?since=0")
	links, _ := a.body["links"].([]any)
	head, _ := a.body["head"].(map[string]any)
	if a.status != 200 || len(links) != 3 || head["seqno"] != float64(10) || head["id"] != f.team.Links[9].ID().String() {
		t.Fatalf("first page: %d %v", a.status, a.body)
	}
	got, hd, err := f.srv.Client.Fetch(context.Background(), "team@kez.lat", 0)
	if err != nil || len(got) != 10 || hd.Seqno != 10 {
		t.Fatalf("fetch: %d links, head %d, %v", len(got), hd.Seqno, err)
	}
	for i, b := range got {
		if !bytes.Equal(b, f.team.Links[i].Bytes()) {
			t.Fatalf("link %d differs", i+1)
		}
	}
	if got, _, err := f.srv.Client.Fetch(context.Background(), "team@kez.lat", 7); err != nil || len(got) != 3 {
		t.Fatalf("fetch since 7: %d, %v", len(got), err)
	}
	for _, since := range []string{"10", "11", "4611686018427387904", "9223372036854775807"} {
		a := f.get("team@kez.lat?since=" + since)
		links, _ := a.body["links"].([]any)
		head, _ := a.body["head"].(map[string]any)
		if a.status != 200 || len(links) != 0 || head["seqno"] != float64(10) {
			t.Fatalf("since %s: %d %v", since, a.status, a.body)
		}
	}
	for _, bad := range []string{"team@kez.lat?since=-1", "team@kez.lat?since=x", "team@kez.lat?since=18446744073709551615", "Team@kez.lat", "team", "te%2Fam@kez.lat", "@team@kez.lat"} {
		if a := f.get(bad); a.status != http.StatusBadRequest {
			t.Fatalf("%s: %d %v", bad, a.status, a.body)
		}
	}
	if a := f.get("nobody@kez.lat"); a.status != http.StatusNotFound || a.reason() != group.ReasonNoGroup {
		t.Fatalf("an unknown group: %d %v", a.status, a.body)
	}
	if _, _, err := f.srv.Client.Fetch(context.Background(), "nobody@kez.lat", 0); !errors.Is(err, group.ErrNotFound) {
		t.Fatalf("fetch of an unknown group: %v", err)
	}
}

// TestUnknownGroup: a link after the create of a group the server does
// not have is 404.
func TestUnknownGroup(t *testing.T) {
	f := newFixture(t, group.NoLimits())
	b := gtest.NewGroup(t, f.alice.ID, "elsewhere@kez.lat", "alice@kez.lat", f.clock.Now())
	l := b.Next(t, f.alice.ID, group.TypeTitle, group.TitleBody("t"))
	f.wantRefused("link 2 of an unknown group", l, http.StatusNotFound, group.ReasonNoGroup)
	if err := f.srv.Client.Append(context.Background(), l); !errors.Is(err, group.ErrNotFound) {
		t.Fatalf("through the client: %v", err)
	}
}

// TestClockWindow: a new link's ctime is within MaxClockSkew of the
// server's clock.
func TestClockWindow(t *testing.T) {
	f := newFixture(t, group.NoLimits())
	for _, d := range []time.Duration{-group.MaxClockSkew - time.Second, group.MaxClockSkew + time.Second} {
		b := gtest.NewGroup(t, f.alice.ID, "clock@kez.lat", "alice@kez.lat", f.clock.Now().Add(d))
		f.wantRefused(fmt.Sprintf("a create at %v", d), b.Links[0], http.StatusUnprocessableEntity, group.ReasonClock)
	}
	f.mustAppend(gtest.NewGroup(t, f.alice.ID, "clock@kez.lat", "alice@kez.lat", f.clock.Now().Add(group.MaxClockSkew)).Links[0])
}

// TestDeviceLinks: a link signed by a device of by is stored while the
// device is current on by's chain here; a revoked device (even with a
// ctime before its revocation), a device of another person, and a
// device of a person whose chain is not here are refused.
func TestDeviceLinks(t *testing.T) {
	f := newFixture(t, group.NoLimits())
	now := f.clock.Now()
	ctx := context.Background()
	phone, bobPhone := gtest.Identity(t, 20), gtest.Identity(t, 21)
	gtest.StoreChain(t, f.st, f.alice.AddDevice(t, phone, now), f.bob.AddDevice(t, bobPhone, now))
	alice := f.alice.ID.PublicKey()

	f.mustAppend(f.team.NextAs(t, phone, alice, group.TypeTitle, group.TitleBody("from the phone")))
	f.wantRefused("bob's phone signs for alice", f.team.Make(t, bobPhone, alice, group.TypeTitle, group.TitleBody("x")), http.StatusUnprocessableEntity, group.ReasonDeviceNotAllowed)
	f.wantRefused("alice's phone signs for bob", f.team.Make(t, phone, f.bob.ID.PublicKey(), group.TypeRemove, group.RemoveBody(f.bob.ID.PublicKey())), http.StatusUnprocessableEntity, group.ReasonDeviceNotAllowed)

	// eve is a member whose chain lives on another sig-server.
	eve := gtest.Identity(t, 22)
	f.mustAppend(f.team.Next(t, f.alice.ID, group.TypeAdd, group.AddBody([]group.NewMember{{Key: eve.PublicKey(), Handle: "eve@kez.lat", Role: group.RoleMember}})))
	f.wantRefused("a device of a person without a chain here", f.team.Make(t, gtest.Identity(t, 23), eve.PublicKey(), group.TypeRemove, group.RemoveBody(eve.PublicKey())), http.StatusUnprocessableEntity, group.ReasonDeviceUnknown)

	backdated := f.team.Make(t, phone, alice, group.TypeTitle, group.TitleBody("backdated"))
	f.clock.Advance(2 * time.Minute)
	gtest.StoreChain(t, f.st, f.alice.RevokeDevice(t, phone.PublicKey(), f.clock.Now()))
	f.wantRefused("the revoked phone, ctime before the revocation", backdated, http.StatusUnprocessableEntity, group.ReasonDeviceNotAllowed)
	f.team.Now = f.clock.Now()
	err := f.srv.Client.Append(ctx, f.team.Make(t, phone, alice, group.TypeTitle, group.TitleBody("after")))
	if !errors.Is(err, group.ErrDeviceNotAllowed) || !errors.Is(err, group.ErrInvalid) {
		t.Fatalf("the revoked phone through the client: %v", err)
	}
	// The link the phone signed before is still part of the chain: a
	// fresh handler (a restart) verifies the stored chain.
	srv := gtest.StartServer(t, gtest.Stores{Groups: f.groups, Chains: f.st}, group.WithLimits(group.NoLimits()))
	f.team.Now = f.clock.Now()
	l := f.team.Next(t, f.alice.ID, group.TypeTitle, group.TitleBody("after a restart"))
	if err := srv.Client.Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	st, err := srv.Client.Load(ctx, "team@kez.lat", nil, group.ChainDeviceChecker(func(ctx context.Context, p kez.PublicKey) (*sigchain.State, error) {
		if p != alice {
			return nil, fmt.Errorf("no chain of %s", p)
		}
		return f.alice.State, nil
	}))
	if err != nil || st.Seqno() != l.Seqno() {
		t.Fatalf("a member's load: %v", err)
	}
}
