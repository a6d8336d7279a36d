package chatserver_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// register appends name's eldest link at the sig-server and claims the
// handle at the chat-server, as "kez register" does.
func register(t testing.TB, sigURL, serverURL, name string) *kez.Identity {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := stacktest.Identity(name)
	h := handles.Handle{Name: name, Domain: "kez.test"}
	if _, err := handles.Register(ctx, id, h, handles.RegisterOptions{ServerURL: serverURL, SigServerURL: sigURL}); err != nil {
		t.Fatalf("registering %s: %v", h, err)
	}
	return id
}

// Two replicas keep the registry in JetStream: a claim at one is seen by
// the other and by the callout of either, a suspension through one locks
// the key out whichever replica answers the login, and neither has a
// SQLite file.
func TestJetStreamRegistrySharedByReplicas(t *testing.T) {
	sig := sigServer(t)
	keysDir := t.TempDir()
	conf, err := chatserver.NATSConfig(keysDir, callout.ConfigOptions{AuthJetStream: true})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, conf)
	var urls []string
	var servers []*chatserver.Server
	for range 2 {
		s := newServer(t, sig.URL, ns.ClientURL(), keysDir)
		s.StoreBackend = chatserver.StoreJetStream
		start(t, s)
		h := httptest.NewServer(s.Handler())
		t.Cleanup(h.Close)
		waitReady(t, s)
		servers, urls = append(servers, s), append(urls, h.URL)
	}

	alice := register(t, sig.URL, urls[0], "alice")
	var rec handles.LookupRecord
	if code := getJSON(t, urls[1]+"/v1/handles/alice", &rec); code != 200 || rec.Key != alice.PublicKey().String() {
		t.Fatalf("lookup at the other replica: %d %+v", code, rec)
	}
	// Alice logs in several times: the queue group spreads the logins,
	// and every replica finds her.
	for range 6 {
		nc, err := login(alice, ns.ClientURL())
		if err != nil {
			t.Fatalf("alice: %v", err)
		}
		nc.Close()
	}
	if _, err := login(stacktest.Identity("stranger"), ns.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("stranger: %v", err)
	}
	if err := servers[1].Store().SetSuspended(context.Background(), handles.Handle{Name: "alice", Domain: "kez.test"}, true); err != nil {
		t.Fatal(err)
	}
	// Logins read each replica's view of the registry: once the views
	// hold the suspension, no replica lets alice in.
	for _, s := range servers {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := s.SyncRegistry(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	for range 4 {
		if _, err := login(alice, ns.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("suspended alice: %v", err)
		}
	}
	for _, s := range servers {
		if _, err := s.Store().Lookup(context.Background(), handles.Handle{Name: "alice", Domain: "kez.test"}); err != nil {
			t.Fatal(err)
		}
	}
}

// Without JetStream in the auth account the registry cannot open: the
// server says so on /readyz, the registry API answers 503, /v1/info still
// works, and logins are refused.
func TestJetStreamRegistryNeedsTheSnippet(t *testing.T) {
	sig := sigServer(t)
	keysDir := t.TempDir()
	conf, err := chatserver.NATSConfig(keysDir, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, conf)
	logs := newSyncBuffer()
	s := newServer(t, sig.URL, ns.ClientURL(), keysDir)
	s.StoreBackend = chatserver.StoreJetStream
	s.Logger = slog.New(slog.NewTextHandler(logs, nil))
	start(t, s)
	h := httptest.NewServer(s.Handler())
	t.Cleanup(h.Close)
	logs.waitFor(t, "nats-config --store jetstream")

	var e struct{ Error string }
	if code := getJSON(t, h.URL+"/readyz", &e); code != http.StatusServiceUnavailable || !strings.Contains(e.Error, "not open yet") {
		t.Fatalf("/readyz: %d %q", code, e.Error)
	}
	if code := getJSON(t, h.URL+"/v1/handles/alice", &e); code != http.StatusServiceUnavailable {
		t.Fatalf("lookup: %d %q", code, e.Error)
	}
	if code := getJSON(t, h.URL+chatserver.InfoPath, nil); code != 200 {
		t.Fatalf("/v1/info: %d", code)
	}
	if s.Store() != nil {
		t.Fatal("Store() before the registry opened")
	}
	if _, err := login(stacktest.Identity("alice"), ns.ClientURL()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("login: %v", err)
	}
}

func TestStoreBackendChecked(t *testing.T) {
	sig := sigServer(t)
	for name, mutate := range map[string]func(*chatserver.Server){
		"unknown backend": func(s *chatserver.Server) { s.StoreBackend = "postgres" },
		"replicas":        func(s *chatserver.Server) { s.StoreReplicas = 7 },
		"max stale":       func(s *chatserver.Server) { s.RegistryMaxStale = time.Millisecond },
	} {
		s := newServer(t, sig.URL, "nats://127.0.0.1:1", "")
		mutate(s)
		if err := s.Start(context.Background()); err == nil {
			t.Errorf("%s: started", name)
		}
		s.Close()
	}
}
