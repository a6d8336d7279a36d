package files_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	lpeer "github.com/libp2p/go-libp2p/core/peer"
)

// The tests of docs/spec/manifest.md §6: a person's several devices,
// with real libp2p hosts on loopback and a real stack (NATS with the
// auth callout and gate, chat-server, sig-server).

func devCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openInstall opens the sharing of one install of u in a fresh state
// folder: a linked device (primary false: it holds only dev) or a
// recovered install (primary true: it holds u's primary key and logs in
// with dev).
func openInstall(t testing.TB, st *stacktest.Stack, u *stacktest.User, dev *kez.Identity, primary bool, opts ...func(*client.Config)) *peer {
	t.Helper()
	cc := client.Config{Device: dev, Person: u.Key, Home: filepath.Join(t.TempDir(), "kez-home")}
	if primary {
		cc.Identity = u.Identity
	}
	for _, o := range opts {
		o(&cc)
	}
	return openWith(t, st, u, cc)
}

// writeFile writes data to a fresh file called name and returns its path.
func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fetchSame fetches name from owner into a fresh folder and checks it is
// src, byte for byte.
func fetchSame(t testing.TB, fetcher *peer, owner, name, src string) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	got, err := fetcher.Fetch(devCtx(t), owner, name, dst)
	if err != nil {
		t.Fatalf("fetching %q from %s: %v", name, owner, err)
	}
	sameFile(t, src, got.Path)
}

