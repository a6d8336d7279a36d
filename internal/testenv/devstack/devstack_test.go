package devstack

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/logserver"
	"github.com/nats-io/nats.go"
)

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222": "nats://127.0.0.1:4222",
		"kez.test":              "kez.test",
		"":                      "''",
		"a b":                   "'a b'",
		"it's":                  `'it'\''s'`,
		"$(rm -rf /)":           "'$(rm -rf /)'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
	s := &Stack{NATSURL: "nats://127.0.0.1:1", ServerURL: "http://127.0.0.1:2", SigServerURL: "http://127.0.0.1:3", Domain: "kez.test"}
	want := "export NATS_URL=nats://127.0.0.1:1\nexport KEZ_SERVER=http://127.0.0.1:2\nexport KEZ_SIG_SERVER=http://127.0.0.1:3\nexport KEZ_DOMAIN=kez.test\n"
	if got := s.Env(); got != want {
		t.Errorf("Env:\n%s\nwant:\n%s", got, want)
	}
}

// start starts a stack and closes it in t.Cleanup.
func start(t *testing.T, cfg Config) *Stack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// identity is a deterministic test identity.
func identity(t *testing.T, name string) *kez.Identity {
	t.Helper()
	e := sha256.Sum256([]byte("kez devstack test " + name))
	m, err := kez.MnemonicFromEntropy(e[:])
	if err != nil {
		t.Fatal(err)
	}
	id, err := kez.FromMnemonic(m)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// register registers name on st as "kez register" does.
func register(t *testing.T, st *Stack, name string) *kez.Identity {
	t.Helper()
	id := identity(t, name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h := handles.Handle{Name: name, Domain: st.Domain}
	if _, err := handles.Register(ctx, id, h, handles.RegisterOptions{ServerURL: st.ServerURL, SigServerURL: st.SigServerURL}); err != nil {
		t.Fatalf("registering %s: %v", h, err)
	}
	return id
}

// wantLogged checks that the sig-server at url keeps a log named origin
// and proves id's chain head with it.
func wantLogged(t *testing.T, url, origin string, id *kez.Identity) {
	t.Helper()
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
	}
	var info translog.Info
	get(logserver.InfoPath, &info)
	if info.Log == nil || info.Log.Origin != origin {
		t.Fatalf("/v1/info: %+v, want a log named %s", info.Log, origin)
	}
	var page struct {
		HeadSeqno uint64              `json:"head_seqno"`
		Head      string              `json:"head"`
		Log       *translog.HeadProof `json:"log"`
	}
	get(sigchain.ChainsPath+id.PublicKey().String(), &page)
	if page.Log == nil {
		t.Fatal("the chain has no proof")
	}
	m := &translog.Monitor{Pins: translog.NewMemPins(), RequireLog: true}
	e := translog.Entry{Key: id.PublicKey(), Seqno: page.HeadSeqno, ID: page.Head}
	if err := m.CheckHead(context.Background(), url, e, page.Log); err != nil {
		t.Fatalf("the head's proof: %v", err)
	}
}

// login logs id in to NATS at url through the callout, as a client does.
func login(t *testing.T, url string, id *kez.Identity) error {
	t.Helper()
	nc, err := natsconn.Connect(context.Background(), url, id, nats.NoReconnect())
	if err == nil {
		nc.Close()
	}
	return err
}

// listening reports whether something accepts connections on addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return err == nil
}

func hostPort(t *testing.T, url string) string {
	t.Helper()
	_, hp, ok := strings.Cut(url, "://")
	if !ok {
		t.Fatalf("URL %q", url)
	}
	return hp
}

