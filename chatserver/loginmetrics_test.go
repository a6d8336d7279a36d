package chatserver_test

import (
	"context"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/testenv/loginflood"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
)

// TestLoginLimitsAndMetrics: the server passes LoginLimits to its callout,
// and /metrics shows what they did to one address's bogus logins: denials
// by cause, denials held and unanswered, queues, tracked addresses.
func TestLoginLimitsAndMetrics(t *testing.T) {
	keysDir := filepath.Join(t.TempDir(), "keys")
	conf, err := chatserver.NATSConfig(keysDir, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, conf)
	s := newServer(t, sigServer(t).URL, ns.ClientURL(), keysDir)
	s.LoginLimits = callout.LoginLimits{BackoffAfter: 2, BackoffBase: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond}
	s.LoginWorkers = 1
	start(t, s)
	waitReady(t, s)
	web := httptest.NewServer(s.Handler())
	t.Cleanup(web.Close)

	cfg := loginflood.Config{Addr: strings.TrimPrefix(ns.ClientURL(), "nats://")}
	for i, min := range []time.Duration{0, 0, 50 * time.Millisecond, 100 * time.Millisecond, 1900 * time.Millisecond} {
		lat, answer, err := loginflood.Once(context.Background(), cfg, netip.MustParseAddr("127.0.0.2"), loginflood.UnknownKey)
		if err != nil || !strings.HasPrefix(answer, "-ERR") || lat < min {
			t.Fatalf("bogus login %d: %q after %s (want at least %s), %v", i+1, answer, lat, min, err)
		}
	}
	metrics := fetch(t, web.URL+"/metrics")
	for _, want := range []string{
		`kez_chat_authorizations_total{result="denied"} 5`,
		`kez_chat_login_denials_total{reason="unknown_key"} 5`,
		`kez_chat_login_denials_total{reason="bad_signature"} 0`,
		`kez_chat_login_backoffs_total{action="delayed"} 2`,
		`kez_chat_login_backoffs_total{action="unanswered"} 1`,
		`kez_chat_login_dropped_total{reason="queue_full"} 0`,
		`kez_chat_login_dropped_total{reason="expired"} 0`,
		`kez_chat_login_dropped_total{reason="slow_consumer"} 0`,
		`kez_chat_login_queue_depth{lane="suspect"} 0`,
		`kez_chat_login_held_denials 0`,
		`kez_chat_login_tracked{kind="addresses"} 1`,
		`kez_chat_login_tracked{kind="known_pairs"} 1`, // the chat-server's own provisioner
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", metrics)
	}
}