// manifestOf returns the manifest body on u's chain.
func manifestOf(t testing.TB, st *stacktest.Stack, u *stacktest.User) []byte {
	t.Helper()
	state, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(devCtx(t), u.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return state.SharedFiles()
}

// A linked device (it holds no primary key) fetches a contact's public
// file over its own login and node; it cannot publish, and says so with
// a typed error without touching the chain; the contact's private file
// for its person does not open on it. A manifest shared from a primary
// device names no device: the bytes older readers read.
func TestLinkedDeviceFetches(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	alice := newPeer(t, st, "alice")
	bobUser := st.NewUser(t, "bob")
	bobLaptop := openInstall(t, st, bobUser, st.AddDevice(t, bobUser, "laptop"), false)
	if bobLaptop.Key() != bobUser.Key || bobLaptop.DeviceKey() == bobUser.Key {
		t.Fatalf("linked device: person %s device %s", bobLaptop.Key(), bobLaptop.DeviceKey())
	}

	src := writeFile(t, "report.pdf", testBytes(300<<10))
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	secret := writeFile(t, "secret.txt", []byte("for bob only"))
	priv, err := alice.Share(ctx, secret, files.To("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if body := manifestOf(t, st, alice.user); bytes.Contains(body, []byte(`"device"`)) {
		t.Fatalf("a manifest shared from the primary device names a device: %s", body)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}

	fetchSame(t, bobLaptop, alice.handle(), "report.pdf", src)

	// Private: the wraps are to bob's person key, which the laptop does
	// not hold: it sees public entries only.
	list, err := bobLaptop.Browse(ctx, alice.handle())
	if err != nil || len(list) != 1 || list[0].Name != "report.pdf" {
		t.Fatalf("the linked device's browse: %v %+v", err, list)
	}
	if _, err := bobLaptop.Fetch(ctx, alice.handle(), priv.CID.String(), filepath.Join(t.TempDir(), "x")); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("a private file on a linked device: %v", err)
	}

	// Publishing needs the primary key.
	before := manifestOf(t, st, bobUser)
	mine := writeFile(t, "mine.txt", []byte("mine"))
	if _, err := bobLaptop.Share(ctx, mine); !errors.Is(err, files.ErrNotPrimary) {
		t.Fatalf("share on a linked device: %v", err)
	}
	if _, err := bobLaptop.Unshare(ctx, "mine.txt"); !errors.Is(err, files.ErrNotPrimary) {
		t.Fatalf("unshare on a linked device: %v", err)
	}
	if after := manifestOf(t, st, bobUser); !bytes.Equal(before, after) {
		t.Fatalf("the refused share changed the chain: %s", after)
	}
	if shared, err := bobLaptop.Shared(ctx); err != nil || len(shared) != 0 {
		t.Fatalf("the refused share left a row: %v %+v", err, shared)
	}
}

// An install restored from the words holds the primary key and logs in
// with a device key of its own: it shares (the entries name its device),
// serves from its own node, and contacts fetch from it, public and
// private; the recipient's own restored install (its device, not its
// person key, is the PeerID) is allowed the private blob as a current
// device of the recipient's chain, a stranger is not. The primary install
// still sees and unshares what the restored one shared.
func TestRecoveredInstallShares(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	aliceUser := st.NewUser(t, "alice")
	aliceDev := st.AddDevice(t, aliceUser, "recovered")
	alice := openInstall(t, st, aliceUser, aliceDev, true)
	bob := newPeer(t, st, "bob")
	bobRecovered := openInstall(t, st, bob.user, st.AddDevice(t, bob.user, "desktop"), true)
	carol := newPeer(t, st, "carol")

	src := writeFile(t, "photo.jpg", testBytes(700<<10))
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	secret := writeFile(t, "plan.txt", testBytes(100<<10))
	priv, err := alice.Share(ctx, secret, files.To("bob"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := format.DecodeManifest(manifestOf(t, st, aliceUser))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Public) != 1 || m.Public[0].Device != aliceDev.PublicKey() || len(m.Sealed) != 1 || m.Sealed[0].Device != aliceDev.PublicKey() {
		t.Fatalf("the entries do not name the restored install's device: %+v", m)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}

	fetchSame(t, bob, alice.handle(), "photo.jpg", src)
	fetchSame(t, bob, alice.handle(), "plan.txt", secret)
	// While it is not serving, the fetcher is told which device to wait for.
	alice.StopServing()
	_, err = bob.Fetch(ctx, alice.handle(), "photo.jpg", filepath.Join(t.TempDir(), "p.jpg"))
	var off *files.OfflineError
	if !errors.As(err, &off) || off.Owner != alice.handle()+`'s device "recovered"` {
		t.Fatalf("fetching from the device while it is offline: %v", err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	fetchSame(t, bobRecovered, alice.handle(), "plan.txt", secret)
	if _, err := carol.Fetch(ctx, alice.handle(), priv.CID.String(), filepath.Join(t.TempDir(), "x")); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("carol fetching the private file: %v", err)
	}
	// Carol asks the node directly for the private blob: refused.
	refused := alice.Stats().Refused
	node, err := carol.Node()
	if err != nil {
		t.Fatal(err)
	}
	info, err := carol.Locate(ctx, alice.handle(), files.LocateOptions{Device: aliceDev.PublicKey()})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Fetch(ctx, info, priv.CID, filepath.Join(t.TempDir(), "y")); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("carol asking the node for the private blob: %v", err)
	}
	if alice.Stats().Refused <= refused {
		t.Fatal("the node did not count the refusal")
	}

	// The primary install (no share index of these) sees them and
	// unshares one: the manifest is the chain's, not an install's.
	alicePrimary := openPeer(t, st, aliceUser)
	list, err := alicePrimary.Browse(ctx, alice.handle())
	if err != nil || len(list) != 2 {
		t.Fatalf("the primary's browse: %v %+v", err, list)
	}
	if _, err := alicePrimary.Unshare(ctx, "photo.jpg"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Fetch(ctx, alice.handle(), "photo.jpg", filepath.Join(t.TempDir(), "z")); !errors.Is(err, files.ErrNotShared) {
		t.Fatalf("fetching an unshared file: %v", err)
	}
}

// A revoked serving device is refused by the fetcher as soon as the
// revocation is on the owner's chain, though its process still runs: the
// fetcher does not ask it, and its node serves nothing more. The next
// share from another install drops its entries from the manifest.
func TestRevokedServingDeviceRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	aliceUser := st.NewUser(t, "alice")
	aliceDev := st.AddDevice(t, aliceUser, "old laptop")
	old := openInstall(t, st, aliceUser, aliceDev, true)
	bob := newPeer(t, st, "bob")

	src := writeFile(t, "notes.txt", testBytes(200<<10))
	if _, err := old.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := old.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	fetchSame(t, bob, old.handle(), "notes.txt", src)
	served := old.Stats()

	st.RevokeDevice(t, aliceUser, aliceDev.PublicKey())
	_, err := bob.Fetch(ctx, old.handle(), "notes.txt", filepath.Join(t.TempDir(), "notes.txt"))
	var de *files.DeviceError
	if !errors.Is(err, files.ErrDeviceRevoked) || errors.Is(err, files.ErrNotOwnersDevice) || !errors.As(err, &de) ||
		de.Device != aliceDev.PublicKey() || de.Name != "old laptop" || !de.Revoked {
		t.Fatalf("fetching from a revoked device: %v", err)
	}
	if _, err := bob.Locate(ctx, old.handle(), files.LocateOptions{Device: aliceDev.PublicKey()}); !errors.Is(err, files.ErrDeviceRevoked) {
		t.Fatalf("locating a revoked device: %v", err)
	}
	if got := old.Stats(); got != served {
		t.Fatalf("the revoked device's node was asked: %+v, then %+v", served, got)
	}

	// The primary install shares: the revoked device's entry leaves.
	primary := openPeer(t, st, aliceUser)
	fresh := writeFile(t, "fresh.txt", []byte("fresh"))
	if _, err := primary.Share(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	list, err := bob.Browse(ctx, old.handle())
	if err != nil || len(list) != 1 || list[0].Name != "fresh.txt" || !list[0].Device.IsZero() {
		t.Fatalf("after the revocation and a share: %v %+v", err, list)
	}
}

// Another person's device cannot pose as the owner's serving device: an
// entry that names mallory's (current) device is refused before anyone
// is asked, and a fetcher that dials the owner's device at mallory's
// addresses fails the libp2p handshake, so mallory's node serves nothing.
func TestForeignServingDeviceRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	aliceUser := st.NewUser(t, "alice")
	aliceDev := st.AddDevice(t, aliceUser, "laptop")
	alice := openInstall(t, st, aliceUser, aliceDev, true)
	malUser := st.NewUser(t, "mallory")
	malDev := st.AddDevice(t, malUser, "phone")
	mallory := openInstall(t, st, malUser, malDev, true)
	bob := newPeer(t, st, "bob")

	// Mallory shares the same bytes, so the same CID, and serves them.
	data := testBytes(150 << 10)
	src := writeFile(t, "contract.pdf", data)
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	if _, err := mallory.Share(ctx, writeFile(t, "contract.pdf", data)); err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	if err := mallory.StartServing(ctx); err != nil {
		t.Fatal(err)
	}

	// 1. A manifest on alice's chain naming mallory's device (made here
	// with alice's key, as a faulty or subverted client of hers would).
	m, err := format.DecodeManifest(manifestOf(t, st, aliceUser))
	if err != nil {
		t.Fatal(err)
	}
	m.Public[0].Device = malDev.PublicKey()
	body, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	st.AppendLink(t, aliceUser, sigchain.TypeSetSharedFiles, body)
	_, err = bob.Fetch(ctx, alice.handle(), "contract.pdf", filepath.Join(t.TempDir(), "c.pdf"))
	var de *files.DeviceError
	if !errors.Is(err, files.ErrNotOwnersDevice) || errors.Is(err, files.ErrDeviceRevoked) || !errors.As(err, &de) || de.Device != malDev.PublicKey() {
		t.Fatalf("an entry naming another person's device: %v", err)
	}
	if _, err := bob.Locate(ctx, alice.handle(), files.LocateOptions{Device: malDev.PublicKey()}); !errors.Is(err, files.ErrNotOwnersDevice) {
		t.Fatalf("locating another person's device as alice's: %v", err)
	}
	if got := mallory.Stats(); got.Requests != 0 || got.Refused != 0 {
		t.Fatalf("mallory's node was asked: %+v", got)
	}

	// 2. Mallory's node at the addresses given for alice's device: the
	// handshake proves it is not alice's device.
	node, err := bob.Node()
	if err != nil {
		t.Fatal(err)
	}
	posing := lpeer.AddrInfo{ID: aliceDev.PublicKey().PeerID(), Addrs: mallory.Addrs()}
	if err := node.Fetch(ctx, posing, m.Public[0].CID, filepath.Join(t.TempDir(), "d.pdf")); err == nil {
		t.Fatal("a fetch from alice's device at mallory's addresses succeeded")
	}
	if got := mallory.Stats(); got.Requests != 0 || got.ChunksServed != 0 {
		t.Fatalf("mallory's node served the posing fetch: %+v", got)
	}
	// The real device at its real addresses still serves.
	info, err := bob.Locate(ctx, alice.handle(), files.LocateOptions{Device: aliceDev.PublicKey()})
	if err != nil || info.ID != aliceDev.PublicKey().PeerID() {
		t.Fatalf("locating alice's device: %v %v", err, info.ID)
	}
	dst := filepath.Join(t.TempDir(), "e.pdf")
	if err := node.Fetch(ctx, info, m.Public[0].CID, dst); err != nil {
		t.Fatal(err)
	}
	sameFile(t, src, dst)
}

// The serving node allows a private blob to a current device of a
// recipient's chain, and stops within a minute of the recipient revoking
// it (the node's clock is moved on; the revoked device dials the node
// directly, its NATS login being gone). Blob requests from a stranger's
// key cost at most one fetch of the recipient's chain a minute.
func TestRecipientsRevokedDeviceRefused(t *testing.T) {
	var fetches stacktest.ChainFetches
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: fetches.Wrap})
	ctx := devCtx(t)
	var ahead atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	alice := openInstall(t, st, st.NewUser(t, "alice"), nil, true, func(c *client.Config) { c.Clock = clock })
	bob := newPeer(t, st, "bob")
	desk := st.AddDevice(t, bob.user, "desk")
	bobDesk := openInstall(t, st, bob.user, desk, true)
	eve := newPeer(t, st, "eve")

	secret := writeFile(t, "plan.txt", testBytes(90<<10))
	sf, err := alice.Share(ctx, secret, files.To("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	fetchSame(t, bobDesk, alice.handle(), "plan.txt", secret)
	info, err := bobDesk.Locate(ctx, alice.handle(), files.LocateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// A stranger's requests, many of them: one chain fetch at most.
	fetches.Of(bob.user.Key)
	eveNode, err := eve.Node()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := eveNode.Fetch(ctx, info, sf.CID, filepath.Join(t.TempDir(), "x")); !errors.Is(err, files.ErrForbidden) {
			t.Fatalf("eve's request %d: %v", i, err)
		}
	}
	if got := fetches.Of(bob.user.Key); len(got) > 1 {
		t.Fatalf("20 requests from a stranger fetched bob's chain %d times", len(got))
	}

	st.RevokeDevice(t, bob.user, desk.PublicKey())
	ahead.Store(int64(61 * time.Second))
	node, err := bobDesk.Node()
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Fetch(ctx, info, sf.CID, filepath.Join(t.TempDir(), "y")); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("a recipient's revoked device a minute later: %v", err)
	}
	// Bob's person key still is a recipient.
	fetchSame(t, bob, alice.handle(), "plan.txt", secret)
}

// testBytes returns n bytes of the blob pattern (byte i is i mod 251).
func testBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}
