package files_test

import (
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
