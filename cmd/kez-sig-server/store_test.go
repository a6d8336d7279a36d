package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
)

// natsKey runs "kez-sig-server nats-key" and returns what it printed.
func natsKey(t *testing.T, file string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"nats-key", "--nats-key", file}, func(string) string { return "" }, &out, &errOut, nil); err != nil {
		t.Fatalf("nats-key: %v\n%s", err, errOut.String())
	}
	return strings.TrimSpace(out.String())
}

// readyz polls /readyz until it answers 200 or the deadline passes, and
// returns the last answer.
func readyz(t *testing.T, url string, want int) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode == want {
			return e.Error
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q, want %d", resp.StatusCode, e.Error, want)
		}
		time.Sleep(20 * time.Millisecond) // polling a real server coming up
	}
}

// Two sig-servers keep chains in JetStream: a link appended at one is
// served by the other and survives both being restarted.
func TestJetStreamStore(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "keys", "sig.nk")
	pub := natsKey(t, keyFile)
	if again := natsKey(t, keyFile); again != pub || !strings.HasPrefix(pub, "U") {
		t.Fatalf("nats-key: %q then %q", pub, again)
	}
	if fi, err := os.Stat(keyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi.Mode(), err)
	}
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	conf, err := callout.NATSConfig(keys, callout.ConfigOptions{SigServerKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, conf)
	env := map[string]string{"NATS_URL": ns.ClientURL(), "KEZ_SIG_STORE": "jetstream", "KEZ_SIG_NATS_KEY": keyFile}
	a, stopA, _ := start(t, []string{"--listen", "127.0.0.1:0"}, env)
	b, _, _ := start(t, []string{"--listen", "127.0.0.1:0"}, env)
	readyz(t, a, 200)
	readyz(t, b, 200)

	id, err := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	if err != nil {
		t.Fatal(err)
	}
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := (&sigchain.Client{BaseURL: a}).Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	st, err := (&sigchain.Client{BaseURL: b}).FetchVerified(ctx, id.PublicKey(), nil)
	if err != nil || st.Handle() != "alice@kez.lat" {
		t.Fatalf("at the other replica: %v %v", st, err)
	}
	// Another first link conflicts at the other replica.
	l2, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "mallory@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var ce *sigchain.ConflictError
	if err := (&sigchain.Client{BaseURL: b}).Append(ctx, l2); !errors.As(err, &ce) {
		t.Fatalf("a competing first link: %v", err)
	}
	// A prekey published at one replica is served by the other; an older
	// one is refused there.
	pk := storetest.Prekey(t, id, 1, time.Now(), 14*24*time.Hour)
	if err := (&sigchain.Client{BaseURL: a}).PublishPrekey(ctx, pk); err != nil {
		t.Fatal(err)
	}
	if got, err := (&sigchain.Client{BaseURL: b}).FetchPrekey(ctx, id.PublicKey()); err != nil || got.ID != 1 {
		t.Fatalf("the prekey at the other replica: %v %v", got, err)
	}
	older := storetest.Prekey(t, id, 2, pk.Created.Add(-time.Second), 14*24*time.Hour)
	if err := (&sigchain.Client{BaseURL: b}).PublishPrekey(ctx, older); !errors.Is(err, sigchain.ErrStalePrekey) {
		t.Fatalf("an older prekey at the other replica: %v", err)
	}
	// A group created at one replica is served by the other, which
	// refuses another create of its name.
	create, err := group.NewCreate(id, id.PublicKey(), "team@kez.lat", "alice@kez.lat", "Team", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := group.NewClient(a, nil).Append(ctx, create); err != nil {
		t.Fatal(err)
	}
	team, err := group.NewClient(b, nil).Load(ctx, "team@kez.lat", nil, nil)
	if err != nil || team.Title() != "Team" {
		t.Fatalf("the group at the other replica: %v", err)
	}
	again, _ := group.NewCreate(id, id.PublicKey(), "team@kez.lat", "alice@kez.lat", "Other", time.Now())
	if err := group.NewClient(b, nil).Append(ctx, again); !errors.Is(err, group.ErrNameTaken) {
		t.Fatalf("another create of the name at the other replica: %v", err)
	}
	if err := stopA(); err != nil {
		t.Fatal(err)
	}
	c, _, _ := start(t, []string{"--listen", "127.0.0.1:0"}, env)
	readyz(t, c, 200)
	if got, err := (&sigchain.Client{BaseURL: c}).FetchVerified(ctx, id.PublicKey(), st); err != nil || got.Pin() != st.Pin() {
		t.Fatalf("after a restart: %v %v", got, err)
	}
	if got, err := (&sigchain.Client{BaseURL: c}).FetchPrekey(ctx, id.PublicKey()); err != nil || got.ID != 1 {
		t.Fatalf("the prekey after a restart: %v %v", got, err)
	}
	if got, err := group.NewClient(c, nil).Load(ctx, "team@kez.lat", team, nil); err != nil || got.Pin() != team.Pin() {
		t.Fatalf("the group after a restart: %v", err)
	}
}

// A key the NATS configuration does not name is refused: the server
// stays up, says why on /readyz and answers the API with 503.
func TestJetStreamStoreUnknownKey(t *testing.T) {
	keys, _ := callout.GenerateKeys()
	conf, err := callout.NATSConfig(keys, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, conf)
	url, _, logs := start(t, []string{"--listen", "127.0.0.1:0", "--store", "jetstream", "--nats", ns.ClientURL(),
		"--nats-key", filepath.Join(t.TempDir(), "sig.nk")}, nil)
	if msg := readyz(t, url, http.StatusServiceUnavailable); !strings.Contains(msg, "not logged in to NATS") {
		t.Fatalf("/readyz: %q", msg)
	}
	resp, err := http.Get(url + "/v1/chains/UAAA")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("API: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "nats-config --sig-server-key") {
		if time.Now().After(deadline) {
			t.Fatalf("no advice in the log:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond) // waiting on the real server's refusal
	}
}

func TestStoreUsageErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.nk")
	os.WriteFile(bad, []byte("SAnotauserseed\n"), 0o600)
	for name, tc := range map[string]struct {
		args  []string
		usage bool
	}{
		"unknown store":    {[]string{"--store", "etcd"}, true},
		"no NATS URL":      {[]string{"--store", "jetstream"}, true},
		"replicas":         {[]string{"--store", "jetstream", "--nats", "nats://127.0.0.1:1", "--replicas", "9"}, true},
		"not a seed":       {[]string{"--store", "jetstream", "--nats", "nats://127.0.0.1:1", "--nats-key", bad}, false},
		"nats-key extra":   {[]string{"nats-key", "x"}, true},
		"nats-key badflag": {[]string{"nats-key", "--nope"}, true},
	} {
		var out bytes.Buffer
		err := run(context.Background(), append(tc.args, "--listen", "127.0.0.1:0"), func(string) string { return "" }, &out, &out, nil)
		if tc.args[0] == "nats-key" {
			err = run(context.Background(), tc.args, func(string) string { return "" }, &out, &out, nil)
		}
		var u servercmd.UsageError
		if err == nil || errors.As(err, &u) != tc.usage {
			t.Errorf("%s: %v (usage error wanted: %v)", name, err, tc.usage)
		}
	}
}
