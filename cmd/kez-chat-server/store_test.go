package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// --store jetstream: "nats-config --store jetstream" gives the callout
// account JetStream, the server keeps its registry there (no SQLite file
// is made), and a claim made through one process is what a second
// process, sharing nothing but NATS and the keys, admits.
func TestServeJetStreamStore(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	conf := natsConfigOutput(t, []string{"--keys", keys, "--store", "jetstream"}, nil)
	if !strings.Contains(conf, "AUTH { jetstream: enabled, users:") {
		t.Fatalf("snippet:\n%s", conf)
	}
	ns := natstest.Run(t, conf)
	sigURL := startSig(t)

	serve := func(name string) string {
		env := map[string]string{"KEZ_SIG_SERVER": sigURL, "NATS_URL": ns.ClientURL(), "KEZ_CHAT_KEYS": keys,
			"KEZ_CHAT_STORE": "jetstream", "KEZ_CHAT_DB": filepath.Join(dir, name+".db"), "KEZ_CHAT_REPLICAS": "1",
			"KEZ_CHAT_REGISTRY_MAX_STALE": "5s"}
		return startReady(t, []string{"--listen", "127.0.0.1:0", "--domain", "chat.example"}, env).base
	}
	a, b := serve("a"), serve("b")

	ctx := context.Background()
	id := stacktest.Identity("erin")
	h := handles.Handle{Name: "erin", Domain: "chat.example"}
	if _, err := handles.Register(ctx, id, h, handles.RegisterOptions{ServerURL: a, SigServerURL: sigURL}); err != nil {
		t.Fatal(err)
	}
	if rec, err := (&handles.Client{BaseURL: b}).Lookup(ctx, "erin"); err != nil || rec.Key != id.PublicKey().String() {
		t.Fatalf("lookup at the other process: %+v %v", rec, err)
	}
	nc, err := natsconn.Connect(ctx, ns.ClientURL(), id, nats.NoReconnect())
	if err != nil {
		t.Fatalf("erin's login: %v", err)
	}
	nc.Close()
	// Logins are looked up in the registry's view (or, for a key
	// registered a moment ago, in the bucket): the view's metrics count
	// them.
	for _, base := range []string{a, b} {
		m := fetchURL(t, base+"/metrics")
		for _, want := range []string{`kez_chat_registry_view_lookups_total{answer="stale"}`, "kez_chat_registry_view_keys", "kez_chat_registry_view_age_seconds"} {
			if !strings.Contains(m, want) {
				t.Errorf("%s/metrics lacks %s", base, want)
			}
		}
	}
	if matches, _ := filepath.Glob(filepath.Join(dir, "*.db")); len(matches) != 0 {
		t.Fatalf("SQLite files made with --store jetstream: %v", matches)
	}
}

func TestNATSConfigSigServerKey(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	keys := filepath.Join(t.TempDir(), "keys")
	conf := natsConfigOutput(t, []string{"--keys", keys}, map[string]string{"KEZ_CHAT_SIG_SERVER_KEY": pub})
	if !strings.Contains(conf, "SIG { jetstream: enabled, users: [ { nkey: "+pub+" } ] }") || !strings.Contains(conf, ", "+pub+", ") {
		t.Fatalf("snippet:\n%s", conf)
	}
	natstest.Run(t, conf)

	for _, args := range [][]string{
		{"nats-config", "--keys", keys, "--store", "etcd"},
		{"--store", "etcd"},
		{"--replicas", "0"},
	} {
		var errb bytes.Buffer
		err := run(context.Background(), args, getenvFrom(map[string]string{"KEZ_SIG_SERVER": "http://x", "NATS_URL": "nats://127.0.0.1:1"}), io.Discard, &errb, nil)
		var u servercmd.UsageError
		if !errors.As(err, &u) {
			t.Errorf("%v: %v, want a usage error", args, err)
		}
	}
	var errb bytes.Buffer
	if err := run(context.Background(), []string{"nats-config", "--keys", keys, "--sig-server-key", "SUNOTAKEY"}, getenvFrom(nil), io.Discard, &errb, nil); err == nil || !strings.Contains(err.Error(), "kez-sig-server nats-key") {
		t.Errorf("a bad sig-server key: %v", err)
	}
}
