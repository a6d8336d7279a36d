package chat

import (
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// A blocked contact who moves his handle to a new key is still blocked:
// the new key's first message (a request until its handle is looked up)
// is deleted once the lookup names the blocked contact, and what it sends
// after is dropped as blocked, not stored as held messages (which no cap
// bounds) nor counted in the conversation list.
func TestBlockCoversAContactsNewKey(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, checkEveryTime)
	mustAdd(t, alice, "bob")
	ctx := testCtx(t)
	if err := alice.Block(ctx, bu.Key); err != nil {
		t.Fatal(err)
	}

	// bob takes his name to a new key and writes from it.
	st.ReleaseHandle(t, "bob")
	id := stacktest.Identity("bob-new-key")
	registerAs(t, st, id, bu.Handle)
	nb := strangerAs(t, st, &stacktest.User{Name: "bob-new", Identity: id, Key: id.PublicKey(), Handle: bu.Handle}, "")
	nb.send(t, au, []byte("it is me, new key"))
	receiveUntil(t, alice, "the new key's first message", func(int) bool {
		s := alice.Stats()
		return s.Received+s.Blocked >= 1
	})
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	const flood = 5
	before := alice.Stats()
	for i := range flood {
		nb.send(t, au, fmt.Appendf(nil, "still me %d", i))
	}
	receiveUntil(t, alice, "the new key's flood", func(int) bool {
		s := alice.Stats()
		return s.Received+s.Blocked-before.Received-before.Blocked >= flood
	})
	if s := alice.Stats(); s.Blocked-before.Blocked != flood || s.Held != 0 {
		t.Errorf("the blocked contact's new key: %d dropped, %d held; want %d, 0", s.Blocked-before.Blocked, s.Held, flood)
	}
	if held, _ := alice.Held(ctx); len(held) != 0 {
		t.Errorf("held from the blocked contact's new key: %q", texts(held))
	}
	if reqs, _ := alice.Requests(ctx); len(reqs) != 0 {
		t.Errorf("requests from the blocked contact's new key: %q", texts(reqs))
	}
	cvs, err := alice.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range cvs {
		if cv.Held != 0 || cv.Unread != 0 || cv.Request {
			t.Errorf("conversation row: %+v", cv)
		}
	}
}

// A group member's envelopes held before the block (a key of an epoch the
// receiver has not pinned yet, and messages sealed with it) are not
// opened after it: when the epoch comes, bob's held message is dropped
// as blocked, not stored in the group's history.
func TestBlockDropsHeldGroupEnvelopes(t *testing.T) {
	tr := newTrio(t, stacktest.Options{}, func(c *Config) { c.GroupUpdateInterval = time.Millisecond })
	ctx := testCtx(t)
	gs, err := tr.b.pinnedGroup(tr.name)
	if err != nil {
		t.Fatal(err)
	}
	st, _, _ := gs.snapshot()
	// bob seals with a key of epoch 3, which the chain does not have yet:
	// carol keeps the key unchecked and holds the message.
	sk, err := session.NewSenderKey(rand.Reader, st.ID(), st.Epoch()+1, tr.b.DeviceKey())
	if err != nil {
		t.Fatal(err)
	}
	dist, err := sk.Distribution().MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	m := Message{ID: NewMessageID(), SentAt: time.Now().Truncate(time.Millisecond), From: tr.b.Key(), Kind: KindText, Body: []byte("sealed before the block")}
	env, err := sk.Seal(marshalInnerV2(&m))
	if err != nil {
		t.Fatal(err)
	}
	sendPairwise(t, tr.b, tr.carol.user.Key, "carol@"+tr.st.Domain, KindGroupKey, dist)
	sendRaw(t, tr.b, env, tr.c.DeviceKey())
	waitStat(t, tr.c, "bob's message held", func(s Stats) bool { return s.GroupHeld >= 1 })
	if n := heldBy(t, tr.c, tr.b.DeviceKey()); n != 1 {
		t.Fatalf("carol holds %d of bob's envelopes", n)
	}

	if err := tr.c.Block(ctx, tr.bob.user.Key); err != nil {
		t.Fatal(err)
	}
	// alice adds dave: epoch 3, which carol follows.
	tr.st.NewUser(t, "dave")
	if err := tr.a.AddGroupMembers(ctx, "club", "dave"); err != nil {
		t.Fatal(err)
	}
	mustGroupSend(t, tr.a, tr.name, "epoch 3")
	waitGroupText(t, tr.c, tr.name, "epoch 3")
	if got := groupTexts(t, tr.c, tr.name); slices.Contains(got, "sealed before the block") {
		t.Errorf("carol stored the blocked bob's held message: %q", got)
	}
	if n := heldBy(t, tr.c, tr.b.DeviceKey()); n != 0 {
		t.Errorf("carol still holds %d of the blocked bob's envelopes", n)
	}
}

