package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

func getenvFrom(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// running is the program run in-process by start.
type running struct {
	stdout, logs *testlog.Buffer
	http         string             // http://127.0.0.1:PORT
	relays       []string           // the --relay addresses it printed
	cancel       context.CancelFunc // as SIGTERM does
	done         chan struct{}      // closed when run returned, with err
	err          error
}

// start runs the program with args and env in-process until its HTTP
// server listens; it is stopped in t.Cleanup.
func start(t *testing.T, args []string, env map[string]string) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{stdout: &testlog.Buffer{}, logs: &testlog.Buffer{}, cancel: cancel, done: make(chan struct{})}
	addrc := make(chan net.Addr, 1)
	go func() {
		r.err = run(ctx, args, getenvFrom(env), r.stdout, r.logs, func(a net.Addr) { addrc <- a })
		close(r.done)
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	select {
	case a := <-addrc:
		r.http = "http://" + a.String()
	case <-r.done:
		t.Fatalf("run: %v\n%s", r.err, r.logs)
	}
	for _, line := range strings.Split(r.stdout.String(), "\n") {
		if a, ok := strings.CutPrefix(strings.TrimSpace(line), "--relay "); ok {
			r.relays = append(r.relays, a)
		}
	}
	return r
}

// The environment twins configure the relay, flags win; it prints its
// addresses as --relay flags the chat-server takes, a peer reserves a
// slot at one of them, the key file is made 0600 and kept, and the
// metrics are served.
func TestServe(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "relay.key")
	env := map[string]string{
		"KEZ_RELAY_LISTEN":                  "/ip4/192.0.2.1/tcp/1", // the flag wins
		"KEZ_RELAY_KEY":                     keyFile,
		"KEZ_RELAY_MAX_RESERVATIONS":        "1",
		"KEZ_RELAY_CIRCUIT_DATA":            "64k",
		"KEZ_RELAY_CIRCUIT_DURATION":        "0",
		"KEZ_RELAY_LOG_FORMAT":              "json",
		"KEZ_RELAY_RESERVATION_TTL":         "2h",
		"KEZ_RELAY_CIRCUIT_RATE":            "1M",
		"KEZ_RELAY_MAX_CIRCUITS":            "lots", // the flag wins, so this is never read
		"KEZ_RELAY_REGISTRY_LOOKUPS_PER_IP": "5/1m",
	}
	r := start(t, []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0", "--max-circuits", "2"}, env)
	if len(r.relays) != 1 {
		t.Fatalf("printed relays %q:\n%s", r.relays, r.stdout)
	}
	addr, err := handles.ParseRelay(r.relays[0])
	if err != nil || !strings.HasPrefix(addr, "/ip4/127.0.0.1/tcp/") {
		t.Fatalf("the printed address %q: %v", r.relays[0], err)
	}
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the key file: %v %v", err, st)
	}
	for _, want := range []string{`"max_reservations":1`, `"max_circuits":2`, `"circuit_data":65536`, `"circuit_duration":0`, `"reservation_ttl":7200000000000`, `"circuit_rate":1048576`} {
		if !strings.Contains(r.logs.String(), want) {
			t.Errorf("the limits log lacks %s:\n%s", want, r.logs)
		}
	}

	ai, err := peer.AddrInfoFromString(addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, b := newPeer(t), newPeer(t)
	rsvp, err := client.Reserve(ctx, a, *ai)
	if err != nil || rsvp.LimitData != 64<<10 || rsvp.LimitDuration < 100*365*24*time.Hour {
		t.Fatalf("a reservation: %v %+v", err, rsvp)
	}
	var re client.ReservationError
	if _, err := client.Reserve(ctx, b, *ai); !errors.As(err, &re) || re.Status != pbv2.Status_RESERVATION_REFUSED {
		t.Fatalf("a second reservation over --max-reservations 1: %v", err)
	}
	resp, err := http.Get(r.http + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"kez_relay_bytes_total", "libp2p_relaysvc_reservations_total", "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	r.cancel()
	<-r.done
	if r.err != nil {
		t.Fatalf("run after cancel: %v", r.err)
	}
	// The key is kept: the same peer id next time.
	again := start(t, []string{"--listen", "/ip4/127.0.0.1/tcp/0", "--http", "127.0.0.1:0", "--key", keyFile}, nil)
	if len(again.relays) != 1 || !strings.HasSuffix(again.relays[0], "/p2p/"+ai.ID.String()) {
		t.Fatalf("after a restart: %q, want peer id %s", again.relays, ai.ID)
	}
}

// newPeer is a libp2p host on loopback, closed in t.Cleanup.
func newPeer(t *testing.T) host.Host {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.Transport(tcp.NewTCPTransport), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open.key")
	os.WriteFile(open, []byte("x"), 0o644)
	os.Chmod(open, 0o644)
	base := map[string]string{"KEZ_RELAY_KEY": filepath.Join(dir, "k"), "KEZ_RELAY_LISTEN": "/ip4/127.0.0.1/tcp/0", "KEZ_RELAY_HTTP": "127.0.0.1:0"}
	with := func(k, v string) map[string]string {
		m := map[string]string{k: v}
		for k, v := range base {
			if _, ok := m[k]; !ok {
				m[k] = v
			}
		}
		return m
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"extra"}, base, "flags only"},
		{[]string{"--nope"}, base, "nope"},
		{[]string{"--listen", "127.0.0.1:4002"}, base, `--listen "127.0.0.1:4002": not a multiaddr`},
		{[]string{"--listen", ","}, base, "--listen is empty"},
		{[]string{"--announce", "relay.example.org"}, base, `--announce "relay.example.org"`},
		{[]string{"--announce", "/ip4/192.0.2.1/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"}, base, "without /p2p"},
		{[]string{"--max-circuits", "0"}, base, "--max-circuits 0: want at least 1"},
		{nil, with("KEZ_RELAY_MAX_RESERVATIONS", "many"), `KEZ_RELAY_MAX_RESERVATIONS "many": want a number`},
		{[]string{"--circuit-data", "4 gigabytes"}, base, "circuit-data"},
		{nil, with("KEZ_RELAY_CIRCUIT_RATE", "-5"), `KEZ_RELAY_CIRCUIT_RATE "-5"`},
		{[]string{"--circuit-duration", "-1h"}, base, "--circuit-duration -1h0m0s: want a positive duration"},
		{nil, with("KEZ_RELAY_RESERVATION_TTL", "soon"), `KEZ_RELAY_RESERVATION_TTL "soon"`},
		{[]string{"--reservation-ttl", "1s"}, base, "--reservation-ttl 1s: want at least 1m0s"},
		{[]string{"--registry", "ftp://chat.example.org"}, base, "not an http(s) base URL"},
		{[]string{"--registry-lookups-per-ip", "off"}, base, "give a limit"},
		{[]string{"--registry-lookups-per-ip", "fast"}, base, "registry-lookups-per-ip"},
		{[]string{"--log-format", "xml"}, base, "--log-format"},
	} {
		var errb bytes.Buffer
		err := run(context.Background(), tc.args, getenvFrom(tc.env), io.Discard, &errb, nil)
		var u servercmd.UsageError
		if !errors.As(err, &u) || !strings.Contains(err.Error()+errb.String(), tc.want) {
			t.Errorf("%v %v: got %v, want a usage error about %q", tc.args, tc.env, err, tc.want)
		}
	}
	// A key file others may read is refused, and said so.
	err := run(context.Background(), []string{"--key", open}, getenvFrom(base), io.Discard, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("an open key file: %v", err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, getenvFrom(nil), io.Discard, &out, nil); err != nil || !strings.Contains(out.String(), "--relay") || !strings.Contains(out.String(), "KEZ_RELAY_CIRCUIT_RATE") {
		t.Errorf("--help: %v\n%s", err, out.String())
	}
}

// TestMain lets TestSIGTERM run this test binary as the real program.
func TestMain(m *testing.M) {
	if os.Getenv("KEZ_RELAY_RUN_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestSIGTERM(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "--listen", "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1", "--http", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), "KEZ_RELAY_RUN_MAIN=1", "KEZ_RELAY_KEY="+filepath.Join(dir, "relay.key"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	out := bufio.NewReader(stdout)
	var relays []string
	for len(relays) < 2 {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("the relay printed %q, then %v", relays, err)
		}
		if a, ok := strings.CutPrefix(strings.TrimSpace(line), "--relay "); ok {
			relays = append(relays, a)
		}
	}
	if !strings.Contains(relays[0]+relays[1], "/tcp/") || !strings.Contains(relays[0]+relays[1], "/quic-v1/") {
		t.Errorf("printed %q", relays)
	}
	br := bufio.NewReader(stderr)
	var addr string
	for addr == "" {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the relay never logged its HTTP address: %v", err)
		}
		_, addr, _ = strings.Cut(strings.TrimSpace(line), "msg=listening addr=")
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz: %d", resp.StatusCode)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(br)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, rest)
	}
	if !strings.Contains(string(rest), "relay stopped") {
		t.Fatalf("no shutdown log: %s", rest)
	}
}
