package chatserver_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// A replica that drains says so on /readyz at once, hands the callout's
// logins to the other replica and finishes: logins keep working through
// the other one, and the drained replica answers none of them.
func TestDrainHandsLoginsToTheOtherReplica(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.NewUser(t, "alice")
	second := newServer(t, st.SigServerURL, st.NATSURL, st.KeysDir)
	second.DBPath = st.Chat.DBPath // the replicas share the registry
	start(t, second)
	waitReady(t, second)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := fetch(t, st.ServerURL+"/metrics")
	if err := st.Chat.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.Chat.Ready(ctx); !errors.Is(err, chatserver.ErrDraining) {
		t.Fatalf("Ready after Drain: %v, want ErrDraining", err)
	}
	if code := getJSON(t, st.ServerURL+"/readyz", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz of a draining replica: %d, want 503", code)
	}
	for range 10 {
		nc, err := login(alice.Identity, st.NATSURL)
		if err != nil {
			t.Fatalf("logging in while a replica drained: %v", err)
		}
		nc.Close()
	}
	// The HTTP API still answers, until the program stops it.
	if code := getJSON(t, st.ServerURL+"/v1/info", nil); code != http.StatusOK {
		t.Fatalf("/v1/info of a draining replica: %d", code)
	}
	after := fetch(t, st.ServerURL+"/metrics")
	if allowed(t, after) != allowed(t, before) {
		t.Fatalf("the drained replica answered logins: allowed %s, then %s", allowed(t, before), allowed(t, after))
	}
	if err := st.Chat.Drain(ctx); err != nil {
		t.Fatalf("Drain twice: %v", err)
	}
	if err := st.Chat.Close(); err != nil {
		t.Fatalf("Close after Drain: %v", err)
	}
	if err := st.Chat.Drain(ctx); err != nil {
		t.Fatalf("Drain after Close: %v", err)
	}
}

// allowed returns the value of the allowed logins' counter in metrics.
func allowed(t testing.TB, metrics string) string {
	t.Helper()
	const name = `kez_chat_authorizations_total{result="allowed"} `
	for line := range strings.SplitSeq(metrics, "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			return v
		}
	}
	t.Fatalf("no %s in the metrics", name)
	return ""
}

// Drain is bounded by its context: with no time left it returns at once,
// saying so, and Close still stops the server.
func TestDrainOutOfTime(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.Chat.Drain(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Drain with no time: %v, want context.Canceled", err)
	}
	if err := st.Chat.Close(); err != nil {
		t.Fatal(err)
	}
}
