package systemtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// The hostile tests of issue 13, finding 7 (no limits on the HTTP
// servers), against kez-chat-server and kez-sig-server processes. Each
// client speaks from its own loopback address (127.0.0.0/8 all reaches
// the servers on 127.0.0.1), so the servers see distinct TCP peers, as
// they would distinct hosts; no proxy is trusted, so the X-Forwarded-For
// the flooders forge counts for nothing.

// from is an HTTP client whose connections leave from the loopback
// address ip, and that forges X-Forwarded-For with a fresh address on
// every request (which the servers must ignore).
func from(t testing.TB, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	tr := &http.Transport{DialContext: d.DialContext, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: forging{tr, new(int)}, Timeout: 30 * time.Second}
}

type forging struct {
	http.RoundTripper
	n *int
}

func (f forging) RoundTrip(r *http.Request) (*http.Response, error) {
	*f.n++
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", fmt.Sprintf("198.51.100.%d", *f.n%250))
	return f.RoundTripper.RoundTrip(r)
}

// registerFrom registers name as "kez register" does, from address ip.
func (s *procStack) registerFrom(t testing.TB, name, ip string) (*kez.Identity, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := stacktest.Identity(name)
	_, err := handles.Register(ctx, id, handles.Handle{Name: name, Domain: s.Domain},
		handles.RegisterOptions{ServerURL: s.ChatURL, SigServerURL: s.SigURL, HTTPClient: from(t, ip)})
	return id, err
}

// metric returns the value of the sample named by series (name and
// labels exactly as exported) at url's /metrics, or -1 if absent.
func metric(t testing.TB, url, series string) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

func isLimited(err error) (time.Duration, bool) {
	var rl *handles.RateLimitedError
	if errors.As(err, &rl) && errors.Is(err, handles.ErrRateLimited) && rl.RetryAfter > 0 {
		return rl.RetryAfter, true
	}
	return 0, false
}

// TestHostileRegistrationFlood: a script registers fresh users as fast
// as it can from one address, against the servers' default limits (the
// finding: 209 handles/s, 222 chains/s). Exactly the default burst gets
// through (10 chains and 10 claims an hour), every later attempt is
// refused with 429 and a Retry-After, nothing refused is stored, and a
// different user at another address still registers. A second script
// with chains made elsewhere floods only claims: the chat-server's own
// limit refuses it.
func TestHostileRegistrationFlood(t *testing.T) {
	st := startProcStack(t, procOptions{})
	ctx := testCtx(t, 2*time.Minute)
	const attempts = 40
	ok, limited := 0, 0
	start := time.Now()
	for i := range attempts {
		_, err := st.registerFrom(t, fmt.Sprintf("bot%d", i), "127.0.0.66")
		if err == nil {
			ok++
			continue
		}
		if _, lim := isLimited(err); !lim {
			t.Fatalf("attempt %d: %v, want a 429", i, err)
		}
		limited++
		// Refused at the sig-server: no chain was stored for it.
		if _, err := (&sigchain.Client{BaseURL: st.SigURL}).Fetch(ctx, stacktest.Identity(fmt.Sprintf("bot%d", i)).PublicKey(), 0); !errors.Is(err, sigchain.ErrNotFound) {
			t.Fatalf("attempt %d was refused but its chain is stored: %v", i, err)
		}
	}
	t.Logf("%d registrations from one address in %s: %d accepted, %d refused with 429", attempts, time.Since(start).Round(time.Millisecond), ok, limited)
	if ok != 10 || limited != attempts-10 {
		t.Fatalf("%d accepted, %d refused; want the default burst of 10, then 429", ok, limited)
	}
	if _, err := st.registerFrom(t, "carol", "127.0.0.7"); err != nil {
		t.Fatalf("a legitimate user at another address: %v", err)
	}
	if v := metric(t, st.SigURL, `kez_http_limited_total{endpoint="append",reason="new_chain"}`); v != attempts-10 {
		t.Errorf("sig-server kez_http_limited_total new_chain = %v, want %d", v, attempts-10)
	}

	// Claims only: each chain comes from an address of its own, the
	// claims all from one.
	ok, limited = 0, 0
	for i := range 15 {
		name := fmt.Sprintf("claim%d", i)
		id := stacktest.Identity(name)
		l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, name+"@"+st.Domain), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := (&sigchain.Client{BaseURL: st.SigURL, HTTPClient: from(t, fmt.Sprintf("127.0.1.%d", i+1))}).Append(ctx, l); err != nil {
			t.Fatal(err)
		}
		_, _, err = (&handles.Client{BaseURL: st.ChatURL, HTTPClient: from(t, "127.0.0.67")}).Claim(ctx, id, handles.Handle{Name: name, Domain: st.Domain})
		switch _, lim := isLimited(err); {
		case err == nil:
			ok++
		case lim:
			limited++
		default:
			t.Fatalf("claim %d: %v", i, err)
		}
	}
	if ok != 10 || limited != 5 {
		t.Fatalf("claims from one address: %d accepted, %d refused; want 10, then 429", ok, limited)
	}
	if v := metric(t, st.ChatURL, `kez_http_limited_total{endpoint="claim",reason="ip"}`); v != 5 {
		t.Errorf("chat-server kez_http_limited_total claim/ip = %v, want 5", v)
	}
	if _, err := st.registerFrom(t, "dave", "127.0.0.8"); err != nil {
		t.Fatalf("a legitimate user after the claim flood: %v", err)
	}
}

