package sigchain_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
)

// limitedServer is a sig-server over a real SQLite file with the given
// limits and a fake clock; loopback is its trusted proxy, so a test
// speaks as any client address through X-Forwarded-For (from).
type limitedServer struct {
	url     string
	handler *sigchain.Handler
	clock   *limittest.Clock
}

func startLimited(t *testing.T, l sigchain.Limits, trustProxy bool) *limitedServer {
	t.Helper()
	store, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	clock := &limittest.Clock{}
	l.Now = clock.Now
	if trustProxy {
		l.ClientIP.TrustedProxies = limittest.Loopback()
	}
	h := sigchain.NewHandler(store, sigchain.WithLimits(l), sigchain.WithLogger(slog.New(slog.DiscardHandler)))
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return &limitedServer{url: srv.URL, handler: h, clock: clock}
}

// from returns a client of s speaking as the client address ip.
func (s *limitedServer) from(ip string) *sigchain.Client {
	return &sigchain.Client{BaseURL: s.url, HTTPClient: limittest.From(ip)}
}

// chainOf builds n links of id's chain: an eldest link naming handle,
// then set_shared_files links.
func chainOf(t *testing.T, id *kez.Identity, handle string, n int) []*sigchain.Link {
	t.Helper()
	var st *sigchain.State
	var out []*sigchain.Link
	for i := range n {
		typ, body := sigchain.TypeSetSharedFiles, fmt.Appendf(nil, `{"n":%d}`, i)
		if i == 0 {
			typ, body = sigchain.TypeEldest, eldest(id, handle)
		}
		l, err := sigchain.NewLink(id, st, typ, body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if st, err = st.Extend([]*sigchain.Link{l}); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
	}
	return out
}

// wantLimited checks that err is a 429 with the given Retry-After and
// returns it.
func wantLimited(t *testing.T, what string, err error, retry time.Duration) *sigchain.RateLimitedError {
	t.Helper()
	var rl *sigchain.RateLimitedError
	if !errors.Is(err, sigchain.ErrRateLimited) || !errors.As(err, &rl) || rl.RetryAfter != retry {
		t.Fatalf("%s: %v; want a 429 with Retry-After %v", what, err, retry)
	}
	return rl
}

func only(set func(*sigchain.Limits)) sigchain.Limits {
	l := sigchain.NoLimits()
	set(&l)
	return l
}

// TestAppendFloodPerIP sends appends from one address past its limit:
// they are refused with 429 and the exact Retry-After, which the client
// returns as a typed error; another address still appends; a forged
// X-Forwarded-For from an untrusted peer gets no fresh bucket; and after
// waiting Retry-After the next append is stored.
func TestAppendFloodPerIP(t *testing.T) {
	ctx := context.Background()
	s := startLimited(t, only(func(l *sigchain.Limits) { l.AppendsPerIP = ratelimit.Limit{N: 5, Per: time.Hour} }), true)
	flooder := s.from("203.0.113.66")
	links := chainOf(t, storetest.Identity(t, 1), "", 8)
	for _, l := range links[:5] {
		if err := flooder.Append(ctx, l); err != nil {
			t.Fatalf("within the limit: %v", err)
		}
	}
	rl := wantLimited(t, "the 6th append", flooder.Append(ctx, links[5]), 12*time.Minute)
	// Garbage counts too: the limit comes before anything is read.
	wantLimited(t, "a garbage append", flooder.Append(ctx, links[0]), 12*time.Minute)
	other := chainOf(t, storetest.Identity(t, 2), "bob@kez.lat", 1)
	if err := s.from("198.51.100.7").Append(ctx, other[0]); err != nil {
		t.Fatalf("another address: %v", err)
	}
	s.clock.Add(rl.RetryAfter - time.Second)
	wantLimited(t, "a second before Retry-After", flooder.Append(ctx, links[5]), time.Second)
	s.clock.Add(time.Second)
	if err := flooder.Append(ctx, links[5]); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
	st := s.handler.Stats()
	if st.Limiters[0].Endpoint != "append" || st.Limiters[0].Reason != "ip" || st.Limiters[0].Limited != 3 {
		t.Fatalf("stats %+v", st.Limiters[0])
	}

	// Without trusted proxies X-Forwarded-For is the client's word: a
	// new address in it buys nothing.
	s = startLimited(t, only(func(l *sigchain.Limits) { l.AppendsPerIP = ratelimit.Limit{N: 2, Per: time.Hour} }), false)
	links = chainOf(t, storetest.Identity(t, 3), "", 3)
	for i, l := range links[:2] {
		if err := s.from(fmt.Sprintf("192.0.2.%d", i)).Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	wantLimited(t, "a forged X-Forwarded-For", s.from("192.0.2.99").Append(ctx, links[2]), 30*time.Minute)
}

// TestNewChainFloodPerIP makes chains for fresh keys from one address,
// as the script of issue 13 did (222 chains/s): past the limit they are
// refused, while chains already made still grow and another address
// still makes one.
func TestNewChainFloodPerIP(t *testing.T) {
	ctx := context.Background()
	s := startLimited(t, only(func(l *sigchain.Limits) { l.ChainsPerIP = ratelimit.Limit{N: 3, Per: time.Hour} }), true)
	script := s.from("203.0.113.66")
	var first []*sigchain.Link
	for i := range 3 {
		c := chainOf(t, storetest.Identity(t, 10+i), "", 2)
		if err := script.Append(ctx, c[0]); err != nil {
			t.Fatalf("chain %d: %v", i+1, err)
		}
		first = append(first, c[1])
	}
	for i := range 5 {
		fresh := chainOf(t, storetest.Identity(t, 20+i), "", 1)[0]
		wantLimited(t, fmt.Sprintf("new chain %d", 4+i), script.Append(ctx, fresh), 20*time.Minute)
		if _, err := s.from("198.51.100.1").Fetch(ctx, fresh.Key(), 0); !errors.Is(err, sigchain.ErrNotFound) {
			t.Fatalf("a refused chain was stored: %v", err)
		}
	}
	for _, l := range first {
		if err := script.Append(ctx, l); err != nil {
			t.Fatalf("growing an existing chain: %v", err)
		}
	}
	if err := s.from("198.51.100.1").Append(ctx, chainOf(t, storetest.Identity(t, 30), "", 1)[0]); err != nil {
		t.Fatalf("another address: %v", err)
	}
}

// TestAppendFloodPerKey appends to one chain from many addresses past
// the per-key limit: refused whatever the address; another key is not
// affected. Then mallory, from many addresses, replays alice's stored
// links and posts garbage and forgeries under her key: none of it uses
// up alice's bucket, and alice still appends.
func TestAppendFloodPerKey(t *testing.T) {
	ctx := context.Background()
	s := startLimited(t, only(func(l *sigchain.Limits) { l.AppendsPerKey = ratelimit.Limit{N: 4, Per: time.Hour} }), true)
	links := chainOf(t, storetest.Identity(t, 1), "", 6)
	for i, l := range links[:4] {
		if err := s.from(fmt.Sprintf("203.0.113.%d", i)).Append(ctx, l); err != nil {
			t.Fatalf("link %d: %v", i+1, err)
		}
	}
	wantLimited(t, "the 5th link, from yet another address", s.from("203.0.113.200").Append(ctx, links[4]), 15*time.Minute)
	if err := s.from("203.0.113.200").Append(ctx, chainOf(t, storetest.Identity(t, 2), "", 1)[0]); err != nil {
		t.Fatalf("another key: %v", err)
	}

	alice := storetest.Identity(t, 3)
	mallory := storetest.Identity(t, 4)
	mine := chainOf(t, alice, "alice@kez.lat", 3)
	if err := s.from("192.0.2.1").Append(ctx, mine[0]); err != nil {
		t.Fatal(err)
	}
	forged, err := sigchain.NewLink(mallory, nil, sigchain.TypeEldest, eldest(mallory, "alice@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	post := func(ip string, body []byte) int {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/chains/"+alice.PublicKey().String()+"/links", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := limittest.From(ip).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 20 {
		ip := fmt.Sprintf("198.51.100.%d", i)
		if err := s.from(ip).Append(ctx, mine[0]); err != nil { // a replay: 200, already stored
			t.Fatalf("replay %d: %v", i, err)
		}
		for _, body := range [][]byte{[]byte("garbage"), forged.Bytes()} {
			if code := post(ip, body); code == http.StatusTooManyRequests || code/100 == 2 {
				t.Fatalf("mallory's post under alice's key: %d", code)
			}
		}
	}
	for _, l := range mine[1:] {
		if err := s.from("192.0.2.1").Append(ctx, l); err != nil {
			t.Fatalf("alice after mallory's flood: %v", err)
		}
	}
}

// TestReadFloodPerIP reads a chain past the read limit: 429, and the
// client's FetchVerified returns the typed error; another address still
// reads.
func TestReadFloodPerIP(t *testing.T) {
	ctx := context.Background()
	s := startLimited(t, only(func(l *sigchain.Limits) { l.ReadsPerIP = ratelimit.Limit{N: 3, Per: time.Minute} }), true)
	link := chainOf(t, storetest.Identity(t, 1), "alice@kez.lat", 1)[0]
	c := s.from("203.0.113.9")
	if err := c.Append(ctx, link); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := c.FetchVerified(ctx, link.Key(), nil); err != nil {
			t.Fatal(err)
		}
	}
	wantLimited(t, "the 4th read", func() error { _, err := c.FetchVerified(ctx, link.Key(), nil); return err }(), 20*time.Second)
	if _, err := s.from("203.0.113.10").FetchVerified(ctx, link.Key(), nil); err != nil {
		t.Fatalf("another address: %v", err)
	}
}

// TestDefaultLimits checks the documented defaults are what a handler
// without WithLimits applies.
func TestDefaultLimits(t *testing.T) {
	store, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	l := sigchain.NewHandler(store).Limits()
	d := sigchain.DefaultLimits
	if l.AppendsPerIP != d.AppendsPerIP || l.ChainsPerIP != d.ChainsPerIP || l.AppendsPerKey != d.AppendsPerKey || l.ReadsPerIP != d.ReadsPerIP ||
		l.MaxLinks != 4096 || l.MaxBytes != 4<<20 || d.ChainsPerIP.String() != "10/1h" {
		t.Fatalf("limits %+v", l)
	}
	// A zero field takes its default, Unlimited turns one off.
	l = sigchain.NewHandler(store, sigchain.WithLimits(sigchain.Limits{ReadsPerIP: ratelimit.Unlimited, MaxLinks: -1})).Limits()
	if !l.ReadsPerIP.Off() || l.MaxLinks != -1 || l.AppendsPerIP != d.AppendsPerIP || l.MaxBytes != d.MaxBytes {
		t.Fatalf("limits %+v", l)
	}
}
