package files_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
)

// The whole story of docs/spec/manifest.md §7 with the offer sent through
// the group: real chat clients, a real stack, real libp2p hosts.

// member is a person with a chat client and a sharing.
type member struct {
	user  *stacktest.User
	chat  *chat.Client
	share *peer
}

// openMember opens a chat client and a sharing of u, in fresh state
// folders; opts adjust the sharing's client.Config (a clock).
func openMember(t testing.TB, st *stacktest.Stack, u *stacktest.User, opts ...func(*client.Config)) *member {
	t.Helper()
	cc := client.Config{Identity: u.Identity, Home: filepath.Join(t.TempDir(), "chat"),
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
			t.Logf("chat log of %s:\n%s", u.Name, logs.String())
		}
	})
	return &member{user: u, chat: c, share: openInstall(t, st, u, nil, true, opts...)}
}

// sync takes what waits in m's inbox (the changes and sends of the others
// return once the stream stored them).
func (m *member) sync(t testing.TB) {
	t.Helper()
	if _, err := m.chat.Sync(devCtx(t)); err != nil {
		t.Fatalf("%s syncs: %v", m.user.Name, err)
	}
}

// offers returns the offers m's chat recorded in the group.
func (m *member) offers(t testing.TB, name string) []chat.GroupFile {
	t.Helper()
	fs, err := m.chat.GroupFiles(devCtx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// fetchWith fetches the file of an offer m's chat recorded (from the
// owner's handle the group gives) into a fresh folder.
func (m *member) fetchWith(t testing.TB, f chat.GroupFile) (*files.Fetched, error) {
	t.Helper()
	return m.share.Fetch(devCtx(t), f.OwnerHandle, f.Offer.Name, filepath.Join(t.TempDir(), f.Offer.Name), files.WithFileKey(f.Offer))
}

// sameOffer reports whether two offers carry the same things.
func sameOffer(a, b format.GroupFile) bool {
	at, bt := a.ModTime, b.ModTime
	a.ModTime, b.ModTime = time.Time{}, time.Time{}
	return a == b && at.Equal(bt)
}

// A file shared with a group of 40 (alice, bob, dave with clients, 37
// registered people without one): the manifest entry names the group,
// the offer goes through the group. Bob and dave, members then, read the
// offer and fetch the file. Carol, added afterwards, gets no offer, and
// holding it anyway is refused by alice's node; dave, removed, is refused
// from then on (within the minute the node keeps the chain); erin, a
// stranger, is refused and cannot even send to the group. Bob's offer of
// alice's file with a wrong key names a file bob does not share; fetched
// from alice it names another owner: both refused, typed.
func TestGroupFile40Members(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := devCtx(t)
	var ahead atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	alice := openMember(t, st, st.NewUser(t, "alice"), func(c *client.Config) { c.Clock = clock })
	bob, dave := openMember(t, st, st.NewUser(t, "bob")), openMember(t, st, st.NewUser(t, "dave"))
	handles := []string{bob.user.Handle.String(), dave.user.Handle.String()}
	sc := &sigchain.Client{BaseURL: st.SigServerURL}
	for i := range 37 {
		u := st.NewUser(t, fmt.Sprintf("m%02d", i))
		pk, err := session.NewPrekey(rand.Reader, u.Identity, 1, time.Now(), 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := sc.PublishPrekey(ctx, &pk.Public); err != nil {
			t.Fatal(err)
		}
		handles = append(handles, u.Handle.String())
	}
	// bob and dave publish their prekeys by syncing once.
	bob.sync(t)
	dave.sync(t)
	if _, err := alice.chat.CreateGroup(ctx, "crew", ""); err != nil {
		t.Fatal(err)
	}
	if err := alice.chat.AddGroupMembers(ctx, "crew", handles...); err != nil {
		t.Fatal(err)
	}
	g, err := alice.chat.Group(ctx, "crew")
	if err != nil || len(g.Members) != 40 {
		t.Fatalf("the group: %+v, %v", g, err)
	}

	secret := writeFile(t, "plan.txt", testBytes(300<<10))
	sf, err := alice.share.Share(ctx, secret, files.ToGroup(files.Group{Name: g.Name, SigServer: g.SigServer,
		Pin: group.Pin{Group: g.Name, ID: g.ID, Seqno: g.Seqno, Head: g.Head}}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.chat.SendGroupFile(ctx, "crew", *sf.Offer); err != nil {
		t.Fatal(err)
	}
	if err := alice.share.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	fetchOK := func(m *member) {
		t.Helper()
		m.sync(t)
		fs := m.offers(t, g.Name)
		if len(fs) != 1 || fs[0].Offer.Owner != alice.user.Key || fs[0].OwnerHandle != alice.user.Handle.String() || !sameOffer(*sf.Offer, fs[0].Offer) {
			t.Fatalf("%s's offers: %+v", m.user.Name, fs)
		}
		got, err := m.fetchWith(t, fs[0])
		if err != nil {
			t.Fatalf("%s fetches: %v", m.user.Name, err)
		}
		sameFile(t, secret, got.Path)
	}
	fetchOK(bob)
	fetchOK(dave)
	offer := chat.GroupFile{Offer: *sf.Offer, OwnerHandle: alice.user.Handle.String()}
	forbidden := func(m *member, what string) {
		t.Helper()
		if _, err := m.fetchWith(t, offer); !errors.Is(err, files.ErrForbidden) {
			t.Fatalf("%s: %v, want ErrForbidden", what, err)
		}
	}

	// Carol, added after the share: no offer (no key of its epoch); the
	// offer, leaked to her, does not make alice's node serve her.
	carol := openMember(t, st, st.NewUser(t, "carol"))
	carol.sync(t)
	if err := alice.chat.AddGroupMembers(ctx, "crew", "carol"); err != nil {
		t.Fatal(err)
	}
	carol.sync(t)
	if gs, err := carol.chat.Groups(ctx); err != nil || len(gs) != 1 || len(gs[0].Members) != 41 {
		t.Fatalf("carol's groups: %+v, %v", gs, err)
	}
	if fs := carol.offers(t, g.Name); len(fs) != 0 {
		t.Fatalf("carol, added later, has offers: %+v", fs)
	}
	forbidden(carol, "carol, added after the share")

	// Dave removed: refused once alice's node reads the chain again.
	if err := alice.chat.RemoveGroupMembers(ctx, "crew", "dave"); err != nil {
		t.Fatal(err)
	}
	ahead.Store(int64(61 * time.Second))
	forbidden(dave, "dave, removed")
	fetchOK(bob)

	// Erin, a stranger.
	erin := openMember(t, st, st.NewUser(t, "erin"))
	forbidden(erin, "erin, a stranger")
	if _, err := erin.chat.SendGroupFile(ctx, g.Name, format.GroupFile{CID: sf.CID, Key: sf.Offer.Key, Name: "x", Size: 1}); !errors.Is(err, chat.ErrUnknownGroup) {
		t.Fatalf("erin offers a file to the group: %v", err)
	}

	// Bob offers alice's CID as his, with a wrong key: the members record
	// it (it is bob's offer), but bob shares no such file, and alice's
	// handle does not name bob.
	wrong := format.GroupFile{CID: sf.CID, Key: sf.Offer.Key, Name: "plan.txt", Size: sf.Size, ModTime: time.Now()}
	wrong.Key[0] ^= 1
	if _, err := bob.chat.SendGroupFile(ctx, "crew", wrong); err != nil {
		t.Fatal(err)
	}
	alice.sync(t)
	fs := alice.offers(t, g.Name)
	if len(fs) != 2 || fs[1].Offer.Owner != bob.user.Key || fs[1].OwnerHandle != bob.user.Handle.String() {
		t.Fatalf("alice's offers: %+v", fs)
	}
	if _, err := alice.fetchWith(t, fs[1]); !errors.Is(err, files.ErrNotShared) {
		t.Fatalf("bob's offer of alice's CID: %v, want ErrNotShared", err)
	}
	forged := fs[1]
	forged.OwnerHandle = alice.user.Handle.String()
	if _, err := alice.fetchWith(t, forged); !errors.Is(err, files.ErrOfferMismatch) {
		t.Fatalf("bob's offer fetched from alice: %v, want ErrOfferMismatch", err)
	}
}