// No group read receipt goes to a blocked member: carol marks read a
// message bob wrote before she blocked him, and one of alice's; alice
// learns it, bob does not.
func TestBlockSendsNoGroupRead(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	mustGroupSend(t, tr.b, tr.name, "from bob")
	mustGroupSend(t, tr.a, tr.name, "from alice")
	fromBob := waitGroupText(t, tr.c, tr.name, "from bob")
	fromAlice := waitGroupText(t, tr.c, tr.name, "from alice")
	if err := tr.c.Block(ctx, tr.bob.user.Key); err != nil {
		t.Fatal(err)
	}
	if err := tr.c.MarkRead(ctx, fromBob, fromAlice); err != nil {
		t.Fatal(err)
	}
	// Shutdown waits for the background sends.
	if err := tr.c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	readBy := func(c *testClient, text string) []kez.PublicKey {
		es, err := c.GroupHistory(ctx, tr.name, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Text() == text {
				return e.ReadBy
			}
		}
		t.Fatalf("%s has no %q", c.user.Name, text)
		return nil
	}
	receiveUntil(t, tr.a, "carol's read of alice's message", func(int) bool {
		return slices.Contains(readBy(tr.a, "from alice"), tr.carol.user.Key)
	})
	mustSync(t, tr.b)
	if got := readBy(tr.b, "from bob"); slices.Contains(got, tr.carol.user.Key) {
		t.Errorf("the blocked bob learnt that carol read his message: %v", got)
	}
}

// A block recorded by another client of the same state folder (the CLI
// beside a running UI) counts for the read receipts the running one
// sends next: marking the blocked contact's message read sends him none.
func TestBlockFromAnotherProcessStopsReadReceipts(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	home := t.TempDir() + "/alice"
	alice := openClientIn(t, st, au, home)
	bob := openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)
	mustSend(t, bob, "alice", "read me")
	receiveN(t, alice, 1)
	unread, err := alice.Unread(ctx)
	if err != nil || len(unread) != 1 {
		t.Fatalf("unread: %v, %v", unread, err)
	}
	other := openClientIn(t, st, au, home, func(c *Config) { c.Client.NATSURL = "" })
	if err := other.Block(ctx, bu.Key); err != nil {
		t.Fatal(err)
	}
	if err := alice.MarkRead(ctx, unread...); err != nil {
		t.Fatal(err)
	}
	if err := alice.Shutdown(ctx); err != nil { // waits for the background sends
		t.Fatal(err)
	}
	if n := alice.Stats().ReadReceiptsSent; n != 0 {
		t.Errorf("%d read receipts sent to a contact blocked by another client", n)
	}
}

// A request whose handle was confirmed before that handle went to another
// key: once the user adds the handle as a contact (the new key), the old
// key's request row no longer shows the contact's handle, and the old
// key's next message does not flag the new contact as a key change (it
// did while the stale answer was remembered).
func TestRequestHandleStaleAfterContactAdded(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	alice := openClient(t, st, au)
	ctx := testCtx(t)
	old := newStrangerUser(t, st, "bob", "") // holds bob@ for now
	old.send(t, au, []byte("I am bob"))
	receiveN(t, alice, 1)
	if err := alice.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	if reqs, _ := alice.Requests(ctx); len(reqs) != 1 || reqs[0].PeerHandle != old.u.Handle.String() {
		t.Fatalf("the request before: %+v", reqs)
	}

	st.ReleaseHandle(t, "bob")
	id := stacktest.Identity("bob-now")
	registerAs(t, st, id, old.u.Handle)
	mustAdd(t, alice, "bob")

	cvs, err := alice.Conversations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, cv := range cvs {
		if cv.Request && cv.Handle != "" {
			t.Errorf("the old key's request row shows %q, now the contact's handle", cv.Handle)
		}
	}
	old.send(t, au, []byte("still bob"))
	receiveN(t, alice, 1)
	if ct, err := alice.Contact(ctx, "bob"); err != nil || ct.Flag != FlagNone || ct.Key != id.PublicKey() {
		t.Errorf("the contact after the old key wrote again: %+v, %v", ct, err)
	}
}
