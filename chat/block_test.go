package chat

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// A stranger's flood after the block is acknowledged and dropped: nothing
// is stored, nothing comes back, Stats.Blocked counts it; blocking
// deleted the requests already stored.
func TestBlockDropsAStrangersFlood(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	alice := openClient(t, st, au)
	ctx := testCtx(t)
	s := newStrangerUser(t, st, "spammer", "")
	for i := range 3 {
		s.send(t, au, fmt.Appendf(nil, "buy %d", i))
	}
	receiveN(t, alice, 3)
	if reqs, _ := alice.Requests(ctx); len(reqs) != 3 {
		t.Fatalf("requests before the block: %d", len(reqs))
	}

	if err := alice.Block(ctx, s.u.Key); err != nil {
		t.Fatal(err)
	}
	if err := alice.Block(ctx, s.u.Key); err != nil {
		t.Errorf("blocking twice: %v", err)
	}
	if reqs, _ := alice.Requests(ctx); len(reqs) != 0 {
		t.Errorf("the blocked key's requests were kept: %d", len(reqs))
	}
	if b, err := alice.Blocked(ctx); err != nil || !slices.Equal(b, []kez.PublicKey{s.u.Key}) {
		t.Errorf("Blocked: %v, %v", b, err)
	}

	const flood = 40
	received := alice.Stats().Received
	for i := range flood {
		s.send(t, au, fmt.Appendf(nil, "buy more %d", i))
	}
	receiveUntil(t, alice, "the flood dropped", func(int) bool { return alice.Stats().Blocked >= flood })
	if st := alice.Stats(); st.Blocked != flood || st.Received != received || st.Requests != 3 {
		t.Errorf("after the flood: %+v", st)
	}
	if reqs, _ := alice.Requests(ctx); len(reqs) != 0 {
		t.Errorf("requests stored from a blocked key: %d", len(reqs))
	}
	// Acknowledged, not left to come again.
	if n := mustSync(t, alice); n != 0 || alice.Stats().Blocked != flood {
		t.Errorf("after another sync: %d new, %d blocked", n, alice.Stats().Blocked)
	}
	if _, err := alice.SendKey(ctx, s.u.Key, "no"); !errors.Is(err, ErrBlocked) {
		t.Errorf("sending to a blocked key: %v", err)
	}
	// Unblocking lets the next message in; nothing dropped comes back.
	if err := alice.Unblock(ctx, s.u.Key); err != nil {
		t.Fatal(err)
	}
	s.send(t, au, []byte("hello again"))
	receiveN(t, alice, 1)
	if reqs, _ := alice.Requests(ctx); len(reqs) != 1 || reqs[0].Text() != "hello again" {
		t.Errorf("requests after unblocking: %q", texts(reqs))
	}
	if b, _ := alice.Blocked(ctx); len(b) != 0 {
		t.Errorf("still blocked: %v", b)
	}
}

// Blocking a contact: their messages are dropped, sends to them refused,
// the contact and its history stay; the block survives a restart.
func TestBlockAContact(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	home := t.TempDir() + "/alice"
	alice := openClientIn(t, st, au, home)
	bob := openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)
	mustSend(t, bob, "alice", "before")
	receiveN(t, alice, 1)

	if err := alice.Block(ctx, bu.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, "bob", "hi"); !errors.Is(err, ErrBlocked) {
		t.Errorf("Send to a blocked contact: %v", err)
	}
	if _, err := alice.SendAsync(ctx, "bob", "hi"); !errors.Is(err, ErrBlocked) {
		t.Errorf("SendAsync to a blocked contact: %v", err)
	}
	if _, err := alice.SendKey(ctx, bu.Key, "hi"); !errors.Is(err, ErrBlocked) {
		t.Errorf("SendKey to a blocked contact: %v", err)
	}
	mustSend(t, bob, "alice", "during 1")
	mustSend(t, bob, "alice", "during 2")
	receiveUntil(t, alice, "bob's messages dropped", func(int) bool { return alice.Stats().Blocked >= 2 })
	if h, _ := alice.History(ctx, "bob", 0); !slices.Equal(texts(h), []string{"before"}) {
		t.Errorf("history with a blocked contact: %q", texts(h))
	}
	if ct, err := alice.Contact(ctx, "bob"); err != nil || ct.Key != bu.Key {
		t.Errorf("the contact after the block: %+v, %v", ct, err)
	}

	// Blocked across a restart.
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	alice = openClientIn(t, st, au, home)
	mustSend(t, bob, "alice", "during 3")
	receiveUntil(t, alice, "bob's message dropped after a restart", func(int) bool { return alice.Stats().Blocked >= 1 })
	if _, err := alice.Send(ctx, "bob", "hi"); !errors.Is(err, ErrBlocked) {
		t.Errorf("Send after a restart: %v", err)
	}

	// Unblocked by another client of the same state folder (the CLI
	// beside a running UI): the running one sees it at its next batch.
	other := openClientIn(t, st, au, home, func(c *Config) { c.Client.NATSURL = "" })
	if err := other.Unblock(ctx, bu.Key); err != nil {
		t.Fatal(err)
	}
	mustSend(t, bob, "alice", "after")
	receiveN(t, alice, 1)
	if h, _ := alice.History(ctx, "bob", 0); !slices.Equal(texts(h), []string{"before", "after"}) {
		t.Errorf("history after unblocking: %q", texts(h))
	}
	mustSend(t, alice, "bob", "welcome back")
}

// The user's own key cannot be blocked, nor the zero key.
func TestBlockSelfIsRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	alice := openClient(t, st, au, func(c *Config) { c.Client.NATSURL = "" })
	ctx := testCtx(t)
	if err := alice.Block(ctx, au.Key); !errors.Is(err, ErrBlockSelf) {
		t.Errorf("blocking yourself: %v", err)
	}
	if err := alice.Block(ctx, kez.PublicKey{}); err == nil {
		t.Error("blocked the zero key")
	}
	if b, _ := alice.Blocked(ctx); len(b) != 0 {
		t.Errorf("blocked: %v", b)
	}
}

// Blocking a person's key blocks all their devices: a message from a
// linked device of a blocked stranger is dropped too.
func TestBlockCoversEveryDevice(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, mallory := newPerson(t, st, "alice", 1), newPerson(t, st, "mallory", 2)
	a, m1, m2 := alice.devices[0], mallory.devices[0], mallory.devices[1]
	ctx := testCtx(t)
	if _, err := m1.SendKey(ctx, alice.user.Key, "from the primary"); err != nil {
		t.Fatal(err)
	}
	receiveN(t, a, 1)
	if err := a.Block(ctx, mallory.user.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := m2.SendKey(ctx, alice.user.Key, "from the phone"); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, a, "the phone's message dropped", func(int) bool { return a.Stats().Blocked >= 1 })
	if reqs, _ := a.Requests(ctx); len(reqs) != 0 {
		t.Errorf("requests from a blocked person's device: %q", texts(reqs))
	}
}
