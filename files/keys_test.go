package files_test

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// linkedInstall is one linked device of a person: its chat client, which
// receives the person's encryption keys (docs/spec/chat.md §8.6), and its
// sharing, which opens private files with them.
type linkedInstall struct {
	chat  *chat.Client
	share *peer
}

// openLinked opens the chat client and the sharing of u's linked device
// dev, in one fresh state folder; the sharing takes its keys from the
// chat client.
func openLinked(t testing.TB, st *stacktest.Stack, u *stacktest.User, dev *kez.Identity) *linkedInstall {
	t.Helper()
	cc := client.Config{Device: dev, Person: u.Key, Home: filepath.Join(t.TempDir(), "kez-home"),
		NATSURL: st.NATSURL, ServerURL: st.ServerURL, SigServerURL: st.SigServerURL, Domain: st.Domain, Resolver: st.Resolver()}
	logs := &testlog.Buffer{}
	cc.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c, err := chat.Open(devCtx(t), chat.Config{Client: cc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("chat log of %s's device:\n%s", u.Name, logs.String())
		}
	})
	return &linkedInstall{chat: c, share: openWith(t, st, u, cc, func(fc *files.Config) { fc.Keys = c })}
}

// syncKey takes what waits in the device's inbox (DistributeKeys and
// RevokeDevice return once the stream stored the keys) and checks that
// the device now holds its person's key of generation gen.
func (l *linkedInstall) syncKey(t testing.TB, gen uint32) {
	t.Helper()
	if _, err := l.chat.Sync(devCtx(t)); err != nil {
		t.Fatal(err)
	}
	if l.chat.EncryptionKey(gen) == nil {
		t.Fatalf("the device did not get generation %d", gen)
	}
}

