package ratelimit

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
)

func newClock() *limittest.Clock {
	c := &limittest.Clock{}
	c.Add(0)
	return c
}

func TestParseLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Limit
	}{
		{"10/1h", Limit{10, time.Hour}},
		{"600/h", Limit{600, time.Hour}},
		{" 1200 / 1m ", Limit{1200, time.Minute}},
		{"5/30s", Limit{5, 30 * time.Second}},
		{"3/1h30m", Limit{3, 90 * time.Minute}},
		{"off", Unlimited},
		{"0", Unlimited},
		{"Unlimited", Unlimited},
	} {
		got, err := ParseLimit(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseLimit(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if again, err := ParseLimit(got.String()); err != nil || again != got {
			t.Errorf("ParseLimit(%q.String() = %q) = %v, %v", tc.in, got.String(), again, err)
		}
	}
	for _, bad := range []string{"", "10", "/1h", "x/1h", "-1/1h", "0/1h", "10/", "10/0s", "10/-1h", "10/fortnight", "1.5/1h"} {
		if l, err := ParseLimit(bad); !errors.Is(err, ErrBadLimit) {
			t.Errorf("ParseLimit(%q) = %v, %v; want ErrBadLimit", bad, l, err)
		}
	}
	if s := (Limit{10, time.Hour}).String(); s != "10/1h" {
		t.Errorf("String = %q", s)
	}
	if !(Limit{}).IsZero() || (Limit{}).Off() || !Unlimited.Off() || (Limit{}).Or(Limit{1, time.Second}) != (Limit{1, time.Second}) {
		t.Error("zero, Off or Or is wrong")
	}
}

// TestLimiterBurstRefillRetryAfter takes the burst, is refused with the
// exact wait, is still refused just before it and allowed at it.
func TestLimiterBurstRefillRetryAfter(t *testing.T) {
	c := newClock()
	l := New(Limit{N: 10, Per: time.Hour}, Options{Now: c.Now, Endpoint: "claim", Reason: "ip"})
	for i := range 10 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("request %d of the burst refused", i+1)
		}
	}
	ok, wait := l.Allow("a")
	if ok || wait != 6*time.Minute {
		t.Fatalf("11th request: %v, wait %v; want refused, 6m (one token per 6 minutes)", ok, wait)
	}
	if ok, _ := l.Allow("b"); !ok {
		t.Fatal("another key shares the bucket")
	}
	c.Add(wait - time.Second)
	if ok, w := l.Allow("a"); ok || w != time.Second {
		t.Fatalf("a second before Retry-After: %v, wait %v", ok, w)
	}
	c.Add(time.Second)
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("refused after waiting Retry-After")
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("one wait gave more than one token")
	}
	c.Add(24 * time.Hour) // refills to the burst, not beyond
	for i := range 10 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatalf("after a day, request %d refused", i+1)
		}
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("the bucket refilled beyond its size")
	}
	st := l.Stats()
	if st.Limited != 4 || st.Endpoint != "claim" || st.Reason != "ip" {
		t.Fatalf("stats %+v, want 4 limited", st)
	}
}

func TestLimiterOff(t *testing.T) {
	var nilLimiter *Limiter
	for _, l := range []*Limiter{nilLimiter, New(Unlimited, Options{}), New(Limit{N: 3}, Options{})} {
		for range 1000 {
			if ok, _ := l.Allow("a"); !ok {
				t.Fatalf("%v refused", l.Limit())
			}
		}
		if l.Stats().Tracked != 0 {
			t.Fatal("an unlimited limiter tracks keys")
		}
	}
}

// TestLimiterMemoryBound floods a limiter with 200,000 distinct client
// addresses: the table never holds more than MaxKeys, the overflow is
// counted as evictions, and keys that refilled are forgotten for free.
func TestLimiterMemoryBound(t *testing.T) {
	c := newClock()
	const maxKeys = 1000
	l := New(Limit{N: 5, Per: time.Hour}, Options{Now: c.Now, MaxKeys: maxKeys})
	// Positive control: without the bound the table would grow with
	// every address.
	unbounded := New(Limit{N: 5, Per: time.Hour}, Options{Now: c.Now, MaxKeys: 1 << 30})
	for i := range 5000 {
		unbounded.Allow(fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255))
	}
	if n := unbounded.Stats().Tracked; n != 5000 {
		t.Fatalf("control: %d keys tracked, want 5000", n)
	}
	for i := range 200_000 {
		key := fmt.Sprintf("10.%d.%d.%d", i>>16, i>>8&255, i&255)
		if ok, _ := l.Allow(key); !ok {
			t.Fatalf("a fresh key %s was refused", key)
		}
		if i%1000 == 0 {
			if n := l.Stats().Tracked; n > maxKeys {
				t.Fatalf("after %d keys the table holds %d > %d", i+1, n, maxKeys)
			}
		}
	}
	st := l.Stats()
	if st.Tracked != maxKeys || st.Evicted != 200_000-maxKeys {
		t.Fatalf("stats %+v, want %d tracked and %d evicted", st, maxKeys, 200_000-maxKeys)
	}
	// A key hammering its own bucket stays limited while the flood goes
	// on around it: it is always the most recently used.
	for range 5 {
		l.Allow("attacker")
	}
	for i := range maxKeys - 1 {
		l.Allow(fmt.Sprintf("flood-%d", i))
		if i%100 == 0 {
			if ok, _ := l.Allow("attacker"); ok {
				t.Fatal("the attacker's bucket was evicted by the flood")
			}
		}
	}
	// Once everything has refilled, every request forgets two full
	// buckets, so the table shrinks back by itself.
	c.Add(2 * time.Hour)
	for i := range maxKeys / 2 {
		l.Allow(fmt.Sprintf("late-%d", i))
	}
	if n := l.Stats().Tracked; n > maxKeys/2+1 {
		t.Fatalf("%d keys tracked after everything refilled, want at most %d", n, maxKeys/2+1)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l := New(Limit{N: 100, Per: time.Hour}, Options{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if ok, _ := l.Allow("k"); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if allowed != 100 {
		t.Fatalf("%d of 400 concurrent requests allowed, want exactly the burst of 100", allowed)
	}
}

// TestLimiterRefund: a refunded request does not count; a refund never
// lifts a bucket past its burst.
func TestLimiterRefund(t *testing.T) {
	c := newClock()
	l := New(Limit{N: 2, Per: time.Hour}, Options{Now: c.Now})
	l.Refund("a") // unknown key: nothing to do
	for range 2 {
		if ok, _ := l.Allow("a"); !ok {
			t.Fatal("burst refused")
		}
	}
	if ok, _ := l.Allow("a"); ok {
		t.Fatal("past the burst")
	}
	l.Refund("a")
	if ok, _ := l.Allow("a"); !ok {
		t.Fatal("a refunded token was not there")
	}
	for range 5 {
		l.Refund("a")
	}
	for i := range 3 {
		if ok, _ := l.Allow("a"); ok != (i < 2) {
			t.Fatalf("request %d after many refunds: %v", i, ok)
		}
	}
}
