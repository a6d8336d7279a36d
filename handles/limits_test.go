package handles

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/ratelimit"
)

// limitedStack is a stack whose registry applies l with a fake clock and
// trusts loopback as its proxy, so a test speaks as any client address
// through X-Forwarded-For.
func limitedStack(t *testing.T, l Limits) (*stack, *limittest.Clock) {
	t.Helper()
	s := newStack(t, "kez.lat")
	clock := &limittest.Clock{}
	l.Now = clock.Now
	l.ClientIP.TrustedProxies = limittest.Loopback()
	srv, err := NewServer(ServerConfig{Domain: "kez.lat", Store: s.reg, SigServer: s.sigc, Logger: quietLog, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	s.server = srv
	s.chat = httptest.NewServer(srv)
	t.Cleanup(s.chat.Close)
	return s, clock
}

var from = limittest.From

func only(set func(*Limits)) Limits {
	l := NoLimits()
	set(&l)
	return l
}

func wantLimited(t *testing.T, what string, err error, retry time.Duration) *RateLimitedError {
	t.Helper()
	var rl *RateLimitedError
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &rl) || rl.RetryAfter != retry {
		t.Fatalf("%s: %v; want a 429 with Retry-After %v", what, err, retry)
	}
	return rl
}

// TestRegistrationFloodPerIP registers from one address past the limit,
// as the script of issue 13 did (209 handles/s): the claim is refused
// with 429 and Retry-After, which Register returns as a typed error; a
// user at another address still registers; after waiting Retry-After the
// refused registration completes by running Register again.
func TestRegistrationFloodPerIP(t *testing.T) {
	ctx := context.Background()
	s, clock := limitedStack(t, only(func(l *Limits) { l.ClaimsPerIP = ratelimit.Limit{N: 3, Per: time.Hour} }))
	opts := func(ip string) RegisterOptions {
		return RegisterOptions{ServerURL: s.chat.URL, SigServerURL: s.sig.URL, HTTPClient: from(ip)}
	}
	for i := range 3 {
		if _, err := Register(ctx, newIdentity(t), Handle{Name: fmt.Sprintf("bot%d", i), Domain: "kez.lat"}, opts("203.0.113.66")); err != nil {
			t.Fatalf("registration %d: %v", i+1, err)
		}
	}
	late := newIdentity(t)
	h := Handle{Name: "bot3", Domain: "kez.lat"}
	_, err := Register(ctx, late, h, opts("203.0.113.66"))
	rl := wantLimited(t, "the 4th registration", err, 20*time.Minute)
	if _, err := s.reg.Lookup(ctx, h); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused claim was recorded: %v", err)
	}
	if r, err := Register(ctx, newIdentity(t), Handle{Name: "carol", Domain: "kez.lat"}, opts("198.51.100.7")); err != nil || !r.Created {
		t.Fatalf("a user at another address: %v", err)
	}
	for range 5 { // a flood gets nothing more
		_, err := Register(ctx, newIdentity(t), Handle{Name: "bot", Domain: "kez.lat"}, opts("203.0.113.66"))
		wantLimited(t, "flood", err, rl.RetryAfter)
	}
	clock.Add(rl.RetryAfter)
	r, err := Register(ctx, late, h, opts("203.0.113.66"))
	if err != nil || !r.Created || r.Appended != nil {
		t.Fatalf("after Retry-After: %+v, %v; want the claim made without a new link", r, err)
	}
	if st := s.server.LimitStats()[0]; st.Endpoint != "claim" || st.Reason != "ip" || st.Limited != 6 {
		t.Fatalf("stats %+v", st)
	}
}