// A linked device opens and fetches a private file shared with its
// person once an install holding the primary key sent it the keys. After
// bob revokes his phone (the key rotates), alice's next private file for
// bob opens on his laptop and not on the phone, which keeps only what it
// had: the first file.
func TestLinkedDeviceOpensPrivateFiles(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	alice := newPeer(t, st, "alice")
	bobUser := st.NewUser(t, "bob")
	laptopKey := st.AddDevice(t, bobUser, "laptop")
	phoneKey := st.AddDevice(t, bobUser, "phone")
	laptop := openLinked(t, st, bobUser, laptopKey)
	phone := openLinked(t, st, bobUser, phoneKey)

	first := writeFile(t, "first.txt", testBytes(70<<10))
	sf1, err := alice.Share(ctx, first, files.To("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	// Before the keys: the private file does not show, and is refused.
	if _, err := laptop.share.Fetch(ctx, alice.handle(), sf1.CID.String(), filepath.Join(t.TempDir(), "x")); !errors.Is(err, files.ErrNoKey) || !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("a private file before the keys came: %v", err)
	}

	// Bob's primary install sends the keys (as it does when it approves a
	// device, and whenever it runs).
	bobPrimary, err := chat.Open(ctx, chat.Config{Client: client.Config{Identity: bobUser.Identity, Home: filepath.Join(t.TempDir(), "bob-primary"),
		NATSURL: st.NATSURL, ServerURL: st.ServerURL, SigServerURL: st.SigServerURL, Domain: st.Domain, Resolver: st.Resolver()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bobPrimary.Close() })
	if _, err := bobPrimary.DistributeKeys(ctx); err != nil {
		t.Fatal(err)
	}
	laptop.syncKey(t, 0)
	phone.syncKey(t, 0)
	fetchSame(t, laptop.share, alice.handle(), "first.txt", first)
	fetchSame(t, phone.share, alice.handle(), "first.txt", first)

	// Bob revokes the phone: generation 1, to the laptop only.
	rv, err := bobPrimary.RevokeDevice(ctx, phoneKey.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	st.RegisterDeviceLink(t, rv.Link)
	if rv.Generation != 1 {
		t.Fatalf("rotated to generation %d", rv.Generation)
	}
	laptop.syncKey(t, 1)

	second := writeFile(t, "second.txt", testBytes(50<<10))
	sf, err := alice.Share(ctx, second, files.To("bob"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := format.DecodeManifest(manifestOf(t, st, alice.user))
	if err != nil {
		t.Fatal(err)
	}
	// Bob's wrap of it is to generation 1 alone.
	opens := func(gen uint32) bool {
		for _, e := range format.VisibleTo(m, chat.Keyring{gen: bobUser.Identity.EncryptionKey(gen)}) {
			if e.CID == sf.CID {
				return true
			}
		}
		return false
	}
	if opens(0) || !opens(1) {
		t.Fatalf("the share after the rotation opens with generation 0: %v, 1: %v", opens(0), opens(1))
	}
	fetchSame(t, laptop.share, alice.handle(), "second.txt", second)

	// The phone: whatever it gets hold of, its keys do not open the new
	// wrap; the first file still shows (it had generation 0).
	if phone.chat.EncryptionKey(1) != nil {
		t.Fatal("the revoked phone holds generation 1")
	}
	var names []string
	for _, e := range format.VisibleTo(m, phone.chat) {
		names = append(names, e.Name)
	}
	if len(names) != 1 || names[0] != "first.txt" {
		t.Fatalf("the revoked phone sees %v", names)
	}
	list, err := phone.share.Browse(ctx, alice.handle())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list {
		if e.Name == "second.txt" {
			t.Fatal("the revoked phone lists the file shared after the rotation")
		}
	}
	if _, err := phone.share.Fetch(ctx, alice.handle(), sf.CID.String(), filepath.Join(t.TempDir(), "y")); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("the revoked phone fetches the new file: %v", err)
	}
	// The laptop sees both, with the same keys.
	var seen int
	for _, e := range format.VisibleTo(m, laptop.chat) {
		if e.Private {
			seen++
		}
	}
	if seen != 2 {
		t.Fatalf("the laptop sees %d private files", seen)
	}
}

// opensWith reports whether the entry cid of owner's manifest opens with
// id's key of generation gen alone.
func opensWith(t testing.TB, st *stacktest.Stack, owner *stacktest.User, cid string, id *kez.Identity, gen uint32) bool {
	t.Helper()
	m, err := format.DecodeManifest(manifestOf(t, st, owner))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range format.VisibleTo(m, chat.Keyring{gen: id.EncryptionKey(gen)}) {
		if e.CID.String() == cid {
			return true
		}
	}
	return false
}

// A revocation whose rotation is not on the chain yet (the sig-server
// failed between the two links): the revoked device holds the current
// generation. A private share to that person is refused until the
// rotation is there, rather than wrapped to a key the revoked device
// holds; the sharer's own revocation left unrotated is rotated by the
// share itself, before it wraps anything to the sharer.
func TestShareWaitsForRotation(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	alice := newPeer(t, st, "alice")
	bob := st.NewUser(t, "bob")
	phone := st.AddDevice(t, bob, "phone")
	st.RevokeDevice(t, bob, phone.PublicKey()) // no set_encryption_key after it

	f := writeFile(t, "plan.txt", testBytes(10<<10))
	if _, err := alice.Share(ctx, f, files.To("bob")); !errors.Is(err, files.ErrKeyNotRotated) {
		t.Fatalf("a private share to bob before his rotation: %v", err)
	}
	if m, err := format.DecodeManifest(manifestOf(t, st, alice.user)); err == nil && len(m.Sealed) != 0 {
		t.Fatal("the refused share is in alice's list")
	}
	// A public share wraps nothing: it goes on.
	if _, err := alice.Share(ctx, writeFile(t, "public.txt", testBytes(1<<10))); err != nil {
		t.Fatal(err)
	}
	// Bob's install rotates: the share goes to generation 1 alone.
	st.AppendLink(t, bob, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bob.Identity.EncryptionKey(1).PublicKey(), 1))
	sf, err := alice.Share(ctx, f, files.To("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if opensWith(t, st, alice.user, sf.CID.String(), bob.Identity, 0) || !opensWith(t, st, alice.user, sf.CID.String(), bob.Identity, 1) {
		t.Fatal("the share after bob's rotation is not wrapped to his generation 1 alone")
	}

	// Alice revokes her own tablet and her rotation fails: her next
	// private share rotates her key first, and wraps hers to the new one.
	tablet := st.AddDevice(t, alice.user, "tablet")
	st.RevokeDevice(t, alice.user, tablet.PublicKey())
	sf2, err := alice.Share(ctx, writeFile(t, "notes.txt", testBytes(2<<10)), files.To("bob"))
	if err != nil {
		t.Fatal(err)
	}
	state, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(ctx, alice.user.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if state.EncryptionGeneration() != 1 || !state.EncryptionKey().Equal(alice.user.Identity.EncryptionKey(1).PublicKey()) {
		t.Fatalf("alice's chain after her share: generation %d", state.EncryptionGeneration())
	}
	if opensWith(t, st, alice.user, sf2.CID.String(), alice.user.Identity, 0) || !opensWith(t, st, alice.user, sf2.CID.String(), alice.user.Identity, 1) {
		t.Fatal("alice's own wrap is not to her generation 1 alone")
	}
}

// A sig-server that serves alice's chain rolled back to before the
// rotation that followed her tablet's revocation: with Config.OwnChain
// (chat.FetchOwnChain) her sharing checks the chain against the one her
// install pinned, refuses, and appends nothing: neither the rotation
// that would be due on what it served (a fork signed by her key) nor the
// list of shares (docs/spec/chat.md §8.7).
func TestShareRefusesRolledBackOwnChain(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	au := st.NewUser(t, "alice")
	st.NewUser(t, "bob")
	tablet := st.AddDevice(t, au, "tablet")
	st.RevokeDevice(t, au, tablet.PublicKey())
	st.AppendLink(t, au, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(au.Identity.EncryptionKey(1).PublicKey(), 1))
	cc := client.Config{Identity: au.Identity, Home: au.Home, SigServerURL: st.SigServerURL}
	alice := openWith(t, st, au, cc, func(fc *files.Config) {
		fc.OwnChain = func(ctx context.Context) (*sigchain.State, error) { return chat.FetchOwnChain(ctx, cc) }
	})
	if _, err := alice.Share(ctx, writeFile(t, "public.txt", testBytes(1<<10))); err != nil {
		t.Fatal(err)
	}
	sc := &sigchain.Client{BaseURL: st.SigServerURL}
	links, err := sc.Fetch(ctx, au.Key, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The share's own link is pinned by the next check.
	if _, err := chat.FetchOwnChain(ctx, cc); err != nil {
		t.Fatal(err)
	}
	served := links[:3] // eldest, add tablet, revoke tablet: a rotation is due
	st.RewriteChain(t, au.Key, served)

	for _, to := range [][]files.ShareOption{{files.To("bob")}, nil} {
		if _, err := alice.Share(ctx, writeFile(t, "plan.txt", testBytes(2<<10)), to...); !errors.Is(err, chat.ErrOwnChainRewritten) || !errors.Is(err, sigchain.ErrRollback) {
			t.Fatalf("a share on the rolled back chain: %v", err)
		}
	}
	now, err := sc.Fetch(ctx, au.Key, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(now) != len(served) {
		t.Fatalf("alice's sharing appended to the rolled back chain: %d links, %d served", len(now), len(served))
	}
}
