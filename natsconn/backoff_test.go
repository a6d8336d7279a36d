package natsconn_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
)

func TestBackoffBound(t *testing.T) {
	b := natsconn.DefaultBackoff
	for _, c := range []struct {
		attempt int
		want    time.Duration
	}{
		{-3, 250 * time.Millisecond}, {0, 250 * time.Millisecond}, {1, 250 * time.Millisecond},
		{2, 500 * time.Millisecond}, {3, time.Second}, {6, 8 * time.Second},
		{7, 10 * time.Second}, {100, 10 * time.Second}, {1 << 30, 10 * time.Second},
	} {
		if got := b.Bound(c.attempt); got != c.want {
			t.Errorf("Bound(%d) = %s, want %s", c.attempt, got, c.want)
		}
	}
	if got := (natsconn.Backoff{}).Bound(5); got != 1 {
		t.Errorf("zero Backoff: Bound(5) = %s, want 1ns", got)
	}
}

// 100,000 clients lose their server at the same moment: their waits before
// each round spread evenly over the round's window, none outside it, so
// the server sees a steady stream of logins rather than a wall of them.
// The random source is seeded: the test gives the same figures every run.
func TestBackoffSpreadsClients(t *testing.T) {
	const clients, buckets = 100_000, 20
	src := rand.New(rand.NewPCG(21, 21))
	b := natsconn.Backoff{Min: natsconn.DefaultBackoff.Min, Max: natsconn.DefaultBackoff.Max, Rand: src.Int64N}
	for attempt := 1; attempt <= 8; attempt++ {
		bound := b.Bound(attempt)
		var hist [buckets]int
		for range clients {
			d := b.Delay(attempt)
			if d < 0 || d >= bound {
				t.Fatalf("round %d: a wait of %s, outside [0, %s)", attempt, d, bound)
			}
			hist[int(d*buckets/bound)]++
		}
		// Evenly spread: every 1/20 of the window holds 5% of the clients,
		// give or take a fifth (a lockstep would put them all in one).
		for i, n := range hist {
			if n < clients/buckets*4/5 || n > clients/buckets*6/5 {
				t.Errorf("round %d: %d of %d clients wait %s–%s, want about %d", attempt, n, clients,
					bound*time.Duration(i)/buckets, bound*time.Duration(i+1)/buckets, clients/buckets)
			}
		}
	}
}

// A hostile or broken random source cannot make a client spin or stall:
// Delay asks it only for numbers below the bound, and nats.go waits what
// it returns.
func TestBackoffAsksWithinBound(t *testing.T) {
	var asked []int64
	b := natsconn.Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond, Rand: func(n int64) int64 {
		asked = append(asked, n)
		return n - 1
	}}
	for attempt := 1; attempt <= 5; attempt++ {
		b.Delay(attempt)
	}
	want := []int64{1e6, 2e6, 4e6, 4e6, 4e6}
	for i := range want {
		if asked[i] != want[i] {
			t.Fatalf("asked for numbers below %v, want %v", asked, want)
		}
	}
}

// The backoff is what a real connection waits between rounds: after its
// server goes away, nats.go asks it for each round's wait.
func TestBackoffOptionUsedOnReconnect(t *testing.T) {
	srv, dir := calloutServer(t)
	alice := identity(t)
	dir.Set(alice.PublicKey(), callout.Entry{Handle: "alice@kez.lat"})
	rounds := make(chan int64, 64)
	b := natsconn.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond, Rand: func(n int64) int64 {
		select {
		case rounds <- n:
		default:
		}
		return 0
	}}
	reconnected := make(chan struct{}, 1)
	nc, err := natsconn.Connect(context.Background(), srv.ClientURL(), alice, b.Option(),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	srv.Restart()
	select {
	case n := <-rounds:
		if n != int64(time.Millisecond) {
			t.Errorf("the first round's bound is %s, want 1ms", time.Duration(n))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the backoff was never asked for a wait")
	}
	select {
	case <-reconnected:
	case <-time.After(30 * time.Second):
		t.Fatal("no reconnect after the server restarted")
	}
}

// A program with many connections of its own (a bridge for thousands of
// users) may widen the windows; each round's bound doubles up to Max.
func ExampleBackoff() {
	b := natsconn.Backoff{Min: time.Second, Max: 30 * time.Second}
	for attempt := 1; attempt <= 6; attempt++ {
		fmt.Print(b.Bound(attempt), " ")
	}
	fmt.Println()
	// nc, err := natsconn.Connect(ctx, url, id, b.Option())
	// Output:
	// 1s 2s 4s 8s 16s 30s
}
