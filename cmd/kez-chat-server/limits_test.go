package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

var from = limittest.From

// TestLimitFlags runs the program with limits from flags and their
// environment twins, behind loopback as a trusted proxy: registrations
// and lookups past them are refused with 429, other addresses are not,
// and /metrics counts the refusals.
func TestLimitFlags(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	ns := natstest.Run(t, natsConfigOutput(t, []string{"--keys", keys}, nil))
	sigURL := startSig(t)
	env := map[string]string{"KEZ_SIG_SERVER": sigURL, "NATS_URL": ns.ClientURL(), "KEZ_CHAT_DB": filepath.Join(dir, "chat.db"), "KEZ_CHAT_KEYS": keys,
		"KEZ_CHAT_READS_PER_IP": "3/1m", "KEZ_CHAT_CLAIMS_PER_IP": "50/1h", "KEZ_CHAT_TRUSTED_PROXIES": "10.0.0.1"}
	env["KEZ_CHAT_COPY_BURST"], env["KEZ_CHAT_COPIES_IN_FLIGHT"] = "300", "77"
	srv := startReady(t, []string{"--listen", "127.0.0.1:0", "--domain", "chat.example", "--claims-per-ip", "2/1h", "--trusted-proxies", "127.0.0.1, ::1", "--copy-rate", "30"}, env)
	ctx := context.Background()
	register := func(name, ip string) error {
		_, err := handles.Register(ctx, stacktest.Identity(name), handles.Handle{Name: name, Domain: "chat.example"},
			handles.RegisterOptions{ServerURL: srv.base, SigServerURL: sigURL, HTTPClient: from(ip)})
		return err
	}
	for _, name := range []string{"bot1", "bot2"} {
		if err := register(name, "203.0.113.66"); err != nil {
			t.Fatal(err)
		}
	}
	var rl *handles.RateLimitedError
	if err := register("bot3", "203.0.113.66"); !errors.As(err, &rl) || rl.RetryAfter != 30*time.Minute {
		t.Fatalf("the 3rd registration from one address (--claims-per-ip 2/1h wins over the environment): %v", err)
	}
	if err := register("carol", "198.51.100.7"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	reader := &handles.Client{BaseURL: srv.base, HTTPClient: from("192.0.2.5")}
	for range 3 {
		if _, err := reader.Lookup(ctx, "carol"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := reader.Lookup(ctx, "carol"); !errors.Is(err, handles.ErrRateLimited) {
		t.Fatalf("the 4th lookup (KEZ_CHAT_READS_PER_IP 3/1m): %v", err)
	}
	m := fetchURL(t, srv.base+"/metrics")
	for _, want := range []string{
		`kez_http_limited_total{endpoint="claim",reason="ip"} 1`,
		`kez_http_limited_total{endpoint="read",reason="ip"} 1`,
		`kez_http_limited_total{endpoint="claim",reason="key"} 0`,
		`kez_http_limiter_keys{endpoint="claim",reason="ip"} 2`,
		`kez_chat_handle_claims_total{result="refused"} 1`,
		`kez_chat_gate_limit{name="sender_copy_rate"} 30`,
		`kez_chat_gate_limit{name="sender_copy_burst"} 300`,
		`kez_chat_gate_limit{name="copies_in_flight"} 77`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if !strings.Contains(srv.logs.String(), "claims_per_ip=2/1h") || !strings.Contains(srv.logs.String(), "reads_per_ip=3/1m") {
		t.Errorf("the limits are not logged:\n%s", srv.logs)
	}
}

func TestLimitUsageErrors(t *testing.T) {
	full := map[string]string{"KEZ_SIG_SERVER": "http://127.0.0.1:1", "NATS_URL": "nats://127.0.0.1:1"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range full {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--claims-per-ip", "fast"}, full, "claims-per-ip"},
		{[]string{"--reads-per-ip", "10"}, full, "reads-per-ip"},
		{nil, with("KEZ_CHAT_CLAIMS_PER_KEY", "10/fortnight"), "KEZ_CHAT_CLAIMS_PER_KEY"},
		{[]string{"--trusted-proxies", "proxy.example.org"}, full, "trusted-proxies"},
		{nil, with("KEZ_CHAT_TRUSTED_PROXIES", "10.0.0.0/40"), "trusted-proxies"},
		{[]string{"--limit-max-keys", "0"}, full, "limit-max-keys"},
		{nil, with("KEZ_CHAT_LIMIT_MAX_KEYS", "many"), "KEZ_CHAT_LIMIT_MAX_KEYS"},
		{[]string{"--copy-rate", "0"}, full, "copy-rate"},
		{nil, with("KEZ_CHAT_COPY_BURST", "-5"), "copy-burst"},
		{[]string{"--copies-in-flight", "0"}, full, "copies-in-flight"},
		{nil, with("KEZ_CHAT_COPIES_IN_FLIGHT", "lots"), "KEZ_CHAT_COPIES_IN_FLIGHT"},
	} {
		var errb bytes.Buffer
		err := run(context.Background(), tc.args, getenvFrom(tc.env), io.Discard, &errb, nil)
		var u servercmd.UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error()+errb.String(), tc.want) {
			t.Errorf("%v %v: got %v, want a usage error about %q", tc.args, tc.env, err, tc.want)
		}
	}
}
