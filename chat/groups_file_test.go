package chat

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// The group-file kind (docs/spec/chat.md §10.2, manifest.md §7): offers
// of files shared with a group, read by the members of the epoch they
// were sealed in and by no one else; forged ones refused.

// testOffer is an offer of a file of n bytes (the blob's CID made up: the
// chat does not fetch), the owner and group left for SendGroupFile.
func testOffer(t testing.TB, name string, n int64) format.GroupFile {
	t.Helper()
	var key format.FileKey
	rand.Read(key[:])
	tr, err := format.BuildTree(bytes.NewReader(bytes.Repeat([]byte{1}, int(format.EncryptedSize(n)))))
	if err != nil {
		t.Fatal(err)
	}
	return format.GroupFile{CID: tr.CID(), Key: key, Name: name, Size: n, MediaType: "text/plain", ModTime: time.Unix(1767225600, 0)}
}

func mustMarshal(t testing.TB, f format.GroupFile) []byte {
	t.Helper()
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitGroupFiles receives on c until the group lists n offers.
func waitGroupFiles(t testing.TB, c *testClient, name string, n int) []GroupFile {
	t.Helper()
	var fs []GroupFile
	receiveUntil(t, c, "the group's file offers", func(int) bool {
		var err error
		if fs, err = c.GroupFiles(testCtx(t), name); err != nil {
			t.Fatal(err)
		}
		return len(fs) >= n
	})
	return fs
}

// Alice offers a file to the club: bob and carol record it, the key
// included, as a group-file entry of the conversation, and so does
// alice's own history. Dave, added afterwards, never reads it: the offer
// sealed again with alice's key of that epoch and handed to his device
// waits for a key of an epoch he was never in.
func TestGroupFileOffer(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	g, err := tr.a.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}
	offer := testOffer(t, "plan.txt", 70<<10)
	sent, err := tr.a.SendGroupFile(ctx, "club", offer)
	if err != nil {
		t.Fatal(err)
	}
	want := offer
	want.Owner, want.Group = tr.alice.user.Key, g.ID
	for _, c := range []*testClient{tr.b, tr.c} {
		fs := waitGroupFiles(t, c, tr.name, 1)
		f := fs[0]
		if len(fs) != 1 || f.Offer.Key != want.Key || f.Offer.Owner != want.Owner || f.Offer.Group != g.ID || !f.Offer.CID.Equals(want.CID) ||
			f.Offer.Name != "plan.txt" || f.Offer.Size != 70<<10 || f.OwnerHandle != "alice@"+tr.st.Domain {
			t.Fatalf("%s's offers: %+v", c.user.Name, fs)
		}
		e := f.Message
		if e.ID != sent.ID || e.Kind != KindGroupFile || !e.Incoming || e.From != tr.alice.user.Key || e.Group != tr.name {
			t.Fatalf("%s's entry: %+v", c.user.Name, e)
		}
		if got, err := e.GroupFile(); err != nil || got.Key != want.Key {
			t.Fatalf("Entry.GroupFile: %+v, %v", got, err)
		}
	}
	if fs, err := tr.a.GroupFiles(ctx, "club"); err != nil || len(fs) != 1 || fs[0].Message.Incoming || fs[0].Offer.Key != want.Key || fs[0].OwnerHandle != "alice@"+tr.st.Domain {
		t.Fatalf("alice's own offers: %+v, %v", fs, err)
	}
	if e := (&Entry{Kind: KindText, Body: []byte("hi")}); func() error { _, err := e.GroupFile(); return err }() == nil {
		t.Fatal("a text entry read as an offer")
	}

	// Alice's sender key of epoch 2, which sealed the offer.
	old := senderKeyOf(t, tr.a, g.ID, 2)
	offerMsg := Message{ID: NewMessageID(), SentAt: time.Now().Truncate(time.Millisecond), Kind: KindGroupFile, Body: mustMarshal(t, want)}
	again, err := old.Seal(marshalInnerV2(&offerMsg))
	if err != nil {
		t.Fatal(err)
	}

	dave := openClient(t, tr.st, tr.st.NewUser(t, "dave"))
	if err := tr.a.AddGroupMembers(ctx, "club", "dave"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, dave, tr.name, func(g *Group) bool { return g.Epoch == 3 })
	mustGroupSend(t, tr.a, tr.name, "welcome, dave")
	waitGroupText(t, dave, tr.name, "welcome, dave")
	before := dave.Stats()
	sendRaw(t, tr.a, again, dave.DeviceKey())
	waitStat(t, dave, "the old envelope held", func(s Stats) bool { return s.GroupHeld > before.GroupHeld })
	if fs, err := dave.GroupFiles(ctx, "club"); err != nil || len(fs) != 0 {
		t.Fatalf("dave, added later, reads offers: %+v, %v", fs, err)
	}
}

