package files_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// The tests of docs/spec/manifest.md §7: private shares to a group, with
// real libp2p hosts on loopback, a real stack and the group's chain on
// its real sig-server.

// groupReads counts the reads of groups' chains (n) and the device-index
// lookups (devices) at the sig-server.
type groupReads struct{ n, devices atomic.Int64 }

func (g *groupReads) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v1/groups/") {
			g.n.Add(1)
		}
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, sigchain.DevicesPath) {
			g.devices.Add(1)
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

// fetchOffer fetches the file of a group offer from its owner into a
// fresh folder and checks it is src, byte for byte.
func fetchOffer(t testing.TB, fetcher *peer, owner string, offer format.GroupFile, src string) {
	t.Helper()
	got, err := fetcher.Fetch(devCtx(t), owner, offer.Name, filepath.Join(t.TempDir(), offer.Name), files.WithFileKey(offer))
	if err != nil {
		t.Fatalf("fetching %q from %s with the offer: %v", offer.Name, owner, err)
	}
	if got.Name != offer.Name || got.Size != offer.Size || !got.Private {
		t.Fatalf("fetched %+v", got.Entry)
	}
	sameFile(t, src, got.Path)
}

// A share to a group, the whole story (the offer handed over as the
// group would carry it; TestGroupFile40Members sends it through the
// group): the manifest entry names the group and holds no key; a member
// at share time fetches with the offer, from the primary key and from a
// linked device (found through the sig-server's device index); without
// the offer the entry is nowhere to be seen; a member added later,
// holding the offer all the same, is refused by the owner's node; a
// member removed later (by a link the owner's other device signed) is
// refused once the node's copy of the chain is a minute old; removed and
// added again, still refused (a new membership); a stranger is refused.
// A flood of requests reads the group's chain at most once a minute.
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
	bobPhone := openInstall(t, st, bob.user, st.AddDevice(t, bob.user, "phone"), false)

	g := newTestGroup(t, st, au, "team")
	g.add(bob.user, dave.user)

	secret := writeFile(t, "plan.txt", testBytes(70<<10))
	sf, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "team", Pin: g.st.Pin()}))
	if err != nil {
		t.Fatal(err)
	}
	if !sf.Private || sf.Group != "team@kez.test" || sf.GroupID != g.st.ID() || len(sf.Recipients) != 0 || sf.Offer == nil {
		t.Fatalf("shared: %+v", sf)
	}
	offer := *sf.Offer
	if offer.Owner != au.Key || offer.Group != g.st.ID() || !offer.CID.Equals(sf.CID) || offer.Name != "plan.txt" || offer.Size != 70<<10 || offer.Key == (format.FileKey{}) {
		t.Fatalf("the offer: %+v", offer)
	}
	if list, err := alice.Shared(ctx); err != nil || len(list) != 1 || list[0].Group != "team@kez.test" || list[0].Offer == nil || *list[0].Offer != offer {
		t.Fatalf("the share index: %+v, %v", list, err)
	}
	// The manifest: version 2, the group's ID, no wraps, no name.
	body := manifestOf(t, st, au)
	gid := g.st.ID()
	if !bytes.Contains(body, []byte(`"group":"`+hex.EncodeToString(gid[:])+`","wraps":[]`)) || !bytes.HasSuffix(body, []byte(`"version":2}`)) || bytes.Contains(body, []byte("plan.txt")) {
		t.Fatalf("alice's manifest: %s", body)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	fetchOffer(t, bob, alice.handle(), offer, secret)
	fetchOffer(t, bobPhone, alice.handle(), offer, secret)
	fetchOffer(t, dave, alice.handle(), offer, secret)
	// Without the offer the entry is nowhere to be seen.
	if list, err := bob.Browse(ctx, alice.handle()); err != nil || len(list) != 0 {
		t.Fatalf("bob browses %+v, %v", list, err)
	}
	if _, err := bob.Fetch(ctx, alice.handle(), sf.CID.String(), filepath.Join(t.TempDir(), "b")); !errors.Is(err, files.ErrForbidden) || !errors.Is(err, files.ErrSharedWithGroup) {
		t.Fatalf("bob fetches by CID without the offer: %v", err)
	}
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
	refusedWithOffer := func(who *peer, what string) {
		t.Helper()
		if _, err := who.Fetch(ctx, alice.handle(), offer.Name, filepath.Join(t.TempDir(), "o"), files.WithFileKey(offer)); !errors.Is(err, files.ErrForbidden) {
			t.Fatalf("%s fetches with the offer: %v, want ErrForbidden", what, err)
		}
	}

	// Carol, added after the share, never read the offer (the group's
	// key of that epoch was not hers); holding it all the same, and
	// asking for the public CID, she is refused.
	g.add(carol.user)
	ahead.Store(int64(61 * time.Second)) // the node reads the chain again
	refusedWithOffer(carol, "a member added after the share")
	refused(carol, "a member added after the share")
	refusedWithOffer(erin, "a stranger")
	refused(erin, "a stranger")

	// Dave is removed by a link alice's laptop signs. The node's copy of
	// the chain is under a minute old: it still serves him; a minute
	// later it reads the chain again and refuses him. Bob still fetches.
	g.link(laptop, group.TypeRemove, group.RemoveBody(dave.user.Key), group.ChainDeviceChecker(func(ctx context.Context, p kez.PublicKey) (*sigchain.State, error) {
		return (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(ctx, p, nil)
	}))
	fetchOffer(t, dave, alice.handle(), offer, secret)
	ahead.Store(int64(122 * time.Second))
	refusedWithOffer(dave, "dave, removed, a minute later")
	fetchOffer(t, bob, alice.handle(), offer, secret)
	fetchOffer(t, bobPhone, alice.handle(), offer, secret)

	// A flood from dave, carol and erin reads the chain at most once a
	// minute: not at all within this minute, once in the next; and asks
	// the device index at most once per key a minute.
	before, devBefore := reads.n.Load(), reads.devices.Load()
	for range 10 {
		refused(dave, "a removed member")
		refused(carol, "a later member")
		refused(erin, "a stranger")
	}
	if n := reads.n.Load() - before; n != 0 {
		t.Fatalf("30 refused requests within the minute read the group's chain %d times", n)
	}
	if n := reads.devices.Load() - devBefore; n < 1 || n > 3 {
		t.Fatalf("30 refused requests from 3 keys within the minute asked the device index %d times", n)
	}
	ahead.Store(int64(183 * time.Second))
	for range 10 {
		refused(dave, "a removed member")
	}
	if n := reads.n.Load() - before; n != 1 {
		t.Fatalf("10 requests in the next minute read the group's chain %d times, want 1", n)
	}

	// Dave added again: a new membership, not the one the file was
	// shared with.
	g.add(dave.user)
	ahead.Store(int64(244 * time.Second))
	refused(dave, "a member removed and added again")
	fetchOffer(t, bob, alice.handle(), offer, secret)
}

// Offers the owner's manifest does not confirm are refused before anything
// is fetched (files.ErrOfferMismatch); a wrong key is caught when the blob
// does not decrypt; an unshared file is no longer there.
func TestGroupShareForgedOffers(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	alice, bob, carol := newPeer(t, st, "alice"), newPeer(t, st, "bob"), newPeer(t, st, "carol")
	g := newTestGroup(t, st, alice.user, "team")
	g.add(bob.user, carol.user)
	other := newTestGroup(t, st, alice.user, "other")
	other.add(bob.user)
	secret := writeFile(t, "plan.txt", testBytes(3000))
	sf, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "team"}))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := alice.Share(ctx, writeFile(t, "open.txt", testBytes(100)))
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	good := *sf.Offer
	forge := func(change func(f *format.GroupFile)) format.GroupFile {
		f := good
		change(&f)
		return f
	}
	for _, tc := range []struct {
		what  string
		owner string
		offer format.GroupFile
	}{
		{"carol's offer of alice's file (another owner)", alice.handle(), forge(func(f *format.GroupFile) { f.Owner = carol.user.Key })},
		{"alice's offer fetched from carol", carol.handle(), good},
		{"the offer in another group", alice.handle(), forge(func(f *format.GroupFile) { f.Group = other.st.ID() })},
		{"another size", alice.handle(), forge(func(f *format.GroupFile) { f.Size++ })},
		{"a public file's CID", alice.handle(), forge(func(f *format.GroupFile) { f.CID = pub.CID })},
	} {
		_, err := bob.Fetch(ctx, tc.owner, tc.offer.Name, filepath.Join(t.TempDir(), "x"), files.WithFileKey(tc.offer))
		if !errors.Is(err, files.ErrOfferMismatch) {
			t.Errorf("%s: %v, want ErrOfferMismatch", tc.what, err)
		}
	}
	if _, err := bob.Fetch(ctx, alice.handle(), "other.txt", filepath.Join(t.TempDir(), "x"), files.WithFileKey(good)); !errors.Is(err, files.ErrOfferMismatch) {
		t.Errorf("a name that is not the offer's: %v", err)
	}
	// The right entry, a wrong key: the first segment does not decrypt;
	// nothing is left behind, no plaintext and no partial file.
	dst := filepath.Join(t.TempDir(), "plan.txt")
	wrong := forge(func(f *format.GroupFile) { f.Key[0] ^= 1 })
	if _, err := bob.Fetch(ctx, alice.handle(), good.CID.String(), dst, files.WithFileKey(wrong)); !errors.Is(err, format.ErrDecrypt) {
		t.Fatalf("a wrong key: %v, want format.ErrDecrypt", err)
	}
	mustNotExist(t, dst)
	mustNotExist(t, dst+files.PartialSuffix)
	mustNotExist(t, dst+files.StateSuffix)
	// Shared again under the name: the new share replaces the group
	// entry, and the old offer finds nothing.
	sf2, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "team"}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Fetch(ctx, alice.handle(), good.Name, filepath.Join(t.TempDir(), "y"), files.WithFileKey(good)); !errors.Is(err, files.ErrNotShared) {
		t.Fatalf("the replaced share's offer: %v, want ErrNotShared", err)
	}
	fetchOffer(t, bob, alice.handle(), *sf2.Offer, secret)
	// Unshared by name (the manifest does not name it): gone.
	if dropped, err := alice.Unshare(ctx, "plan.txt"); err != nil || len(dropped) != 1 || !dropped[0].CID.Equals(sf2.CID) {
		t.Fatalf("unshare: %+v, %v", dropped, err)
	}
	if m, err := format.DecodeManifest(manifestOf(t, st, alice.user)); err != nil || len(m.Sealed) != 0 {
		t.Fatalf("alice's manifest after the unshare: %+v, %v", m, err)
	}
	if _, err := bob.Fetch(ctx, alice.handle(), "plan.txt", filepath.Join(t.TempDir(), "z"), files.WithFileKey(*sf2.Offer)); !errors.Is(err, files.ErrNotShared) {
		t.Fatalf("an unshared file's offer: %v, want ErrNotShared", err)
	}
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

