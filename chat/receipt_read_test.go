package chat

import (
	"fmt"
	"slices"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// receiptEvents collects what Config.OnReceipt is told.
type receiptEvents chan ReceiptEvent

func (ch receiptEvents) opt(c *Config) {
	c.OnReceipt = func(ev ReceiptEvent) { ch <- ev }
}

// none fails if an event was told.
func (ch receiptEvents) none(t *testing.T, why string) {
	t.Helper()
	select {
	case ev := <-ch:
		t.Errorf("%s: an event %+v", why, ev)
	default:
	}
}

// sendReceiptAs has c send a receipt, as its client would, to its contact
// handle: the attacker's tool for forging and replaying receipts.
func sendReceiptAs(t *testing.T, c *testClient, handle string, rc Receipt) {
	t.Helper()
	cs, err := c.contact(testCtx(t), handle)
	if err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	ct, devs := cs.c, cs.devices
	c.mu.Unlock()
	m, err := rc.message()
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.publish(testCtx(t), c.contactTargets(&ct, devs), m, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// sentTo returns alice's sent messages to handle, oldest first.
func sentTo(t *testing.T, c *testClient, handle string) []*Entry {
	t.Helper()
	h, err := c.History(testCtx(t), handle, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []*Entry
	for _, e := range h {
		if !e.Incoming {
			out = append(out, e)
		}
	}
	return out
}

// Read receipts end to end: bob reads, alice's messages get ReadAt and
// OnReceipt is told; a third user who learnt the IDs cannot mark them
// read; a replayed read receipt changes nothing.
func TestReadReceipts(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	events := make(receiptEvents, 16)
	alice := openClient(t, st, au, events.opt)
	bob := openClient(t, st, bu)
	carol := openClient(t, st, cu)
	mustAdd(t, alice, "bob")
	mustAdd(t, alice, "carol")
	mustAdd(t, bob, "alice")
	mustAdd(t, carol, "alice")
	ctx := testCtx(t)
	for _, s := range []string{"one", "two", "three"} {
		mustSend(t, alice, "bob", s)
	}
	receiveN(t, bob, 3)
	// Bob's delivery receipts: DeliveredAt, and events naming the three.
	receiveUntil(t, alice, "the delivery receipts", func(int) bool {
		s := sentTo(t, alice, "bob")
		return !s[0].DeliveredAt.IsZero() && !s[1].DeliveredAt.IsZero() && !s[2].DeliveredAt.IsZero()
	})
	sent := sentTo(t, alice, "bob")
	if told := events.ids(t, bu.Key, ReceiptDelivered); !sameIDs(told, ids(sent)) {
		t.Errorf("delivery events named %v, want %v", told, ids(sent))
	}
	for _, e := range sent {
		if !e.ReadAt.IsZero() {
			t.Errorf("%q read before bob read it", e.Text())
		}
	}

	// carol learnt the IDs and says she read them: nothing changes.
	got := alice.Stats().ReceiptsReceived
	sendReceiptAs(t, carol, "alice", Receipt{Status: ReceiptRead, IDs: ids(sent)})
	receiveUntil(t, alice, "carol's receipt", func(int) bool { return alice.Stats().ReceiptsReceived > got })
	for _, e := range sentTo(t, alice, "bob") {
		if !e.ReadAt.IsZero() {
			t.Errorf("carol marked %q read", e.Text())
		}
	}
	events.none(t, "a foreign read receipt")

	// bob reads two of them.
	unread, err := bob.Unread(ctx)
	if err != nil || len(unread) != 3 {
		t.Fatalf("bob's unread: %d, %v", len(unread), err)
	}
	if err := bob.MarkRead(ctx, unread[:2]...); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, alice, "the read receipt", func(int) bool {
		s := sentTo(t, alice, "bob")
		return !s[0].ReadAt.IsZero() && !s[1].ReadAt.IsZero()
	})
	sent = sentTo(t, alice, "bob")
	if !sent[2].ReadAt.IsZero() {
		t.Errorf("the unread message is read: %v", sent[2].ReadAt)
	}
	if told := events.ids(t, bu.Key, ReceiptRead); !sameIDs(told, ids(sent[:2])) {
		t.Errorf("read events named %v, want %v", told, ids(sent[:2]))
	}

	// Marking them read again sends nothing more.
	before := bob.Stats().ReadReceiptsSent
	if before == 0 {
		t.Error("no read receipt counted")
	}
	if err := bob.MarkRead(ctx, unread[:2]...); err != nil {
		t.Fatal(err)
	}
	if err := bob.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if n := bob.Stats().ReadReceiptsSent; n != before {
		t.Errorf("marking read again sent %d receipts", n-before)
	}

	// A replayed read receipt (bob's own, sent again) changes nothing.
	bob2 := openClient(t, st, bu)
	mustAdd(t, bob2, "alice")
	got = alice.Stats().ReceiptsReceived
	sendReceiptAs(t, bob2, "alice", Receipt{Status: ReceiptRead, IDs: ids(sent[:2])})
	receiveUntil(t, alice, "the replayed receipt", func(int) bool { return alice.Stats().ReceiptsReceived > got })
	for i, e := range sentTo(t, alice, "bob")[:2] {
		if !e.ReadAt.Equal(sent[i].ReadAt) {
			t.Errorf("a replayed receipt moved ReadAt of %q: %v, was %v", e.Text(), e.ReadAt, sent[i].ReadAt)
		}
	}
	events.none(t, "a replayed read receipt")
}

// ids takes what was told for person with status, as long as events
// come.
func (ch receiptEvents) ids(t *testing.T, person kez.PublicKey, status string) []MessageID {
	t.Helper()
	var out []MessageID
	for {
		select {
		case ev := <-ch:
			if ev.Peer != person || ev.Status != status {
				t.Errorf("an event %+v, want %s from %s", ev, status, person)
			}
			out = append(out, ev.IDs...)
		default:
			return out
		}
	}
}

func sameIDs(a, b []MessageID) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	cmp := func(x, y MessageID) int { return slices.Compare(x[:], y[:]) }
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}

// No read receipt for a request nor for a held message; none at all with
// Config.NoReadReceipts.
func TestNoReadReceipts(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(fmt.Sprintf("NoReadReceipts=%v", off), func(t *testing.T) {
			st := stacktest.Start(t, stacktest.Options{})
			au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
			alice := openClient(t, st, au, func(c *Config) { c.NoReadReceipts = off })
			bob := openClient(t, st, bu)
			carol := openClient(t, st, cu)
			mustAdd(t, alice, "bob")
			mustAdd(t, bob, "alice")
			ctx := testCtx(t)
			mustSend(t, bob, "alice", "from a contact")
			mustSend(t, bob, "alice", "held")
			if _, err := carol.SendKey(ctx, au.Key, "from a stranger"); err != nil {
				t.Fatal(err)
			}
			receiveN(t, alice, 3)
			// The second as if bob's key had changed meanwhile.
			if _, err := alice.db.db.Exec(`UPDATE messages SET trust = 'held' WHERE body = ?`, []byte("held")); err != nil {
				t.Fatal(err)
			}
			reqs, _ := alice.Requests(ctx)
			held, _ := alice.Held(ctx)
			unread, _ := alice.Unread(ctx)
			if len(reqs) != 1 || len(held) != 1 || len(unread) != 1 {
				t.Fatalf("%d requests, %d held, %d unread", len(reqs), len(held), len(unread))
			}
			if err := alice.MarkRead(ctx, append(append(reqs, held...), unread...)...); err != nil {
				t.Fatal(err)
			}
			if err := alice.Shutdown(ctx); err != nil { // waits for the receipts under way
				t.Fatal(err)
			}
			want := uint64(1)
			if off {
				want = 0
			}
			if n := alice.Stats().ReadReceiptsSent; n != want {
				t.Errorf("%d read receipts sent, want %d", n, want)
			}
			mustSync(t, carol)
			if s := sentTo(t, carol, au.Key.String()); len(s) != 1 || !s[0].DeliveredAt.IsZero() || !s[0].ReadAt.IsZero() {
				t.Errorf("carol's request: %+v", s)
			}
			receiveUntil(t, bob, "alice's receipts", func(int) bool { return bob.Stats().ReceiptsReceived >= 1+want })
			s := sentTo(t, bob, "alice")
			if len(s) != 2 || s[0].DeliveredAt.IsZero() || s[0].ReadAt.IsZero() == !off || !s[1].ReadAt.IsZero() {
				t.Errorf("bob's messages: read %v and %v", s[0].ReadAt, s[1].ReadAt)
			}
		})
	}
}

// A read receipt counts as delivered even when no delivery receipt came
// first (what an older client, which knows only delivered, also does).
func TestReadReceiptAlsoDelivers(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au)
	bob := openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	s := mustSend(t, alice, "bob", "hi")
	sendReceiptAs(t, bob, "alice", Receipt{Status: ReceiptRead, IDs: []MessageID{s.ID}})
	receiveUntil(t, alice, "the read receipt", func(int) bool { return alice.Stats().ReceiptsReceived > 0 })
	e := sentTo(t, alice, "bob")[0]
	if e.DeliveredAt.IsZero() || e.ReadAt.IsZero() || !e.DeliveredAt.Equal(e.ReadAt) {
		t.Errorf("delivered %v, read %v", e.DeliveredAt, e.ReadAt)
	}
}

// A read receipt from any device of the recipient person counts.
func TestReadReceiptFromAnotherDevice(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPerson(t, st, "alice", 1), newPerson(t, st, "bob", 2)
	a, b1, b2 := alice.devices[0], bob.devices[0], bob.devices[1]
	mustAdd(t, a, "bob")
	mustAdd(t, b1, "alice")
	waitContact(t, b2, "alice", func(*Contact) bool { return true })
	mustSend(t, a, "bob", "read me on your phone")
	receiveN(t, b2, 1)
	unread, err := b2.Unread(testCtx(t))
	if err != nil || len(unread) != 1 {
		t.Fatalf("unread on bob's phone: %d, %v", len(unread), err)
	}
	if err := b2.MarkRead(testCtx(t), unread...); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, a, "the read receipt from bob's phone", func(int) bool { return !sentTo(t, a, "bob")[0].ReadAt.IsZero() })
}