// Forged offers are refused by every member: bob's offer of a file it
// names as alice's, bob's offer made for another group, a body that is no
// offer, and eve's (no member) offer sealed with a sender key of her own.
// SendGroupFile refuses to send the first two.
func TestGroupFileForgedOffers(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	g, err := tr.a.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}
	aliceOwns := testOffer(t, "alice.txt", 10)
	aliceOwns.Owner = tr.alice.user.Key
	if _, err := tr.b.SendGroupFile(ctx, "club", aliceOwns); !errors.Is(err, format.ErrGroupFile) {
		t.Fatalf("bob offers alice's file: %v", err)
	}
	elsewhere := testOffer(t, "elsewhere.txt", 10)
	elsewhere.Group = [32]byte{1}
	if _, err := tr.b.SendGroupFile(ctx, "club", elsewhere); !errors.Is(err, format.ErrGroupFile) {
		t.Fatalf("bob offers another group's file: %v", err)
	}
	elsewhere.Owner = tr.bob.user.Key
	aliceOwns.Group = g.ID
	body := func(f format.GroupFile) []byte { return mustMarshal(t, f) }
	before := tr.a.Stats()
	for _, b := range [][]byte{body(aliceOwns), body(elsewhere), []byte("no offer")} {
		if _, err := tr.b.sendGroup(ctx, tr.name, KindGroupFile, b); err != nil {
			t.Fatal(err)
		}
	}
	// Eve seals an offer of her own with a sender key she made.
	eu := tr.st.NewUser(t, "eve")
	eve := openClient(t, tr.st, eu)
	sk, err := session.NewSenderKey(rand.Reader, g.ID, g.Epoch, eve.DeviceKey())
	if err != nil {
		t.Fatal(err)
	}
	eveOffer := testOffer(t, "eve.txt", 10)
	eveOffer.Owner, eveOffer.Group = eu.Key, g.ID
	m := Message{ID: NewMessageID(), SentAt: time.Now().Truncate(time.Millisecond), Kind: KindGroupFile, Body: body(eveOffer)}
	env, err := sk.Seal(marshalInnerV2(&m))
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, eve, env, tr.a.DeviceKey())
	waitStat(t, tr.a, "four forged offers refused", func(s Stats) bool { return s.Rejected >= before.Rejected+4 })
	mustGroupSend(t, tr.b, tr.name, "after the forgeries")
	waitGroupText(t, tr.a, tr.name, "after the forgeries")
	for _, c := range []*testClient{tr.a, tr.c} {
		if fs, err := c.GroupFiles(ctx, "club"); err != nil || len(fs) != 0 {
			t.Fatalf("%s records forged offers: %+v, %v", c.user.Name, fs, err)
		}
	}
}

// checkGroupKind's refusals are typed: ErrForgedOffer (matching
// ErrMalformed) for an offer of another owner or group, ErrMalformed for
// a body that is no offer and for other kinds.
func TestGroupFileKindRules(t *testing.T) {
	owner, other := kez.PublicKey{1}, kez.PublicKey{2}
	gid := [32]byte{9}
	f := testOffer(t, "f", 1)
	f.Owner, f.Group = owner, gid
	b, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	msg := func(k Kind, body []byte) *Message { return &Message{Kind: k, Body: body} }
	if err := checkGroupKind(msg(KindGroupFile, b), gid, owner); err != nil {
		t.Fatalf("a good offer: %v", err)
	}
	if err := checkGroupKind(msg(KindText, []byte("hi")), gid, owner); err != nil {
		t.Fatalf("a text: %v", err)
	}
	for what, err := range map[string]error{
		"another owner": checkGroupKind(msg(KindGroupFile, b), gid, other),
		"another group": checkGroupKind(msg(KindGroupFile, b), [32]byte{8}, owner),
	} {
		if !errors.Is(err, ErrForgedOffer) || !errors.Is(err, ErrMalformed) || !isRefusal(err) {
			t.Errorf("%s: %v, want ErrForgedOffer", what, err)
		}
	}
	for what, err := range map[string]error{
		"a truncated offer": checkGroupKind(msg(KindGroupFile, b[:len(b)-1]), gid, owner),
		"a receipt":         checkGroupKind(msg(KindReceipt, nil), gid, owner),
	} {
		if !errors.Is(err, ErrMalformed) || errors.Is(err, ErrForgedOffer) {
			t.Errorf("%s: %v, want ErrMalformed", what, err)
		}
	}
}