// lyingDeviceIndex answers every device-index lookup with one person's
// key: a sig-server that lies about whose device a key is.
type lyingDeviceIndex struct {
	person atomic.Pointer[kez.PublicKey]
	asked  atomic.Int64
}

func (l *lyingDeviceIndex) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := l.person.Load(); p != nil && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, sigchain.DevicesPath) {
			l.asked.Add(1)
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"person":%q,"revoked":false}`, p.String())
			return
		}
		h.ServeHTTP(w, r)
	})
}

// The device index only says whose chain to read: a sig-server that
// names bob as the person of every key (erin's, a stranger's, among
// them) does not get erin served, since bob's chain does not list her
// key; bob's real linked device is still served.
func TestGroupShareDeviceIndexLies(t *testing.T) {
	var lie lyingDeviceIndex
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: lie.Wrap})
	ctx := devCtx(t)
	alice, bob, erin := newPeer(t, st, "alice"), newPeer(t, st, "bob"), newPeer(t, st, "erin")
	bobPhone := openInstall(t, st, bob.user, st.AddDevice(t, bob.user, "phone"), false)
	g := newTestGroup(t, st, alice.user, "team")
	g.add(bob.user)
	secret := writeFile(t, "plan.txt", testBytes(5000))
	sf, err := alice.Share(ctx, secret, files.ToGroup(files.Group{Name: "team"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	lie.person.Store(&bob.user.Key)
	if _, err := erin.Fetch(ctx, alice.handle(), sf.Offer.Name, filepath.Join(t.TempDir(), "e"), files.WithFileKey(*sf.Offer)); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("erin, whom the device index calls bob: %v, want ErrForbidden", err)
	}
	if lie.asked.Load() == 0 {
		t.Fatal("the device index was not asked about erin")
	}
	fetchOffer(t, bobPhone, alice.handle(), *sf.Offer, secret)
}