// TestHostilePerKeyAndRetryAfter: one key, from ever new addresses,
// claims and appends past the per-key limits: refused whatever the
// address. The wait the server names is exact: refused just before it,
// served once it has passed.
func TestHostilePerKeyAndRetryAfter(t *testing.T) {
	st := startProcStack(t, procOptions{
		ChatArgs: []string{"--claims-per-key", "3/1h"},
		SigArgs:  []string{"--appends-per-key", "3/3s"},
	})
	ctx := testCtx(t, 2*time.Minute)
	id, err := st.registerFrom(t, "mallory", "127.0.2.1") // one append, one claim
	if err != nil {
		t.Fatal(err)
	}
	h := handles.Handle{Name: "mallory", Domain: st.Domain}
	for i := range 3 {
		_, _, err := (&handles.Client{BaseURL: st.ChatURL, HTTPClient: from(t, fmt.Sprintf("127.0.2.%d", 10+i))}).Claim(ctx, id, h)
		if i < 2 && err != nil {
			t.Fatalf("renewal %d: %v", i+1, err)
		}
		if _, lim := isLimited(err); i == 2 && !lim {
			t.Fatalf("the 4th claim of one key: %v, want 429", err)
		}
	}

	chain, err := (&sigchain.Client{BaseURL: st.SigURL}).FetchVerified(ctx, id.PublicKey(), nil)
	if err != nil {
		t.Fatal(err)
	}
	next := func() *sigchain.Link {
		l, err := sigchain.NewLink(id, chain, sigchain.TypeSetSharedFiles, fmt.Appendf(nil, `{"n":%d}`, chain.Seqno()), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	appendFrom := func(ip string, l *sigchain.Link) error {
		err := (&sigchain.Client{BaseURL: st.SigURL, HTTPClient: from(t, ip)}).Append(ctx, l)
		if err == nil {
			chain, _ = chain.Extend([]*sigchain.Link{l})
		}
		return err
	}
	// The eldest link took one token: two more, then 429.
	for i := range 2 {
		if err := appendFrom(fmt.Sprintf("127.0.3.%d", i+1), next()); err != nil {
			t.Fatalf("append %d: %v", i+2, err)
		}
	}
	l := next()
	err = appendFrom("127.0.3.50", l)
	wait, lim := isLimited(err)
	if !lim || wait > time.Second {
		t.Fatalf("the 4th link of one key: %v, want 429 with Retry-After 1s", err)
	}
	<-time.After(wait) // what the server asked for, and no more
	if err := appendFrom("127.0.3.51", l); err != nil {
		t.Fatalf("after waiting Retry-After (%v): %v", wait, err)
	}
	if v := metric(t, st.SigURL, `kez_http_limited_total{endpoint="append",reason="key"}`); v != 1 {
		t.Errorf("kez_http_limited_total append/key = %v, want 1", v)
	}
}

// TestHostileChainGrowth: one key grows its chain as the finding did
// (1,500 links of 63 KiB, 92 MiB that every lookup downloads), against
// the default caps: the sig-server refuses the link that would pass 4 MiB
// with 413 and ErrChainFull, and the chain stays readable, whole, in
// one fetch. On a server with --max-chain-links 40, a chain of small
// links is refused at its 41st.
func TestHostileChainGrowth(t *testing.T) {
	ctx := testCtx(t, 2*time.Minute)
	grow := func(st *procStack, name string, body func(i int) []byte) (*sigchain.State, error) {
		sig := &sigchain.Client{BaseURL: st.SigURL}
		id, err := st.registerFrom(t, name, "127.0.4.1")
		if err != nil {
			t.Fatal(err)
		}
		chain, err := sig.FetchVerified(ctx, id.PublicKey(), nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2000 {
			l, err := sigchain.NewLink(id, chain, sigchain.TypeSetSharedFiles, body(i), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := sig.Append(ctx, l); err != nil {
				return chain, err
			}
			chain, _ = chain.Extend([]*sigchain.Link{l})
		}
		return chain, nil
	}
	wantFull := func(err error, reason string) {
		t.Helper()
		var se *sigchain.ServerError
		if !errors.Is(err, sigchain.ErrChainFull) || !errors.As(err, &se) || se.StatusCode != http.StatusRequestEntityTooLarge || se.Reason != reason {
			t.Fatalf("growing the chain: %v, want 413 %s", err, reason)
		}
	}

	st := startProcStack(t, procOptions{})
	maxBytes := int(sigchain.DefaultLimits.MaxBytes)
	big := strings.Repeat("x", 60<<10-64) // links of about 61 KiB
	chain, err := grow(st, "hoarder", func(i int) []byte { return fmt.Appendf(nil, `{"blob":"%s","n":%d}`, big, i) })
	wantFull(err, sigchain.ReasonChainBytes)
	start := time.Now()
	links, err := (&sigchain.Client{BaseURL: st.SigURL}).Fetch(ctx, chain.Key(), 0)
	if err != nil {
		t.Fatal(err)
	}
	size := 0
	for _, l := range links {
		size += len(l.Bytes())
	}
	t.Logf("default byte cap %d: %d links, %d bytes stored; a reader fetched it whole in %s", maxBytes, len(links), size, time.Since(start).Round(time.Millisecond))
	if size > maxBytes || len(links) != int(chain.Seqno()) || size+62<<10 < maxBytes {
		t.Fatalf("the chain holds %d bytes in %d links; want at most %d, and refused only near it", size, len(links), maxBytes)
	}
	if v := metric(t, st.SigURL, `kez_sig_chain_refusals_total{reason="bytes"}`); v != 1 {
		t.Errorf("refusals for bytes = %v, want 1", v)
	}

	st = startProcStack(t, procOptions{SigArgs: []string{"--max-chain-links", "40"}})
	chain, err = grow(st, "counter", func(i int) []byte { return fmt.Appendf(nil, `{"n":%d}`, i) })
	wantFull(err, sigchain.ReasonChainLinks)
	if chain.Seqno() != 40 {
		t.Fatalf("refused at seqno %d, want 41", chain.Seqno()+1)
	}
	if _, err := (&sigchain.Client{BaseURL: st.SigURL}).FetchVerified(ctx, chain.Key(), nil); err != nil {
		t.Fatalf("the full chain does not read: %v", err)
	}
	if v := metric(t, st.SigURL, `kez_sig_chain_refusals_total{reason="links"}`); v != 1 {
		t.Errorf("refusals for links = %v, want 1", v)
	}
}

// TestHostileOrphanChains: chains of keys that never register are
// collected after --orphan-ttl; a chain that names a handle, registered
// or not, is kept.
func TestHostileOrphanChains(t *testing.T) {
	st := startProcStack(t, procOptions{SigArgs: []string{"--orphan-ttl", "1s", "--gc-interval", "200ms"}})
	ctx := testCtx(t, time.Minute)
	sig := &sigchain.Client{BaseURL: st.SigURL}
	eldest := func(name, handle string) *sigchain.Link {
		id := stacktest.Identity(name)
		l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, handle), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := sig.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
		return l
	}
	var orphans []*sigchain.Link
	for i := range 5 {
		orphans = append(orphans, eldest(fmt.Sprintf("ghost%d", i), ""))
	}
	named := eldest("unclaimed", "unclaimed@"+st.Domain)
	alice := st.register(t, "alice")
	natstest.Eventually(t, ctx, func(ctx context.Context) error {
		for _, l := range orphans {
			if _, err := sig.Fetch(ctx, l.Key(), 0); !errors.Is(err, sigchain.ErrNotFound) {
				return fmt.Errorf("orphan %s still served: %v", l.Key(), err)
			}
		}
		return nil
	})
	for _, k := range []kez.PublicKey{named.Key(), alice.key} {
		if _, err := sig.Fetch(ctx, k, 0); err != nil {
			t.Fatalf("a chain that names a handle was collected: %v", err)
		}
	}
	if v := metric(t, st.SigURL, "kez_sig_chains_collected_total"); v != 5 {
		t.Errorf("kez_sig_chains_collected_total = %v, want 5", v)
	}
	if _, err := st.registerFrom(t, "ghost0", "127.0.0.9"); err != nil {
		t.Fatalf("a collected key registers afresh: %v", err)
	}
}

// TestHostileManyAddresses: reads from 600 distinct addresses against a
// limiter table of 100: the table never holds more, the overflow is
// counted, and the reads past one address's limit are still refused.
func TestHostileManyAddresses(t *testing.T) {
	st := startProcStack(t, procOptions{SigArgs: []string{"--limit-max-keys", "100", "--reads-per-ip", "5/1m"}})
	ctx := testCtx(t, 2*time.Minute)
	alice := st.register(t, "alice")
	for i := range 600 {
		c := &sigchain.Client{BaseURL: st.SigURL, HTTPClient: from(t, fmt.Sprintf("127.1.%d.%d", i/200, i%200+1))}
		if _, err := c.Fetch(ctx, alice.key, 0); err != nil {
			t.Fatalf("address %d: %v", i, err)
		}
		if i%100 == 99 {
			if v := metric(t, st.SigURL, `kez_http_limiter_keys{endpoint="chain",reason="ip"}`); v > 100 {
				t.Fatalf("after %d addresses the table holds %v", i+1, v)
			}
		}
	}
	if v := metric(t, st.SigURL, `kez_http_limiter_evictions_total{endpoint="chain",reason="ip"}`); v < 500 {
		t.Errorf("evictions %v, want at least 500", v)
	}
	c := &sigchain.Client{BaseURL: st.SigURL, HTTPClient: from(t, "127.2.0.1")}
	for range 5 {
		if _, err := c.Fetch(ctx, alice.key, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Fetch(ctx, alice.key, 0); !errors.Is(err, sigchain.ErrRateLimited) {
		t.Fatalf("the 6th read of one address: %v, want 429", err)
	}
}