// Everything in this process: Start brings it up and writes the env file,
// NATS stops and starts again on the same port, and Close takes it all
// down and frees every port.
func TestInProcess(t *testing.T) {
	dir := t.TempDir()
	st := start(t, Config{Dir: dir, Domain: "dev.example"})
	env, err := os.ReadFile(filepath.Join(dir, EnvFile))
	if err != nil || string(env) != st.Env() || !strings.Contains(string(env), "KEZ_DOMAIN=dev.example") {
		t.Fatalf("env file: %v\n%s", err, env)
	}
	if st.NATS() == nil || st.NATSPID() != 0 || st.Chat == nil || st.ChatServerPID() != 0 || st.SigServerPID() != 0 {
		t.Fatal("everything should run in this process")
	}
	if conf, err := os.ReadFile(filepath.Join(dir, NATSConfFile)); err != nil || string(conf) != st.NATSConfig {
		t.Fatalf("nats.conf is not the rendered configuration (%v)", err)
	}
	alice := register(t, st, "alice")
	if err := login(t, st.NATSURL, alice); err != nil {
		t.Fatalf("alice's NATS login: %v", err)
	}
	wantLogged(t, st.SigServerURL, "dev.example/sigchain-log", alice)
	if err := login(t, st.NATSURL, identity(t, "stranger")); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("a key without a handle logged in: %v", err)
	}
	if err := st.KillNATS(); !errors.Is(err, errInProcess) {
		t.Fatalf("KillNATS in this process: %v", err)
	}

	exited := st.NATSExited()
	if err := st.StopNATS(); err != nil {
		t.Fatal(err)
	}
	<-exited
	if st.NATS() != nil || listening(hostPort(t, st.NATSURL)) {
		t.Fatal("NATS still runs after StopNATS")
	}
	if err := st.Ready(context.Background()); err == nil {
		t.Fatal("the chat-server is ready without NATS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := st.StartNATS(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.StartNATS(ctx); err == nil {
		t.Fatal("StartNATS on a running NATS")
	}
	if err := st.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	if err := login(t, st.NATSURL, alice); err != nil {
		t.Fatalf("alice's login after NATS restarted: %v", err)
	}

	addrs := []string{hostPort(t, st.NATSURL), hostPort(t, st.NATSMonitor), hostPort(t, st.ServerURL), hostPort(t, st.SigServerURL)}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	for _, a := range addrs {
		if listening(a) {
			t.Errorf("%s still listens after Close", a)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, EnvFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("env file left behind")
	}
}

// With a nats-server binary (the one natstest builds), NATS runs as a
// process that Close stops and KillNATS kills.
func TestNATSProcess(t *testing.T) {
	dir := t.TempDir()
	st := start(t, Config{Dir: dir, NATSServer: natstest.ServerBinary(t)})
	pid := st.NATSPID()
	if pid <= 0 || syscall.Kill(pid, 0) != nil || st.NATS() != nil {
		t.Fatalf("NATS pid %d not running", pid)
	}
	if err := st.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A crash, then a start on the same port.
	if err := st.KillNATS(); err != nil {
		t.Fatal(err)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("NATS survived KillNATS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := st.StartNATS(ctx); err != nil {
		t.Fatal(err)
	}
	if err := st.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	pid = st.NATSPID()
	exited := st.NATSExited()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	<-exited
	if syscall.Kill(pid, 0) == nil {
		t.Fatal("NATS still runs after Close")
	}
}

// A restart of the same folder listens on the same ports: a client
// configured against the first run (its URLs, a registered handle) keeps
// working against the second.
func TestRestartKeepsPorts(t *testing.T) {
	dir := t.TempDir()
	first := start(t, Config{Dir: dir})
	register(t, first, "alice")
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	kept, err := os.ReadFile(filepath.Join(dir, PortsFile))
	if err != nil {
		t.Fatal(err)
	}

	second := start(t, Config{Dir: dir})
	for _, u := range [][3]string{
		{"NATS", first.NATSURL, second.NATSURL},
		{"NATS monitoring", first.NATSMonitor, second.NATSMonitor},
		{"chat-server", first.ServerURL, second.ServerURL},
		{"sig-server", first.SigServerURL, second.SigServerURL},
	} {
		if u[1] != u[2] {
			t.Errorf("%s moved from %s to %s", u[0], u[1], u[2])
		}
	}
	if again, _ := os.ReadFile(filepath.Join(dir, PortsFile)); string(again) != string(kept) {
		t.Errorf("ports file changed:\n%s\n%s", kept, again)
	}
	// alice's client, configured against the first run.
	res := &handles.Resolver{DefaultDomain: first.Domain, HomeServer: first.ServerURL, HTTPClient: &http.Client{Timeout: 10 * time.Second}}
	got, err := res.Resolve(context.Background(), "alice")
	if err != nil || got.Key != identity(t, "alice").PublicKey() {
		t.Fatalf("resolving alice at the first run's URL: %v", err)
	}
	if err := login(t, first.NATSURL, identity(t, "alice")); err != nil {
		t.Fatalf("alice's login at the first run's NATS URL: %v", err)
	}
}

// A kept port that another program holds now fails Start with a
// *PortError naming it, before anything starts; once it is free again the
// folder starts on its old ports.
func TestKeptPortTaken(t *testing.T) {
	dir := t.TempDir()
	first := start(t, Config{Dir: dir})
	urls := first.Env()
	first.Close()

	for _, c := range []struct {
		service string
		url     string
	}{
		{"sig-server", first.SigServerURL},
		{"NATS", first.NATSURL},
		{"chat-server", first.ServerURL},
		{"NATS monitoring", first.NATSMonitor},
	} {
		ln, err := net.Listen("tcp", hostPort(t, c.url))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Start(context.Background(), Config{Dir: dir})
		ln.Close()
		var pe *PortError
		if !errors.As(err, &pe) || pe.Service != c.service || !strings.HasSuffix(c.url, ":"+strconv.Itoa(pe.Port)) {
			t.Fatalf("%s port taken: %v", c.service, err)
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("the cause is not EADDRINUSE: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, EnvFile)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal("a failed start wrote the env file")
		}
		for _, u := range []string{first.NATSURL, first.ServerURL, first.SigServerURL, first.NATSMonitor} {
			if u != c.url && listening(hostPort(t, u)) {
				t.Fatalf("a failed start left %s listening", u)
			}
		}
	}
	if again := start(t, Config{Dir: dir}); again.Env() != urls {
		t.Fatalf("after the ports were freed:\n%s\nwant:\n%s", again.Env(), urls)
	}
}

// A ports file someone edited or broke is refused before anything starts.
func TestBadPortsFile(t *testing.T) {
	for _, text := range []string{
		`{"nats": 70000}`,
		`{"nats": -1}`,
		`{"nats": 4222, "chat_server": 4222}`,
		`not json`,
		`{"nats": "4222"}`,
		`{"nats": 1e3}`,
		`{"nats": 4222}` + strings.Repeat(" ", maxPortsFile),
	} {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, PortsFile), []byte(text), 0o600)
		st, err := Start(context.Background(), Config{Dir: dir})
		if !errors.Is(err, ErrBadPorts) {
			if st != nil {
				st.Close()
			}
			t.Errorf("%.40q: %v", text, err)
		}
		if _, err := os.Stat(filepath.Join(dir, NATSConfFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%.40q: Start went on after a bad ports file", text)
		}
	}
}

func FuzzParsePorts(f *testing.F) {
	for _, seed := range []string{
		`{"nats": 4222, "nats_monitor": 8222, "sig_server": 8081, "chat_server": 8080}`,
		`{}`, `{"nats": 0}`, `{"nats": 65535}`, `{"nats": 65536}`, `{"nats": -4222}`,
		`{"nats": 1, "sig_server": 1}`, `{"nats": 1.5}`, `[]`, `null`, ``, `{"nats": 4222, "nats": 4223}`,
		`{"NATS": 4222}`, `{"other": "x"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := parsePorts(b)
		if err != nil {
			if !errors.Is(err, ErrBadPorts) {
				t.Fatalf("an error that is not ErrBadPorts: %v", err)
			}
			return
		}
		seen := map[int]bool{}
		for _, e := range p.each() {
			n := *e.port
			if n < 0 || n > 65535 || n != 0 && seen[n] {
				t.Fatalf("accepted %s port %d in %q", e.service, n, b)
			}
			seen[n] = true
		}
	})
}

func TestStartErrors(t *testing.T) {
	if _, err := Start(context.Background(), Config{}); err == nil || !strings.Contains(err.Error(), "Config.Dir") {
		t.Errorf("no dir: %v", err)
	}
	dir := t.TempDir()
	if _, err := Start(context.Background(), Config{Dir: dir, NATSServer: filepath.Join(dir, "no-such-binary")}); err == nil || !strings.Contains(err.Error(), "starting NATS") {
		t.Errorf("missing binary: %v", err)
	}
	// A binary that exits at once: its output is in the error.
	script := filepath.Join(dir, "fake-nats")
	os.WriteFile(script, []byte("#!/bin/sh\necho 'no config for you' >&2\nexit 3\n"), 0o700)
	_, err := Start(context.Background(), Config{Dir: dir, NATSServer: script})
	if err == nil || !strings.Contains(err.Error(), "exited while starting") || !strings.Contains(err.Error(), "no config for you") {
		t.Errorf("exiting binary: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, EnvFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed start wrote the env file")
	}
	if _, err := os.Stat(filepath.Join(dir, PortsFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("a failed start kept its ports")
	}
	// A configuration edit that fails stops the start.
	bad := errors.New("no edit")
	if _, err := Start(context.Background(), Config{Dir: t.TempDir(), EditNATSConfig: func(string) (string, error) { return "", bad }}); !errors.Is(err, bad) {
		t.Errorf("failing EditNATSConfig: %v", err)
	}
	// NATS in this process failing fatally (a listener it cannot open)
	// fails Start at once, and never exits the program as nats-server's
	// own logger would.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	leaf := func(c string) (string, error) {
		return c + "leafnodes { listen: " + held.Addr().String() + " }\n", nil
	}
	if _, err := Start(context.Background(), Config{Dir: t.TempDir(), EditNATSConfig: leaf}); err == nil || !strings.Contains(err.Error(), "NATS failed") || !strings.Contains(err.Error(), held.Addr().String()) {
		t.Errorf("a listener NATS cannot open: %v", err)
	}
	// A configuration NATS cannot parse.
	if _, err := Start(context.Background(), Config{Dir: t.TempDir(), EditNATSConfig: func(c string) (string, error) { return c + "accounts {{{\n", nil }}); err == nil || !strings.Contains(err.Error(), "NATS configuration") {
		t.Errorf("broken configuration: %v", err)
	}
}

var (
	serversOnce sync.Once
	serversDir  string
	serversErr  error
)

// serverBinaries builds kez-chat-server and kez-sig-server once.
func serverBinaries(t *testing.T) (chat, sig string) {
	t.Helper()
	serversOnce.Do(func() {
		var root string
		if serversDir, serversErr = os.MkdirTemp("", "kez-devstack-test-bin"); serversErr != nil {
			return
		}
		if root, serversErr = ModuleDir(); serversErr != nil {
			return
		}
		serversErr = Build(context.Background(), root, serversDir, "./cmd/kez-chat-server", "./cmd/kez-sig-server")
	})
	if serversErr != nil {
		t.Fatal(serversErr)
	}
	return filepath.Join(serversDir, "kez-chat-server"), filepath.Join(serversDir, "kez-sig-server")
}

func TestMain(m *testing.M) {
	code := m.Run()
	if serversDir != "" {
		os.RemoveAll(serversDir)
	}
	os.Exit(code)
}

// All three as processes, as an operator runs them: a user registers and
// logs in, ChatArgs and SigEnv reach the servers, and Close stops every process.
func TestAllProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server binaries")
	}
	chatBin, sigBin := serverBinaries(t)
	dir := t.TempDir()
	st := start(t, Config{
		Dir:        dir,
		NATSServer: natstest.ServerBinary(t),
		ChatServer: chatBin, ChatArgs: []string{"--log-level", "debug"},
		SigServer: sigBin, SigEnv: []string{"KEZ_SIG_LOG_FORMAT=json"},
	})
	pids := []int{st.NATSPID(), st.ChatServerPID(), st.SigServerPID()}
	for _, pid := range pids {
		if pid <= 0 || syscall.Kill(pid, 0) != nil {
			t.Fatalf("pids %v: not all running", pids)
		}
	}
	if st.Chat != nil || st.NATS() != nil {
		t.Fatal("something runs in this process")
	}
	alice := register(t, st, "alice")
	if err := login(t, st.NATSURL, alice); err != nil {
		t.Fatal(err)
	}
	wantLogged(t, st.SigServerURL, "localhost/sigchain-log", alice)
	if log, _ := os.ReadFile(filepath.Join(dir, ChatLogFile)); !strings.Contains(string(log), "level=DEBUG") {
		t.Error("ChatArgs did not reach the chat-server (no debug lines)")
	}
	if log, _ := os.ReadFile(filepath.Join(dir, SigLogFile)); !strings.Contains(string(log), `"level":"INFO"`) {
		t.Error("SigEnv did not reach the sig-server (no JSON lines)")
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("process %d still runs after Close", pid)
		}
	}
}
