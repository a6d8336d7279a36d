package callout_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats-server/v2/server"
)

// heldDirectory holds its first lookup until released (or the lookup's
// context ends); later lookups answer at once.
type heldDirectory struct {
	callout.Directory
	once     sync.Once
	entered  chan struct{}
	released chan struct{}
}

func newHeldDirectory(d callout.Directory) *heldDirectory {
	return &heldDirectory{Directory: d, entered: make(chan struct{}), released: make(chan struct{})}
}

func (d *heldDirectory) Lookup(ctx context.Context, key kez.PublicKey) (callout.Entry, error) {
	first := false
	d.once.Do(func() { first = true })
	if first {
		close(d.entered)
		select {
		case <-d.released:
		case <-ctx.Done():
			return callout.Entry{}, ctx.Err()
		}
	}
	return d.Directory.Lookup(ctx, key)
}

// startServiceWith starts a replica whose directory is dir.
func (s *stack) startServiceWith(dir callout.Directory) *callout.Service {
	s.t.Helper()
	cfg := s.cfg
	s.cfg.Directory = dir
	defer func() { s.cfg = cfg }()
	return s.startService()
}

// authSubscribers counts the members of the callout's queue group the
// server knows.
func (s *stack) authSubscribers() int {
	s.t.Helper()
	sz, err := s.srv.Server().Subsz(&server.SubszOptions{Subscriptions: true, Limit: 1 << 16})
	if err != nil {
		s.t.Fatal(err)
	}
	n := 0
	for _, sub := range sz.Subs {
		if sub.Subject == callout.AuthSubject {
			n++
		}
	}
	return n
}

// A replica told to drain leaves the queue group at once, so the logins
// that come meanwhile go to the other replica, and still answers the
// login it was deciding: no login is refused across the hand-over.
func TestDrainHandsOverAndFinishes(t *testing.T) {
	s := newStack(t, stackOptions{
		config:  callout.ConfigOptions{AuthTimeout: 30 * time.Second},
		service: callout.Config{LookupTimeout: 30 * time.Second, Workers: 1},
	})
	if err := s.svc.Close(); err != nil {
		t.Fatal(err)
	}
	held := newHeldDirectory(s.dir)
	first := s.startServiceWith(held)
	alice := s.user("alice@kez.lat")
	inFlight := make(chan error, 1)
	go func() {
		c, err := s.connect(alice)
		if err == nil {
			c.Close()
		}
		inFlight <- err
	}()
	<-held.entered // the first replica is deciding alice's login
	second := s.startService()

	drained := make(chan error, 1)
	go func() { drained <- first.Drain(context.Background()) }()
	eventually(t, 10*time.Second, "the draining replica left the queue group", func() bool { return s.authSubscribers() == 1 })
	bob := s.user("bob@kez.lat")
	for range 5 {
		s.mustConnect(bob).Close()
	}
	select {
	case err := <-drained:
		t.Fatalf("Drain returned (%v) with a login still being decided", err)
	default:
	}
	close(held.released)
	if err := <-inFlight; err != nil {
		t.Fatalf("the login in flight when the drain began: %v", err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if a1, a2 := first.Stats().Authorized, second.Stats().Authorized; a1 != 1 || a2 != 5 {
		t.Fatalf("the draining replica authorized %d, the other %d; want 1 and 5", a1, a2)
	}
	if err := first.Listen(nil); err == nil {
		t.Fatal("a drained service listened again")
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close after Drain: %v", err)
	}
	if err := first.Drain(context.Background()); err != nil {
		t.Fatalf("Drain twice: %v", err)
	}
}

// A login that hangs in the directory cannot hold a replica's drain (and
// so its exit) past the lookup timeout; Drain then says its time ran out.
func TestDrainBoundedByContext(t *testing.T) {
	s := newStack(t, stackOptions{
		config:  callout.ConfigOptions{AuthTimeout: 30 * time.Second},
		service: callout.Config{LookupTimeout: 2 * time.Second, Workers: 1},
	})
	if err := s.svc.Close(); err != nil {
		t.Fatal(err)
	}
	held := newHeldDirectory(s.dir) // never released
	first := s.startServiceWith(held)
	alice := s.user("alice@kez.lat")
	go func() {
		if c, err := s.connect(alice); err == nil {
			c.Close()
		}
	}()
	<-held.entered
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := first.Drain(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "callout: draining") {
		t.Fatalf("got %v, want the drain's deadline", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Drain took %s with a 50ms deadline and a 2s lookup timeout", d)
	}
}

// eventually polls cond (the state of a real server, which no channel
// reports) until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
