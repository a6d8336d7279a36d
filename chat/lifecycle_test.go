package chat

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// runLoop starts c.Run with handler and returns the channel of its result.
func runLoop(c *testClient, handler func(*Entry)) <-chan error {
	done := make(chan error, 1)
	go func() { done <- c.Run(context.Background(), handler) }()
	return done
}

// Run returns ErrClosed promptly when the client is closed while it
// receives, and every call that needs the client says it is closed.
func TestRunReturnsErrClosedOnClose(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	got := make(chan *Entry, 1)
	run := runLoop(bob, func(e *Entry) { got <- e })
	// Run is receiving once it handed on a message.
	mustSend(t, alice, "bob", "hello")
	select {
	case <-got:
	case <-time.After(stacktest.Prompt):
		t.Fatal("bob's Run never handed on the message")
	}
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	if err := stacktest.Returns(t, "Run after Close", run); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
	ctx := testCtx(t)
	if err := bob.Run(ctx, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Run on a closed client: %v", err)
	}
	if _, err := bob.Sync(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync on a closed client: %v", err)
	}
	if _, err := bob.Send(ctx, "alice", "hi"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send on a closed client: %v", err)
	}
	if _, err := bob.SendKey(ctx, au.Key, "hi"); !errors.Is(err, ErrClosed) {
		t.Errorf("SendKey on a closed client: %v", err)
	}
	if err := bob.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown after Close: %v", err)
	}
}

// Shutdown lets the work under way finish: the sends in flight are
// acknowledged (none fails with ErrClosed), the Run loop returns ErrClosed
// once it processed what it was given, and the delivery receipts it queued
// are stored before Shutdown returns.
func TestShutdownFinishesWorkInFlight(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)

	// Alice's sends are in flight when she shuts down.
	const n = 20
	var pending []*Pending
	for i := range n {
		p, err := alice.SendAsync(ctx, "bob", "message "+string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	if err := alice.Shutdown(ctx); err != nil {
		t.Fatalf("alice's Shutdown: %v", err)
	}
	for _, p := range pending {
		select {
		case <-p.Done():
		default:
			t.Fatalf("Shutdown returned with message %s in flight", p.ID())
		}
		if _, err := p.Wait(ctx); err != nil {
			t.Errorf("a send in flight at Shutdown: %v", err)
		}
	}
	if _, err := alice.Send(ctx, "bob", "late"); !errors.Is(err, ErrClosed) {
		t.Errorf("Send after Shutdown: %v", err)
	}

	// Bob receives them all in a Run loop, then shuts down.
	got := make(chan *Entry, n)
	run := runLoop(bob, func(e *Entry) { got <- e })
	for range n {
		select {
		case <-got:
		case <-time.After(stacktest.Prompt):
			t.Fatal("bob's Run did not hand on every message")
		}
	}
	if err := bob.Shutdown(ctx); err != nil {
		t.Fatalf("bob's Shutdown: %v", err)
	}
	if err := stacktest.Returns(t, "Run after Shutdown", run); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Shutdown: %v, want ErrClosed", err)
	}
	if s := bob.Stats(); s.ReceiptsSent == 0 {
		t.Errorf("bob shut down without sending the queued receipts: %+v", s)
	}
	// And the acknowledgements of what he stored left with him.
	waitAcked(t, st, bu.Key)

	// The receipts were stored: alice, opened again, sees them at once.
	again := openClientIn(t, st, au, alice.cfg.Client.Home)
	mustSync(t, again)
	h, err := again.History(ctx, "bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h {
		if e.State != StateSent || e.DeliveredAt.IsZero() {
			t.Errorf("alice's copy after both shut down: state %s, delivered %v", e.State, e.DeliveredAt)
		}
	}
}

// Shutdown honours its ctx: with a Run handler that does not return, it
// gives up when ctx ends, closes the client and returns ctx's error; the
// Run loop returns ErrClosed once the handler does, without processing
// more.
func TestShutdownHonoursItsContext(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	inHandler, release := make(chan struct{}), make(chan struct{})
	run := runLoop(bob, func(*Entry) { close(inHandler); <-release })
	mustSend(t, alice, "bob", "hold on")
	select {
	case <-inHandler:
	case <-time.After(stacktest.Prompt):
		t.Fatal("bob's handler never ran")
	}

	ctx, cancel := context.WithCancel(context.Background())
	shut := make(chan error, 1)
	go func() { shut <- bob.Shutdown(ctx) }()
	cancel()
	if err := stacktest.Returns(t, "Shutdown with an ended ctx", shut); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	if _, err := bob.Sync(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Shutdown: %v", err)
	}
	close(release)
	if err := stacktest.Returns(t, "Run after its handler returned", run); !errors.Is(err, ErrClosed) {
		t.Errorf("Run: %v, want ErrClosed", err)
	}
}

// waitAcked waits until key's consumer has nothing waiting and nothing
// unacknowledged: the client's acknowledgements, which go to the gate in
// batches and from there to JetStream, arrived.
func waitAcked(t testing.TB, st *stacktest.Stack, key kez.PublicKey) {
	t.Helper()
	deadline := time.Now().Add(stacktest.Prompt)
	for info := st.ConsumerInfo(t, key); info.NumPending != 0 || info.NumAckPending != 0; info = st.ConsumerInfo(t, key) {
		if time.Now().After(deadline) {
			t.Fatalf("the consumer still has %d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
		}
	}
}

// Close right after a Sync (what a one-shot command does) loses no
// acknowledgement: what Sync stored and acknowledged is handed to the
// connection before it closes, so nothing is delivered again.
func TestCloseAfterSyncAcks(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	const n = 30
	for i := range n {
		mustSend(t, alice, "bob", fmt.Sprint("message ", i))
	}
	receiveN(t, bob, n)
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	waitAcked(t, st, bu.Key)
	if info := st.ConsumerInfo(t, bu.Key); info.AckFloor.Consumer != info.Delivered.Consumer || info.NumRedelivered != 0 {
		t.Errorf("bob's consumer: %+v", info)
	}
}
