package systemtest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
)

// run starts c's receive loop with handler; it stops in t.Cleanup.
func (c *client) run(t testing.TB, handler func(*chat.Entry)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx, handler) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s's receive loop: %v", c.u.name, err)
		}
	})
}

// befriend makes a and b contacts of each other.
func befriend(t testing.TB, a, b *client) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	if _, err := a.AddContact(ctx, b.u.handle.String()); err != nil {
		t.Fatalf("%s adds %s: %v", a.u.name, b.u.name, err)
	}
	if _, err := b.AddContact(ctx, a.u.handle.String()); err != nil {
		t.Fatalf("%s adds %s: %v", b.u.name, a.u.name, err)
	}
}

// TestNATSKilledMidStream kills the NATS process with SIGKILL while
// alice sends to bob, and starts it again on the same port and store:
// both clients reconnect by themselves, every message the stream
// acknowledged reaches bob, and none is shown to him twice.
func TestNATSKilledMidStream(t *testing.T) {
	t.Parallel() // mostly waiting on other processes
	sys := startSystem(t, sysOptions{})
	alice, bob := sys.open(t, sys.register(t, "alice"), ""), sys.open(t, sys.register(t, "bob"), "")
	befriend(t, alice, bob)
	tl := newTally()
	bob.run(t, tl.handler(bob.u.key))

	const total = 90
	var (
		mu       sync.Mutex
		sendErrs []string
		acked    = make(chan int, total)
		done     = make(chan struct{})
	)
	go func() { // alice sends without pause while the broker dies under her
		defer close(done)
		for i := range total {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			s, err := alice.Send(ctx, "bob@"+domain, fmt.Sprintf("message %d", i))
			cancel()
			tl.sent(alice.u.key, bob.u.key, s, err)
			if err != nil {
				mu.Lock()
				sendErrs = append(sendErrs, err.Error())
				mu.Unlock()
			}
			acked <- i
		}
	}()
	for i := range total {
		<-acked
		if i == total/3 || i == 2*total/3 {
			sys.proc.Kill() // sends are in flight
			sys.proc.Restart()
			sys.waitChatReady(t, 0)
		}
	}
	<-done
	f := tl.waitDelivered(t, 60*time.Second)
	t.Logf("NATS SIGKILL ×2 during %d sends: %s; send errors: %q; bob's client stats %+v", total, f, sendErrs, bob.Stats())
	if f.Lost != 0 || f.Duplicated != 0 {
		t.Fatalf("lost %d, duplicated %d", f.Lost, f.Duplicated)
	}
	if f.Acked < total-len(sendErrs) {
		t.Fatalf("only %d of %d sends acknowledged", f.Acked, total)
	}
	// The history holds each message once.
	es, err := bob.Inbox(testCtx(t, 10*time.Second), true)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[chat.MessageID]bool{}
	for _, e := range es {
		if seen[e.ID] {
			t.Fatalf("message %s is twice in bob's inbox", e.ID)
		}
		seen[e.ID] = true
	}
	if len(es) != f.Delivered {
		t.Fatalf("bob's inbox holds %d messages, his handler saw %d", len(es), f.Delivered)
	}
}
