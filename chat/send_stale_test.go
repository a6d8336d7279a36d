package chat

import (
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
)

// A long-running contact whose pin of alice is fresh (so it would not
// fetch her chain again for an hour) sends at once after she linked a
// device: the gate refuses the copy for her stale device list, bob's
// client fetches her chain, records the message due to the new device
// and publishes the refused copy again. Each of her devices gets the
// message exactly once.
func TestStaleDevicesNewDeviceGetsTheMessage(t *testing.T) {
	st, alice, a, b := pinnedForAnHour(t)
	dev := st.AddDevice(t, alice.user, "alice-phone")
	phone := openDevice(t, st, alice.user, dev, "phone")
	if ct, err := b.Contact(testCtx(t), "alice"); err != nil || len(ct.Devices) > 1 {
		t.Fatalf("bob's pin of alice already shows the phone: %+v, %v", ct, err)
	}
	sent := mustSend(t, b, "alice", "hello, both of you")
	if ct, err := b.Contact(testCtx(t), "alice"); err != nil || len(ct.Devices) != 2 {
		t.Fatalf("bob did not fetch alice's chain again after the refusal: %+v, %v", ct, err)
	}
	if !strings.Contains(b.log.String(), "the recipient's devices changed") {
		t.Fatal("the gate did not refuse bob's digest")
	}
	if s := b.Stats(); s.CopiesDue != 1 {
		t.Fatalf("copies due: %d, want 1 (the phone's)", s.CopiesDue)
	}
	if _, _, err := b.SendDueCopies(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// The phone has no contacts yet (no history was sent to it): bob's
	// message is a request there.
	all := func(c *testClient) []*Entry {
		rq, err := c.Requests(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		return append(mustInbox(t, c, true), rq...)
	}
	count := func(c *testClient) int {
		n := 0
		for _, e := range all(c) {
			if e.ID == sent.ID && e.Text() == "hello, both of you" {
				n++
			}
		}
		return n
	}
	for _, c := range []*testClient{a, phone} {
		receiveUntil(t, c, "bob's message", func(int) bool { return count(c) > 0 })
		if n := count(c); n != 1 {
			t.Fatalf("a device of alice has the message %d times", n)
		}
		if s := c.Stats(); s.Received != 1 || s.Duplicates != 0 {
			t.Fatalf("a device of alice received %d messages, %d duplicates", s.Received, s.Duplicates)
		}
	}
	// The next message needs no refusal: the pin is fresh (a refusal
	// would be logged again, even though the copy then goes without the
	// header).
	refusals := strings.Count(b.log.String(), "the recipient's devices changed")
	mustSend(t, b, "alice", "again")
	if s := b.Stats(); s.CopiesDue != 1 {
		t.Fatalf("copies due after the second send: %d", s.CopiesDue)
	}
	if n := strings.Count(b.log.String(), "the recipient's devices changed"); n != refusals {
		t.Fatalf("the second send was refused too (%d refusals logged, %d before)", n, refusals)
	}
}

// The registry learns of a device before the chain shows it (the link
// was registered at the chat-server, not yet appended at the
// sig-server): the gate refuses bob's digest, his refreshed chain shows
// no change, and he publishes the copy again without a digest, as an
// older client does. The message is stored once, sent.
func TestStaleDevicesRegistryAheadOfChain(t *testing.T) {
	st, alice, a, b := pinnedForAnHour(t)
	_, req := stacktest.NewDeviceRequest(t, "alice-phone")
	st.RegisterDeviceLink(t, deviceLink(t, st, alice.user, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req)))
	sent := mustSend(t, b, "alice", "to the device I know")
	if sent.Duplicate {
		t.Fatal("a duplicate")
	}
	if ct, err := b.Contact(testCtx(t), "alice"); err != nil || len(ct.Devices) > 1 {
		t.Fatalf("bob's pin of alice: %+v, %v", ct, err)
	}
	if !strings.Contains(b.log.String(), "the recipient's devices changed") {
		t.Fatal("the gate did not refuse bob's digest")
	}
	if s := b.Stats(); s.CopiesDue != 0 {
		t.Fatalf("copies due: %d", s.CopiesDue)
	}
	receiveN(t, a, 1)
	if in := mustInbox(t, a, true); len(in) != 1 || in[0].ID != sent.ID {
		t.Fatalf("alice's inbox: %+v", in)
	}
}

// pinnedForAnHour starts a stack with alice and bob, each the other's
// contact; bob's client checks his contacts' chains once an hour.
func pinnedForAnHour(t *testing.T) (st *stacktest.Stack, alice *person, a, b *testClient) {
	t.Helper()
	st = stacktest.Start(t, stacktest.Options{})
	hour := func(c *Config) { c.RefreshInterval = time.Hour }
	alice, bob := newPerson(t, st, "alice", 1), newPerson(t, st, "bob", 1, hour)
	a, b = alice.devices[0], bob.devices[0]
	mustAdd(t, a, "bob")
	mustAdd(t, b, "alice")
	return st, alice, a, b
}