// TestClaimFloodPerKey claims with one key from many addresses past the
// per-key limit; and mallory, from many addresses, posts claims of
// alice's key that do not verify (a tampered signature, a replay for
// another handle): none of them spends alice's bucket.
func TestClaimFloodPerKey(t *testing.T) {
	ctx := context.Background()
	s, _ := limitedStack(t, only(func(l *Limits) { l.ClaimsPerKey = ratelimit.Limit{N: 2, Per: time.Hour} }))
	alice := newIdentity(t)
	h := Handle{Name: "alice", Domain: "kez.lat"}
	if _, err := Register(ctx, alice, h, RegisterOptions{ServerURL: s.chat.URL, SigServerURL: s.sig.URL, HTTPClient: from("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	claim, err := NewClaim(alice, h, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	post := func(ip string, c *Claim) int {
		b, _ := json.Marshal(c)
		resp, err := from(ip).Post(s.chat.URL+"/v1/handles", "application/json", bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tampered := *claim
	tampered.Signature = claim.Signature[:10] + "A" + claim.Signature[11:]
	if tampered.Signature == claim.Signature {
		tampered.Signature = claim.Signature[:10] + "B" + claim.Signature[11:]
	}
	other := *claim
	other.Handle = "alice2@kez.lat"
	for i := range 20 {
		ip := fmt.Sprintf("198.51.100.%d", i)
		for _, c := range []*Claim{&tampered, &other} {
			if code := post(ip, c); code != http.StatusUnauthorized {
				t.Fatalf("mallory's claim of alice's key: %d, want 401", code)
			}
		}
	}
	c := &Client{BaseURL: s.chat.URL, HTTPClient: from("192.0.2.2")}
	if _, created, err := c.Claim(ctx, alice, h); err != nil || created {
		t.Fatalf("alice renews after mallory's flood: %v", err)
	}
	// Positive control: alice's own claims do spend it.
	_, _, err = (&Client{BaseURL: s.chat.URL, HTTPClient: from("192.0.2.3")}).Claim(ctx, alice, h)
	wantLimited(t, "alice's 3rd claim", err, 30*time.Minute)
}

// TestLookupFloodPerIP reads past the read limit through lookups and
// WebFinger (one bucket): 429, typed on the client; another address
// still reads.
func TestLookupFloodPerIP(t *testing.T) {
	ctx := context.Background()
	s, _ := limitedStack(t, only(func(l *Limits) { l.ReadsPerIP = ratelimit.Limit{N: 4, Per: time.Minute} }))
	h := Handle{Name: "alice", Domain: "kez.lat"}
	if _, err := Register(ctx, newIdentity(t), h, RegisterOptions{ServerURL: s.chat.URL, SigServerURL: s.sig.URL, HTTPClient: from("192.0.2.1")}); err != nil {
		t.Fatal(err)
	}
	c := &Client{BaseURL: s.chat.URL, HTTPClient: from("203.0.113.5")}
	for range 2 {
		if _, err := c.Lookup(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WebFinger(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.Lookup(ctx, "alice")
	wantLimited(t, "the 5th read", err, 15*time.Second)
	_, err = c.WebFinger(ctx, h)
	wantLimited(t, "WebFinger after it", err, 15*time.Second)
	if _, err := (&Client{BaseURL: s.chat.URL, HTTPClient: from("203.0.113.6")}).Lookup(ctx, "alice"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	// LimitReads puts another route in the same bucket.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/v1/info", nil)
	req.RemoteAddr = "127.0.0.1:1"
	req.Header.Set("X-Forwarded-For", "203.0.113.5")
	s.server.LimitReads(http.NotFoundHandler()).ServeHTTP(rec, req)
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "15" {
		t.Fatalf("LimitReads: %d %v", rec.Code, rec.Header())
	}
}

func TestDefaultRegistryLimits(t *testing.T) {
	s := newStack(t, "kez.lat")
	srv, err := NewServer(ServerConfig{Domain: "kez.lat", Store: s.reg, SigServer: s.sigc})
	if err != nil {
		t.Fatal(err)
	}
	l := srv.Limits()
	if l.ClaimsPerIP.String() != "10/1h" || l.ClaimsPerKey.String() != "10/1h" || l.ReadsPerIP.String() != "1200/1m" {
		t.Fatalf("%+v", l)
	}
}
