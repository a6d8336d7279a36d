package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/loginflood"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
)

func parseLoginFlags(args []string, env map[string]string) (callout.LoginLimits, int, error) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	f := declareLoginFlags(fs)
	if err := fs.Parse(args); err != nil {
		return callout.LoginLimits{}, 0, err
	}
	return f.limits(fs, servercmd.Env(getenvFrom(env)))
}

func TestLoginFlags(t *testing.T) {
	l, w, err := parseLoginFlags(nil, nil)
	want := callout.LoginLimits{
		MaxQueued: callout.DefaultMaxQueued, KnownBurst: callout.DefaultKnownBurst, KnownEvery: callout.DefaultKnownEvery, MaxKnown: callout.DefaultMaxKnown,
		BackoffAfter: callout.DefaultBackoffAfter, BackoffBase: callout.DefaultBackoffBase, BackoffMax: callout.DefaultBackoffMax, BackoffWindow: callout.DefaultBackoffWindow,
		MaxHeld: callout.DefaultMaxHeld, MaxAddresses: callout.DefaultMaxAddresses, SummaryEvery: callout.DefaultSummaryEvery,
	}
	if err != nil || l != want || w != 0 {
		t.Fatalf("defaults: %+v, %d workers, %v", l, w, err)
	}

	env := map[string]string{
		"KEZ_CHAT_LOGIN_WORKERS": "3", "KEZ_CHAT_LOGIN_QUEUE": "100", "KEZ_CHAT_LOGIN_KNOWN_BURST": "5", "KEZ_CHAT_LOGIN_KNOWN_EVERY": "1m",
		"KEZ_CHAT_LOGIN_KNOWN_MAX": "7", "KEZ_CHAT_LOGIN_BACKOFF_AFTER": "2", "KEZ_CHAT_LOGIN_BACKOFF_BASE": "10ms", "KEZ_CHAT_LOGIN_BACKOFF_MAX": "500ms",
		"KEZ_CHAT_LOGIN_BACKOFF_WINDOW": "5m", "KEZ_CHAT_LOGIN_MAX_HELD": "9", "KEZ_CHAT_LOGIN_MAX_ADDRESSES": "11", "KEZ_CHAT_LOGIN_SUMMARY_EVERY": "10s",
	}
	l, w, err = parseLoginFlags([]string{"--login-queue", "200", "--login-backoff-base", "20ms"}, env) // flags win
	want = callout.LoginLimits{MaxQueued: 200, KnownBurst: 5, KnownEvery: time.Minute, MaxKnown: 7, BackoffAfter: 2, BackoffBase: 20 * time.Millisecond,
		BackoffMax: 500 * time.Millisecond, BackoffWindow: 5 * time.Minute, MaxHeld: 9, MaxAddresses: 11, SummaryEvery: 10 * time.Second}
	if err != nil || l != want || w != 3 {
		t.Fatalf("from the environment and flags: %+v, %d workers, %v", l, w, err)
	}

	if l, _, err = parseLoginFlags([]string{"--login-backoff-max", "0"}, nil); err != nil || l.BackoffMax >= 0 {
		t.Fatalf("--login-backoff-max 0 should turn the backoff off: %+v %v", l, err)
	}

	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--login-queue", "-1"}, nil, "--login-queue"},
		{[]string{"--login-queue", "0"}, nil, "--login-queue"},
		{[]string{"--login-backoff-after", "0"}, nil, "--login-backoff-after"},
		{[]string{"--login-backoff-window", "-1s"}, nil, "--login-backoff-window"},
		{[]string{"--login-summary-every", "0s"}, nil, "--login-summary-every"},
		{[]string{"--login-backoff-base", "2s", "--login-backoff-max", "1s"}, nil, "longer than"},
		{nil, map[string]string{"KEZ_CHAT_LOGIN_MAX_HELD": "many"}, "KEZ_CHAT_LOGIN_MAX_HELD"},
		{nil, map[string]string{"KEZ_CHAT_LOGIN_BACKOFF_MAX": "1"}, "KEZ_CHAT_LOGIN_BACKOFF_MAX"},
	} {
		_, _, err := parseLoginFlags(tc.args, tc.env)
		var u servercmd.UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: got %v, want a usage error about %q", tc.args, tc.env, err, tc.want)
		}
	}
}

// TestLoginFlagsReachTheCallout: the program's --login-… flags and their
// environment twins shape the running callout: with a backoff after one
// failure, an address's second bogus login is held for the base delay and
// /metrics counts it.
func TestLoginFlagsReachTheCallout(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	ns := natstest.Run(t, natsConfigOutput(t, []string{"--keys", keys}, nil))
	env := map[string]string{"KEZ_SIG_SERVER": startSig(t), "NATS_URL": ns.ClientURL(), "KEZ_CHAT_DB": filepath.Join(dir, "chat.db"), "KEZ_CHAT_KEYS": keys,
		"KEZ_CHAT_LOGIN_BACKOFF_BASE": "300ms"}
	srv := startReady(t, []string{"--listen", "127.0.0.1:0", "--domain", "chat.example", "--login-backoff-after", "1", "--login-backoff-max", "300ms"}, env)

	cfg := loginflood.Config{Addr: strings.TrimPrefix(ns.ClientURL(), "nats://")}
	for i, min := range []time.Duration{0, 300 * time.Millisecond} {
		lat, answer, err := loginflood.Once(context.Background(), cfg, netip.MustParseAddr("127.0.0.2"), loginflood.UnknownKey)
		if err != nil || !strings.HasPrefix(answer, "-ERR") || lat < min {
			t.Fatalf("bogus login %d: %q after %s, want a refusal after at least %s (%v)\n%s", i+1, answer, lat, min, err, srv.logs)
		}
	}
	metrics := fetchURL(t, srv.base+"/metrics")
	if !strings.Contains(metrics, `kez_chat_login_backoffs_total{action="delayed"} 1`+"\n") {
		t.Fatalf("metrics:\n%s", metrics)
	}
}

func fetchURL(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
