package files_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// The tests of docs/spec/manifest.md §7: private shares to a group, with
// real libp2p hosts on loopback, a real stack and the group's chain on
// its real sig-server.

// groupReads counts the reads of groups' chains at the sig-server.
type groupReads struct{ n atomic.Int64 }

func (g *groupReads) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/groups/") {
			g.n.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

// testGroup is a group whose chain a test appends to at the stack's
// sig-server, as its owner (signing with signer: the owner's key or one
// of their devices).
type testGroup struct {
	t     testing.TB
	gc    *group.Client
	st    *group.State
	owner *stacktest.User
}

func newTestGroup(t testing.TB, st *stacktest.Stack, owner *stacktest.User, name string) *testGroup {
	t.Helper()
	g := &testGroup{t: t, gc: group.NewClient(st.SigServerURL, nil), owner: owner}
	l, err := group.NewCreate(owner.Identity, owner.Key, name+"@"+owner.Handle.Domain, owner.Handle.String(), "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.gc.Append(devCtx(t), l); err != nil {
		t.Fatal(err)
	}
	if g.st, err = group.Verify(devCtx(t), [][]byte{l.Bytes()}, nil); err != nil {
		t.Fatal(err)
	}
	return g
}

// link appends a link signed by signer for the owner.
func (g *testGroup) link(signer kez.Signer, typ string, body []byte, check group.DeviceChecker) {
	g.t.Helper()
	l, err := group.NewLink(signer, g.owner.Key, g.st, typ, body, time.Now())
	if err != nil {
		g.t.Fatal(err)
	}
	if err := g.gc.Append(devCtx(g.t), l); err != nil {
		g.t.Fatal(err)
	}
	if g.st, err = g.st.Extend(devCtx(g.t), [][]byte{l.Bytes()}, check); err != nil {
		g.t.Fatal(err)
	}
}

func (g *testGroup) add(us ...*stacktest.User) {
	var ms []group.NewMember
	for _, u := range us {
		ms = append(ms, group.NewMember{Key: u.Key, Handle: u.Handle.String(), Role: group.RoleMember})
	}
	g.link(g.owner.Identity, group.TypeAdd, group.AddBody(ms), nil)
}

