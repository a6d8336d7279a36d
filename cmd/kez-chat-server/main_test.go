package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/nats-io/nats.go"
)

// Two relay addresses with real peer ids.
const (
	relay1 = "/ip4/192.0.2.1/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"
	relay2 = "/ip4/192.0.2.2/udp/4002/quic-v1/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"
)

func getenvFrom(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// natsConfigOutput runs "kez-chat-server nats-config" in-process.
func natsConfigOutput(t *testing.T, args []string, env map[string]string) string {
	t.Helper()
	var out, errb bytes.Buffer
	if err := run(context.Background(), append([]string{"nats-config"}, args...), getenvFrom(env), &out, &errb, nil); err != nil {
		t.Fatalf("nats-config: %v\n%s", err, errb.String())
	}
	return out.String()
}

// The snippet the operator is told to add is exactly what the test stack's
// NATS runs with.
func TestNATSConfigIsWhatTheStackRuns(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	printed := natsConfigOutput(t, []string{"--keys", st.KeysDir}, nil)
	running, err := os.ReadFile(st.NATS().ConfigFile())
	if err != nil {
		t.Fatal(err)
	}
	if printed != string(running) {
		t.Fatalf("printed snippet:\n%s\nthe stack's NATS runs with:\n%s", printed, running)
	}
	keys := st.Chat.Keys()
	for _, want := range []string{
		"issuer: " + keys.IssuerPublicKey(),
		"xkey: " + keys.XKeyPublicKey(),
		"auth_users: [ " + keys.ServicePublicKey() + ", " + keys.AdminPublicKey() + ", " + keys.SystemPublicKey() + ", " + keys.KickerPublicKey() + " ]",
		"nkey: " + keys.ServicePublicKey(),
		"account: AUTH",
		"  CHAT {\n    jetstream: enabled\n",
		"  USERS {\n    limits: { max_payload: 131072, max_subs: 256 }\n    exports: [\n",
		"system_account: SYS",
	} {
		if !strings.Contains(printed, want) {
			t.Errorf("snippet lacks %q", want)
		}
	}
	// It holds no secret.
	for _, seed := range []string{"SA", "SX", "SU"} {
		for _, f := range strings.Fields(printed) {
			if strings.HasPrefix(f, seed) && len(f) > 50 {
				t.Errorf("snippet holds what looks like a seed: %s…", f[:4])
			}
		}
	}
}

func TestNATSConfigCreatesKeysOnce(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	first := natsConfigOutput(t, nil, map[string]string{"KEZ_CHAT_KEYS": dir})
	for _, f := range []string{callout.IssuerKeyFile, callout.XKeyFile, callout.ServiceKeyFile, callout.ProvisionerKeyFile, callout.AdminKeyFile, callout.SystemKeyFile, callout.KickerKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if again := natsConfigOutput(t, []string{"--keys", dir}, nil); again != first {
		t.Fatal("a second run printed another snippet: the keys were replaced")
	}
	// nats-server itself accepts it.
	natstest.Run(t, first)
}

// startSig runs a real sig-server.
func startSig(t *testing.T) string {
	t.Helper()
	st, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewServer(sigchain.NewHandler(st))
	t.Cleanup(srv.Close)
	return srv.URL
}

// The whole program in-process: NATS configured with the printed snippet,
// a user registers over HTTP and logs in to NATS; cancelling (SIGTERM)
// stops it cleanly.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	ns := natstest.Run(t, natsConfigOutput(t, []string{"--keys", keys}, nil))
	sigURL := startSig(t)

	env := map[string]string{"KEZ_SIG_SERVER": sigURL, "NATS_URL": ns.ClientURL(), "KEZ_CHAT_DB": filepath.Join(dir, "chat.db"), "KEZ_CHAT_KEYS": keys}
	srv := startReady(t, []string{"--listen", "127.0.0.1:0", "--domain", "chat.example", "--log-format", "json"}, env)
	base, logs := srv.base, srv.logs

	rctx := context.Background()
	id := stacktest.Identity("dave")
	h := handles.Handle{Name: "dave", Domain: "chat.example"}
	if _, err := handles.Register(rctx, id, h, handles.RegisterOptions{ServerURL: base, SigServerURL: sigURL}); err != nil {
		t.Fatal(err)
	}
	nc, err := natsconn.Connect(rctx, ns.ClientURL(), id, nats.NoReconnect())
	if err != nil {
		t.Fatalf("dave's login: %v\n%s", err, logs)
	}
	nc.Close()

	srv.cancel()
	select {
	case <-srv.done:
		if srv.err != nil {
			t.Fatalf("run after cancel: %v", srv.err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	for _, want := range []string{`"msg":"shutting down"`, `"msg":"chat-server stopped"`, `"msg":"auth callout listening"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %s", want)
		}
	}
}

// ready is the program run in-process by startReady.
type ready struct {
	base   string // http://127.0.0.1:PORT
	logs   *testlog.Buffer
	cancel context.CancelFunc // as SIGTERM does
	done   chan struct{}      // closed when run returned, with err
	err    error
}

// startReady runs the program with args and env in-process and returns
// once /readyz answers 200: the callout is logged in and the inbox stream
// exists. It is stopped in t.Cleanup.
func startReady(t *testing.T, args []string, env map[string]string) *ready {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &ready{logs: &testlog.Buffer{}, cancel: cancel, done: make(chan struct{})}
	addrc := make(chan net.Addr, 1)
	go func() {
		r.err = run(ctx, args, getenvFrom(env), io.Discard, r.logs, func(a net.Addr) { addrc <- a })
		close(r.done)
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	select {
	case a := <-addrc:
		r.base = "http://" + a.String()
	case <-r.done:
		t.Fatalf("run: %v\n%s", r.err, r.logs)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(r.base + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == 200 {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready:\n%s", r.logs)
		}
		time.Sleep(20 * time.Millisecond) // polling a server that waits on NATS
	}
}

func TestUsageErrors(t *testing.T) {
	full := map[string]string{"KEZ_DOMAIN": "chat.example", "KEZ_SIG_SERVER": "http://127.0.0.1:1", "NATS_URL": "nats://127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "--domain"},
		{nil, map[string]string{"KEZ_DOMAIN": ""}, "--domain"},
		{[]string{"--domain", ""}, map[string]string{"KEZ_DOMAIN": "chat.example"}, "--domain"},
		{[]string{"--domain", "chat.example"}, nil, "--sig-server"},
		{nil, map[string]string{"KEZ_DOMAIN": "chat.example", "KEZ_SIG_SERVER": "http://x"}, "--nats"},
		{[]string{"--log-format", "xml"}, full, "--log-format"},
		{[]string{"--log-level", "loud"}, full, "--log-level"},
		{[]string{"extra"}, full, "nats-config"},
		{[]string{"--registry-max-stale", "1ms"}, full, "--registry-max-stale 1ms"},
		{[]string{"--registry-max-stale", "-1s"}, full, "--registry-max-stale -1s"},
		{nil, map[string]string{"KEZ_DOMAIN": "chat.example", "KEZ_SIG_SERVER": "http://x", "NATS_URL": "nats://x", "KEZ_CHAT_REGISTRY_MAX_STALE": "soon"}, "KEZ_CHAT_REGISTRY_MAX_STALE"},
		{[]string{"--nope"}, full, "nope"},
		{[]string{"--relay", "/ip4/192.0.2.1/tcp/4002"}, full, "/p2p/<peer id>"},
		{[]string{"--relay", relay1, "--relay", relay1}, full, "twice"},
		{nil, map[string]string{"KEZ_DOMAIN": "chat.example", "KEZ_SIG_SERVER": "http://x", "NATS_URL": "nats://x", "KEZ_RELAYS": relay1 + ",relay.example:4002"}, "KEZ_RELAYS \"relay.example:4002\""},
		{nil, map[string]string{"KEZ_DOMAIN": "chat.example", "KEZ_SIG_SERVER": "http://x", "NATS_URL": "nats://x", "KEZ_RELAYS": strings.Repeat(relay1+",", 9)}, "at most 8"},
		{[]string{"--drain-timeout", "0s"}, full, "--drain-timeout"},
		{nil, map[string]string{"KEZ_DOMAIN": "chat.example", "KEZ_SIG_SERVER": "http://x", "NATS_URL": "nats://x", "KEZ_CHAT_DRAIN_TIMEOUT": "soon"}, "KEZ_CHAT_DRAIN_TIMEOUT"},
		{[]string{"nats-config", "extra"}, nil, "unexpected"},
		{[]string{"nats-config", "--nope"}, nil, "nope"},
	} {
		var errb bytes.Buffer
		err := run(context.Background(), tc.args, getenvFrom(tc.env), io.Discard, &errb, nil)
		var u servercmd.UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error()+errb.String(), tc.want) {
			t.Errorf("%v: got %v, want a usage error about %q", tc.args, err, tc.want)
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"nats-config", "--help"}, getenvFrom(nil), io.Discard, &out, nil); err != nil || !strings.Contains(out.String(), "restart NATS") {
		t.Errorf("nats-config --help: %v\n%s", err, out.String())
	}
}

// TestMain lets TestSIGTERM run this test binary as the real program.
func TestMain(m *testing.M) {
	if os.Getenv("KEZ_CHAT_SERVER_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSIGTERM(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "--listen", "127.0.0.1:0", "--domain", "chat.example", "--relay", relay1, "--relay", relay2)
	cmd.Env = append(os.Environ(), "KEZ_CHAT_SERVER_RUN_MAIN=1", "KEZ_RELAYS=/ip4/192.0.2.9/tcp/1/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC", // the flags win
		"KEZ_SIG_SERVER="+startSig(t), "NATS_URL=nats://127.0.0.1:1", // NATS down: the server still serves and stops
		"KEZ_CHAT_DB="+filepath.Join(dir, "chat.db"), "KEZ_CHAT_KEYS="+filepath.Join(dir, "keys"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	br := bufio.NewReader(stderr)
	var addr string
	for addr == "" {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the server never logged its address: %v", err)
		}
		_, addr, _ = strings.Cut(strings.TrimSpace(line), "msg=listening addr=")
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz without NATS: %d", resp.StatusCode)
	}
	info, err := (&handles.Client{BaseURL: "http://" + addr}).Info(context.Background())
	if err != nil || !slices.Equal(info.Relays, []string{relay1, relay2}) {
		t.Fatalf("/v1/info: %+v %v", info, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(br)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, rest)
	}
	if !strings.Contains(string(rest), "chat-server stopped") {
		t.Fatalf("no shutdown log: %s", rest)
	}
}
