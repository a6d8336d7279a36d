package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
)

func clientFrom(url, ip string) *sigchain.Client {
	return &sigchain.Client{BaseURL: url, HTTPClient: limittest.From(ip)}
}

// eldestLink is id's eldest link naming handle ("" for none).
func eldestLink(t *testing.T, id *kez.Identity, handle string) (*sigchain.State, *sigchain.Link) {
	t.Helper()
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, handle), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := sigchain.Verify([]*sigchain.Link{l})
	if err != nil {
		t.Fatal(err)
	}
	return st, l
}

func metrics(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestLimitFlags runs the program with limits from flags and their
// environment twins: new chains past --chains-per-ip are refused with
// 429, a chain past --max-chain-links with 413, and /metrics counts both.
func TestLimitFlags(t *testing.T) {
	ctx := context.Background()
	db := filepath.Join(t.TempDir(), "sig.db")
	// --no-log: the limiters run on the real clock, and the log's wait
	// for a checkpoint would refill the buckets a little between appends.
	url, _, logs := start(t, []string{"--listen", "127.0.0.1:0", "--chains-per-ip", "2/1h", "--max-chain-links", "3", "--trusted-proxies", "127.0.0.1,::1", "--no-log"},
		map[string]string{"KEZ_SIG_DB": db, "KEZ_SIG_CHAINS_PER_IP": "100/1h", "KEZ_SIG_APPENDS_PER_KEY": "50/1h"})
	script := clientFrom(url, "203.0.113.66")
	var st *sigchain.State
	var id *kez.Identity
	for i := range 2 {
		id = storetest.Identity(t, i)
		var l *sigchain.Link
		st, l = eldestLink(t, id, "")
		if err := script.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	_, third := eldestLink(t, storetest.Identity(t, 9), "")
	var rl *sigchain.RateLimitedError
	if err := script.Append(ctx, third); !errors.As(err, &rl) || rl.RetryAfter != 30*time.Minute {
		t.Fatalf("the 3rd chain from one address (--chains-per-ip 2/1h wins over the environment): %v", err)
	}
	if err := clientFrom(url, "198.51.100.1").Append(ctx, third); err != nil {
		t.Fatalf("another address: %v", err)
	}
	for i := range 3 {
		l, err := sigchain.NewLink(id, st, sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("n%d@kez.lat", i)), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		err = script.Append(ctx, l)
		if i == 2 {
			if !errors.Is(err, sigchain.ErrChainFull) {
				t.Fatalf("the 4th link with --max-chain-links 3: %v", err)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		st, _ = st.Extend([]*sigchain.Link{l})
	}
	m := metrics(t, url)
	for _, want := range []string{
		`kez_http_limited_total{endpoint="append",reason="new_chain"} 1`,
		`kez_http_limited_total{endpoint="append",reason="key"} 0`,
		`kez_sig_chain_refusals_total{reason="links"} 1`,
		`kez_sig_chain_refusals_total{reason="bytes"} 0`,
		`kez_sig_chains_collected_total 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(logs.String(), "appends_per_key=50/1h") || !strings.Contains(logs.String(), "max_chain_links=3") {
		t.Errorf("the limits are not logged:\n%s", logs)
	}
}

// TestPrekeyFlags runs the program with the prekey limits from flags and
// their environment twins: a key's third new record within the hour is
// refused with 429 (the flag wins over the environment), an address's
// reads past its limit too, and /metrics counts the outcomes.
func TestPrekeyFlags(t *testing.T) {
	ctx := context.Background()
	url, _, logs := start(t, []string{"--listen", "127.0.0.1:0", "--prekeys-per-key", "2/1h", "--trusted-proxies", "127.0.0.1,::1",
		"--db", filepath.Join(t.TempDir(), "sig.db")},
		map[string]string{"KEZ_SIG_PREKEYS_PER_KEY": "100/1h", "KEZ_SIG_PREKEY_READS_PER_IP": "3/1m", "KEZ_SIG_PREKEYS_PER_IP": "50/1h"})
	id := storetest.Identity(t, 1)
	_, l := eldestLink(t, id, "alice@kez.lat")
	c := clientFrom(url, "198.51.100.1")
	if err := c.Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishPrekey(ctx, storetest.Prekey(t, storetest.Identity(t, 2), 1, time.Now(), time.Hour)); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("a prekey for a key without a chain: %v", err)
	}
	now := time.Now()
	for i := range 2 {
		if err := c.PublishPrekey(ctx, storetest.Prekey(t, id, uint32(i), now.Add(time.Duration(i-5)*time.Second), time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	// The program's limiters run on the real clock: a slow machine has
	// refilled a little of the bucket by the time it is empty.
	var rl *sigchain.RateLimitedError
	if err := c.PublishPrekey(ctx, storetest.Prekey(t, id, 3, now, time.Hour)); !errors.As(err, &rl) || rl.RetryAfter <= 29*time.Minute || rl.RetryAfter > 30*time.Minute {
		t.Fatalf("the 3rd new prekey with --prekeys-per-key 2/1h: %v", err)
	}
	if err := c.PublishPrekey(ctx, storetest.Prekey(t, id, 4, now.Add(-time.Minute), time.Hour)); !errors.Is(err, sigchain.ErrStalePrekey) {
		t.Fatalf("an older prekey: %v", err)
	}
	for range 3 {
		if _, err := c.FetchPrekey(ctx, id.PublicKey()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.FetchPrekey(ctx, id.PublicKey()); !errors.As(err, &rl) || rl.RetryAfter <= 0 || rl.RetryAfter > 20*time.Second {
		t.Fatalf("the 4th read with KEZ_SIG_PREKEY_READS_PER_IP 3/1m: %v", err)
	}
	m := metrics(t, url)
	for _, want := range []string{
		`kez_http_limited_total{endpoint="prekey_put",reason="key"} 1`,
		`kez_http_limited_total{endpoint="prekey_put",reason="ip"} 0`,
		`kez_http_limited_total{endpoint="prekey_get",reason="ip"} 1`,
		`kez_sig_prekeys_stored_total 2`,
		`kez_sig_prekey_refusals_total{reason="no_chain"} 1`,
		`kez_sig_prekey_refusals_total{reason="not_newer"} 1`,
		`kez_sig_prekey_refusals_total{reason="invalid"} 0`,
		`kez_sig_prekey_refusals_total{reason="malformed"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(logs.String(), "prekeys_per_key=2/1h") || !strings.Contains(logs.String(), "prekeys_per_ip=50/1h") {
		t.Errorf("the prekey limits are not logged:\n%s", logs)
	}
}

// TestLinkFlags runs the program with the device link limits from flags
// and their environment twins: an address's third request within the
// hour is refused with 429 (the flag wins), the cap on pending requests
// refuses others past it, reads past their limit are refused, and
// /metrics counts the outcomes.
func TestLinkFlags(t *testing.T) {
	ctx := context.Background()
	url, _, logs := start(t, []string{"--listen", "127.0.0.1:0", "--link-requests-per-ip", "2/1h", "--max-pending-link-requests", "3",
		"--trusted-proxies", "127.0.0.1,::1", "--db", filepath.Join(t.TempDir(), "sig.db")},
		map[string]string{"KEZ_SIG_LINK_REQUESTS_PER_IP": "100/1h", "KEZ_SIG_LINK_READS_PER_IP": "3/1m", "KEZ_SIG_DEVICE_READS_PER_IP": "1/1m"})
	now := time.Now()
	reqs := make([]*sigchain.LinkRequest, 5)
	for i := range reqs {
		reqs[i] = storetest.LinkRequest(t, storetest.Identity(t, 10+i), "phone", now)
	}
	c := clientFrom(url, "198.51.100.1")
	for i := range 2 {
		if err := c.PostLinkRequest(ctx, reqs[i]); err != nil {
			t.Fatal(err)
		}
	}
	var rl *sigchain.RateLimitedError
	if err := c.PostLinkRequest(ctx, reqs[2]); !errors.As(err, &rl) || rl.RetryAfter <= 29*time.Minute || rl.RetryAfter > 30*time.Minute {
		t.Fatalf("the 3rd request with --link-requests-per-ip 2/1h: %v", err)
	}
	other := clientFrom(url, "198.51.100.2")
	if err := other.PostLinkRequest(ctx, reqs[2]); err != nil {
		t.Fatal(err)
	}
	if err := other.PostLinkRequest(ctx, reqs[3]); !errors.As(err, &rl) || rl.RetryAfter != time.Minute {
		t.Fatalf("a 4th pending request with --max-pending-link-requests 3: %v", err)
	}
	for range 3 {
		if _, _, err := c.FetchLinkRequest(ctx, reqs[0].Code()); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.FetchLinkRequest(ctx, reqs[0].Code()); !errors.As(err, &rl) {
		t.Fatalf("the 4th read with KEZ_SIG_LINK_READS_PER_IP 3/1m: %v", err)
	}
	if _, _, err := c.DevicePerson(ctx, reqs[0].Device()); !errors.Is(err, sigchain.ErrNoDevice) {
		t.Fatal(err)
	}
	if _, _, err := c.DevicePerson(ctx, reqs[0].Device()); !errors.As(err, &rl) {
		t.Fatalf("the 2nd device read with KEZ_SIG_DEVICE_READS_PER_IP 1/1m: %v", err)
	}
	m := metrics(t, url)
	for _, want := range []string{
		`kez_http_limited_total{endpoint="link_post",reason="ip"} 1`,
		`kez_http_limited_total{endpoint="link_get",reason="ip"} 1`,
		`kez_http_limited_total{endpoint="device_get",reason="ip"} 1`,
		`kez_sig_link_requests_stored_total 3`,
		`kez_sig_link_request_refusals_total{reason="full"} 1`,
		`kez_sig_link_request_refusals_total{reason="device_known"} 0`,
		`kez_sig_link_requests_swept_total 0`,
		`kez_sig_prekey_refusals_total{reason="device_revoked"} 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(logs.String(), "link_requests_per_ip=2/1h") || !strings.Contains(logs.String(), "max_pending_link_requests=3") {
		t.Errorf("the link limits are not logged:\n%s", logs)
	}
}

// TestCollectsOrphans runs the program with a short --orphan-ttl: a chain
// that never named a handle disappears, one that did stays, and
// /metrics counts the collection.
func TestCollectsOrphans(t *testing.T) {
	ctx := context.Background()
	url, _, _ := start(t, []string{"--listen", "127.0.0.1:0", "--orphan-ttl", "1ms", "--gc-interval", "50ms", "--db", filepath.Join(t.TempDir(), "sig.db")}, nil)
	c := &sigchain.Client{BaseURL: url}
	_, orphan := eldestLink(t, storetest.Identity(t, 1), "")
	_, named := eldestLink(t, storetest.Identity(t, 2), "bob@kez.lat")
	for _, l := range []*sigchain.Link{orphan, named} {
		if err := c.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	natstest.Eventually(t, wctx, func(ctx context.Context) error { // the collector's next round
		if _, err := c.Fetch(ctx, orphan.Key(), 0); !errors.Is(err, sigchain.ErrNotFound) {
			return fmt.Errorf("the orphan is still there: %v", err)
		}
		return nil
	})
	if _, err := c.Fetch(ctx, named.Key(), 0); err != nil {
		t.Fatalf("the chain with a handle: %v", err)
	}
	if m := metrics(t, url); !strings.Contains(m, "kez_sig_chains_collected_total 1") {
		t.Errorf("metrics:\n%s", m)
	}
}

func TestLimitUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--chains-per-ip", "fast"}, nil, "chains-per-ip"},
		{nil, map[string]string{"KEZ_SIG_APPENDS_PER_IP": "10"}, "KEZ_SIG_APPENDS_PER_IP"},
		{[]string{"--max-chain-links", "0"}, nil, "max-chain-links"},
		{[]string{"--max-chain-bytes", "1000"}, nil, "max-chain-bytes"},
		{nil, map[string]string{"KEZ_SIG_MAX_CHAIN_BYTES": "big"}, "KEZ_SIG_MAX_CHAIN_BYTES"},
		{[]string{"--orphan-ttl", "-1h"}, nil, "orphan-ttl"},
		{nil, map[string]string{"KEZ_SIG_ORPHAN_TTL": "a day"}, "KEZ_SIG_ORPHAN_TTL"},
		{[]string{"--gc-interval", "0s"}, nil, "gc-interval"},
		{[]string{"--trusted-proxies", "10.0.0.300"}, nil, "trusted-proxies"},
		{[]string{"--limit-max-keys", "-5"}, nil, "limit-max-keys"},
		{[]string{"--prekeys-per-key", "many"}, nil, "prekeys-per-key"},
		{nil, map[string]string{"KEZ_SIG_PREKEY_READS_PER_IP": "5"}, "KEZ_SIG_PREKEY_READS_PER_IP"},
		{[]string{"--link-requests-per-ip", "lots"}, nil, "link-requests-per-ip"},
		{nil, map[string]string{"KEZ_SIG_LINK_READS_PER_IP": "5"}, "KEZ_SIG_LINK_READS_PER_IP"},
		{[]string{"--max-pending-link-requests", "0"}, nil, "max-pending-link-requests"},
		{nil, map[string]string{"KEZ_SIG_MAX_PENDING_LINK_REQUESTS": "-2"}, "max-pending-link-requests"},
	} {
		var out bytes.Buffer
		err := run(context.Background(), tc.args, func(k string) string { return tc.env[k] }, &out, &out, nil)
		var u servercmd.UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error()+out.String(), tc.want) {
			t.Errorf("%v %v: got %v, want a usage error about %q", tc.args, tc.env, err, tc.want)
		}
	}
}