// A share to a group, the whole story: a member at share time fetches; a
// member added later has no wrap, and the owner's node refuses the blob
// to them; a member removed later (by a link the owner's other device
// signed) keeps the wrap but is refused once the node's copy of the chain
// is a minute old; removed and added again, still refused (a new
// membership); a stranger is refused. A flood of requests reads the
// group's chain at most once a minute.
func TestGroupShare(t *testing.T) {
	var reads groupReads
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: reads.Wrap})
	ctx := devCtx(t)
	var ahead atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	au := st.NewUser(t, "alice")
	alice := openInstall(t, st, au, nil, true, func(c *client.Config) { c.Clock = clock })
	bob, carol, dave, erin := newPeer(t, st, "bob"), newPeer(t, st, "carol"), newPeer(t, st, "dave"), newPeer(t, st, "erin")
	laptop := st.AddDevice(t, au, "laptop")

	g := newTestGroup(t, st, au, "team")
	g.add(bob.user, dave.user)

	secret := writeFile(t, "plan.txt", testBytes(70<<10))
	sf, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "team", Pin: g.st.Pin()}))
	if err != nil {
		t.Fatal(err)
	}
	if !sf.Private || sf.Group != "team@kez.test" || strings.Join(sf.Recipients, ",") != "bob@kez.test,dave@kez.test" {
		t.Fatalf("shared: %+v", sf)
	}
	if list, err := alice.Shared(ctx); err != nil || len(list) != 1 || list[0].Group != "team@kez.test" {
		t.Fatalf("the share index: %+v, %v", list, err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	fetchSame(t, bob, alice.handle(), "plan.txt", secret)
	fetchSame(t, dave, alice.handle(), "plan.txt", secret)
	info, err := bob.Locate(ctx, alice.handle(), files.LocateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	refused := func(who *peer, what string) {
		t.Helper()
		node, err := who.Node()
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Fetch(ctx, info, sf.CID, filepath.Join(t.TempDir(), "x")); !errors.Is(err, files.ErrForbidden) {
			t.Fatalf("%s asked for the blob: %v, want ErrForbidden", what, err)
		}
	}

	// Carol, added after the share: no wrap, so no entry; and the blob,
	// asked for by its public CID, is refused.
	g.add(carol.user)
	if list, err := carol.Browse(ctx, alice.handle()); err != nil || len(list) != 0 {
		t.Fatalf("carol sees %+v, %v", list, err)
	}
	if _, err := carol.Fetch(ctx, alice.handle(), sf.CID.String(), filepath.Join(t.TempDir(), "c")); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("carol fetches by CID: %v", err)
	}
	refused(carol, "a member added after the share")
	refused(erin, "a stranger")

	// Dave is removed by a link alice's laptop signs. The node's copy of
	// the chain is under a minute old: it still serves him; a minute
	// later it reads the chain again and refuses him. Bob still fetches.
	g.link(laptop, group.TypeRemove, group.RemoveBody(dave.user.Key), group.ChainDeviceChecker(func(ctx context.Context, p kez.PublicKey) (*sigchain.State, error) {
		return (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(ctx, p, nil)
	}))
	fetchSame(t, dave, alice.handle(), "plan.txt", secret)
	ahead.Store(int64(61 * time.Second))
	if _, err := dave.Fetch(ctx, alice.handle(), "plan.txt", filepath.Join(t.TempDir(), "d")); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("dave, removed, a minute later: %v", err)
	}
	fetchSame(t, bob, alice.handle(), "plan.txt", secret)

	// A flood from dave, carol and erin reads the chain at most once a
	// minute: not at all within this minute, once in the next.
	before := reads.n.Load()
	for range 10 {
		refused(dave, "a removed member")
		refused(carol, "a later member")
		refused(erin, "a stranger")
	}
	if n := reads.n.Load() - before; n != 0 {
		t.Fatalf("30 refused requests within the minute read the group's chain %d times", n)
	}
	ahead.Store(int64(122 * time.Second))
	for range 10 {
		refused(dave, "a removed member")
	}
	if n := reads.n.Load() - before; n != 1 {
		t.Fatalf("10 requests in the next minute read the group's chain %d times, want 1", n)
	}

	// Dave added again: a new membership, not the one the file was
	// shared with.
	g.add(dave.user)
	ahead.Store(int64(183 * time.Second))
	refused(dave, "a member removed and added again")
	fetchSame(t, bob, alice.handle(), "plan.txt", secret)
}

// What a share to a group refuses, sharing nothing: a sharer who is no
// member, a pin the chain does not extend (another group ID: a fork; a
// longer pin: a rollback), a group and handles together.
func TestGroupShareRefusals(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	alice, bob, erin := newPeer(t, st, "alice"), newPeer(t, st, "bob"), newPeer(t, st, "erin")
	g := newTestGroup(t, st, alice.user, "team")
	g.add(bob.user)
	secret := writeFile(t, "plan.txt", testBytes(1000))

	if _, err := erin.Share(ctx, secret, files.ToGroup(files.Group{Name: "team@kez.test"})); !errors.Is(err, files.ErrNotGroupMember) || !errors.Is(err, group.ErrNotMember) {
		t.Fatalf("a stranger shares to the group: %v", err)
	}
	fork := g.st.Pin()
	fork.ID[0] ^= 1
	if _, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "team", Pin: fork})); !errors.Is(err, group.ErrFork) {
		t.Fatalf("a pin of another group ID: %v", err)
	}
	rollback := g.st.Pin()
	rollback.Seqno += 3
	if _, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "team", Pin: rollback})); !errors.Is(err, group.ErrRollback) {
		t.Fatalf("a pin ahead of the chain: %v", err)
	}
	if _, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "team"}), files.To("bob")); !errors.Is(err, files.ErrGroupAndHandles) {
		t.Fatalf("a group and a handle: %v", err)
	}
	if _, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "nosuch"})); err == nil {
		t.Fatal("a group that does not exist: shared")
	}
	for _, p := range []*peer{alice, erin} {
		if list, err := p.Shared(ctx); err != nil || len(list) != 0 {
			t.Fatalf("%s's share index after the refusals: %+v, %v", p.handle(), list, err)
		}
	}
	if m := manifestOf(t, st, alice.user); m != nil {
		t.Fatalf("alice's chain has a manifest after the refusals: %s", m)
	}
}
