package nattest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/netlab"
)

// The servers of a topology, in its Pub namespace, each a process on
// fixed ports of netlab.PubAddr (every topology is its own network).
const (
	domain    = "kez.test"
	natsPort  = "4222"
	natsMon   = "8222"
	chatPort  = "8080"
	sigPort   = "8081"
	relayPort = "4002"
	relayHTTP = "9102"
)

var (
	binsOnce sync.Once
	binsDir  string
	binsErr  error
)

// binaries builds kez, kez-chat-server, kez-sig-server and kez-relay once
// per test binary (without the race detector: they are the system under
// test) and returns the folder holding them.
func binaries(t testing.TB) string {
	t.Helper()
	binsOnce.Do(func() {
		if binsDir, binsErr = os.MkdirTemp("", "kez-nattest-bin"); binsErr != nil {
			return
		}
		root, err := devstack.ModuleDir()
		if err != nil {
			binsErr = err
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		binsErr = devstack.Build(ctx, root, binsDir, "./cmd/kez", "./cmd/kez-chat-server", "./cmd/kez-sig-server", "./cmd/kez-relay")
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return binsDir
}

// removeBinaries deletes what binaries built (from TestMain).
func removeBinaries() {
	if binsDir != "" {
		os.RemoveAll(binsDir)
	}
}

// stack is NATS, the sig-server, the chat-server and kez-relay running in
// a topology's Pub namespace.
type stack struct {
	t    testing.TB // the test that started the stack: the servers end with it
	tp   *netlab.Topology
	bins string
	dir  string

	relay      *netlab.Proc
	relayArgs  []string
	RelayAddr  string // the relay's QUIC address, ending /p2p/<id>
	RelayAddrs []string
}

func (s *stack) url(port string) string { return "http://" + netlab.PubAddr + ":" + port }

// stackOptions shapes a stack.
type stackOptions struct {
	// RelayArgs are extra kez-relay flags (--circuit-rate…).
	RelayArgs []string
}

// startStack starts the servers and waits until each is ready; t.Cleanup
// stops them.
func startStack(t testing.TB, tp *netlab.Topology, o stackOptions) *stack {
	t.Helper()
	s := &stack{t: t, tp: tp, bins: binaries(t), dir: t.TempDir()}
	natsBin := natstest.ServerBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// kez-relay first: the chat-server names it, with its peer ID, which
	// the relay makes on first start.
	s.relayArgs = append([]string{
		"--key", filepath.Join(s.dir, "relay.key"),
		"--listen", "/ip4/" + netlab.PubAddr + "/tcp/" + relayPort + ",/ip4/" + netlab.PubAddr + "/udp/" + relayPort + "/quic-v1",
		"--http", netlab.PubAddr + ":" + relayHTTP,
	}, o.RelayArgs...)
	s.StartRelay(t)

	keys := filepath.Join(s.dir, "keys")
	conf, err := exec.Command(filepath.Join(s.bins, "kez-chat-server"), "nats-config", "--keys", keys).Output()
	if err != nil {
		t.Fatalf("kez-chat-server nats-config: %v", err)
	}
	natsConf := filepath.Join(s.dir, "nats.conf")
	if err := os.WriteFile(natsConf, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	nats := tp.Pub.Start(t, "nats", natsBin, "-c", natsConf, "-a", netlab.PubAddr, "-p", natsPort, "-m", natsMon,
		"-js", "-sd", filepath.Join(s.dir, "nats"))
	s.waitHTTP(t, ctx, nats, s.url(natsMon)+"/healthz")

	sig := tp.Pub.Start(t, "sig-server", filepath.Join(s.bins, "kez-sig-server"),
		"--listen", netlab.PubAddr+":"+sigPort, "--db", filepath.Join(s.dir, "sig.db"),
		"--log-checkpoint-interval", devstack.SigLogCheckpointInterval.String(),
		"--appends-per-ip", "off", "--chains-per-ip", "off", "--appends-per-key", "off", "--reads-per-ip", "off")
	s.waitHTTP(t, ctx, sig, s.url(sigPort)+"/readyz")

	chat := tp.Pub.Start(t, "chat-server", filepath.Join(s.bins, "kez-chat-server"),
		"--listen", netlab.PubAddr+":"+chatPort, "--domain", domain, "--sig-server", s.url(sigPort),
		"--nats", "nats://"+netlab.PubAddr+":"+natsPort, "--db", filepath.Join(s.dir, "chat.db"), "--keys", keys,
		"--relay", s.RelayAddr,
		"--claims-per-ip", "off", "--claims-per-key", "off", "--reads-per-ip", "off")
	s.waitHTTP(t, ctx, chat, s.url(chatPort)+"/readyz")
	return s
}

// relayIDPattern finds the relay's peer ID in what it prints.
var relayIDPattern = regexp.MustCompile(`/p2p/(12D3Koo[1-9A-HJ-NP-Za-km-z]+)`)

// StartRelay starts kez-relay (again, after StopRelay, with the same key
// and ports) and waits until it is ready. It runs until StopRelay or the
// end of the test that started the stack (not t's, a subtest's).
func (s *stack) StartRelay(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s.relay = s.tp.Pub.Start(s.t, "relay", filepath.Join(s.bins, "kez-relay"), s.relayArgs...)
	s.waitHTTP(t, ctx, s.relay, s.url(relayHTTP)+"/readyz")
	line, err := s.relay.WaitLine(ctx, "/p2p/12D3Koo")
	if err != nil {
		t.Fatal(err)
	}
	id := relayIDPattern.FindStringSubmatch(line)[1]
	s.RelayAddr = "/ip4/" + netlab.PubAddr + "/udp/" + relayPort + "/quic-v1/p2p/" + id
}

// StopRelay stops kez-relay.
func (s *stack) StopRelay(t testing.TB) {
	t.Helper()
	if err := s.relay.Stop(); err != nil {
		t.Error(err)
	}
}

// RelayBytes returns the bytes the relay has carried through circuits,
// both directions (kez_relay_bytes_total in its /metrics).
func (s *stack) RelayBytes(t testing.TB) float64 {
	t.Helper()
	resp, err := s.tp.Pub.HTTPClient().Get(s.url(relayHTTP) + "/metrics")
	if err != nil {
		t.Fatalf("the relay's metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "kez_relay_bytes_total") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("the relay's metrics: %q", line)
		}
		sum += v
	}
	return sum
}

// waitHTTP polls url from inside Pub until it answers 200 (polling is
// the only way to learn that another process is ready), p exits, or ctx
// ends.
func (s *stack) waitHTTP(t testing.TB, ctx context.Context, p *netlab.Proc, url string) {
	t.Helper()
	client := s.tp.Pub.HTTPClient()
	client.Timeout = time.Second
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.Done():
			t.Fatalf("%s exited while starting: %v", p.Name, p.Err())
		case <-ctx.Done():
			t.Fatalf("%s is not ready at %s: %v", p.Name, url, ctx.Err())
		case <-tick.C:
		}
	}
}

// user is a person with a kez install in a namespace.
type user struct {
	name string
	ns   *netlab.Namespace
	home string
	env  []string
	bin  string
}

// NewUser makes name's install in ns with the kez CLI (init, register).
func (s *stack) NewUser(t testing.TB, name string, ns *netlab.Namespace) *user {
	t.Helper()
	u := &user{name: name, ns: ns, home: filepath.Join(t.TempDir(), name), bin: filepath.Join(s.bins, "kez")}
	u.env = append(os.Environ(),
		"KEZ_HOME="+u.home,
		"KEZ_SERVER="+s.url(chatPort),
		"KEZ_SIG_SERVER="+s.url(sigPort),
		"NATS_URL=nats://"+netlab.PubAddr+":"+natsPort,
		"KEZ_DOMAIN="+domain,
	)
	u.MustRun(t, "init", "--yes")
	u.MustRun(t, "register", name)
	return u
}

// result is what a kez command did.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// Run runs kez with args in the user's namespace and waits for it (at
// most timeout).
func (u *user) Run(t testing.TB, timeout time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := u.ns.Command(u.bin, args...)
	cmd.Env = u.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s: kez %s did not end within %s\nstdout:\n%s\nstderr:\n%s", u.name, strings.Join(args, " "), timeout, &out, &errb)
	}
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// MustRun is Run that fails the test unless kez exits 0.
func (u *user) MustRun(t testing.TB, args ...string) result {
	t.Helper()
	r := u.Run(t, time.Minute, args...)
	if r.code != 0 {
		t.Fatalf("%s: kez %s: exit %d\nstdout:\n%s\nstderr:\n%s", u.name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// Start runs kez with args in the background (until t ends or Stop).
func (u *user) Start(t testing.TB, args ...string) *netlab.Proc {
	t.Helper()
	cmd := u.ns.Command(u.bin, args...)
	cmd.Env = u.env
	return netlab.StartCmd(t, u.name+" kez "+args[0], cmd)
}

// Serve runs "kez serve" and waits until it is online.
func (u *user) Serve(t testing.TB) *netlab.Proc {
	t.Helper()
	return u.serveUntil(t, "Online as")
}

// ServeRelayed runs "kez serve" and waits until it is reachable through
// the relay.
func (u *user) ServeRelayed(t testing.TB) *netlab.Proc {
	t.Helper()
	return u.serveUntil(t, "Reachable through the relay")
}

func (u *user) serveUntil(t testing.TB, line string) *netlab.Proc {
	t.Helper()
	p := u.Start(t, "serve")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.WaitLine(ctx, line); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeFile writes size pseudo-random bytes (fixed by seed) to a new file
// and returns its path.
func writeFile(t testing.TB, name string, size int, seed byte) string {
	t.Helper()
	b := make([]byte, size)
	x := uint32(seed) + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sameFile fails the test unless the files hold the same bytes.
func sameFile(t testing.TB, want, got string) {
	t.Helper()
	a, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatalf("the fetched file: %v", err)
	}
	if !bytes.Equal(a, b) {
		t.Fatalf("%s differs from %s (%d bytes, want %d)", got, want, len(b), len(a))
	}
}

func fmtBytes(n float64) string { return fmt.Sprintf("%.0f B", n) }
