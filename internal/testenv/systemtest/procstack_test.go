package systemtest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// procDomain is the handle domain of a process stack.
const procDomain = "kez.test"

// A process stack is what an operator runs: nats-server with the snippet
// of "kez-chat-server nats-config", and the kez-chat-server and
// kez-sig-server programs built from this module, each its own process
// on loopback. The hostile tests perform their attacks against it.

// procOptions shapes a process stack.
type procOptions struct {
	ChatArgs []string // extra kez-chat-server flags
	SigArgs  []string // extra kez-sig-server flags
	ChatEnv  []string // extra environment of kez-chat-server (KEY=value)
	SigEnv   []string // extra environment of kez-sig-server
	// NATSConfExtra is appended to the nats.conf the snippet gives.
	NATSConfExtra string
	// Admin adds a user with every right to the chat account (a user in
	// CHAT and in auth_users, unlike the snippet's read-only admin), for
	// tests that inspect the inbox stream: [procStack.AdminJetStream].
	Admin bool
	// NoHTTPLimits turns the servers' per-address HTTP rate limits off
	// (every test client comes from loopback), for tests about something
	// else that register many users. ChatArgs and SigArgs still win.
	NoHTTPLimits bool
}

// procStack is a running process stack; see [startProcStack].
type procStack struct {
	NATSURL string // the nats-server process
	ChatURL string // the kez-chat-server process's HTTP API
	SigURL  string // the kez-sig-server process's HTTP API
	Domain  string // the handle domain, procDomain
	Dir     string // everything the processes keep
	KeysDir string // the chat-server's callout keys

	NATS *natstest.Process
	chat *serverProc
	sig  *serverProc
}

// serverProc is one of the stack's KEZ server processes.
type serverProc struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
}

var (
	binsOnce sync.Once
	binsDir  string
	binsErr  error
)

// kezBinaries builds kez-chat-server and kez-sig-server once per test
// binary (without the race detector: they are the system under test, not
// the test) and returns the folder holding them.
func kezBinaries(t testing.TB) string {
	t.Helper()
	binsOnce.Do(func() {
		var dir string
		if dir, binsErr = os.MkdirTemp("", "kez-systemtest-bin"); binsErr != nil {
			return
		}
		binsDir = dir
		for _, name := range []string{"kez-chat-server", "kez-sig-server"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
			cmd.Dir = filepath.Join("..", "..", "..")
			if out, err := cmd.CombinedOutput(); err != nil {
				binsErr = fmt.Errorf("building %s: %v\n%s", name, err, out)
				return
			}
		}
	})
	if binsErr != nil {
		t.Fatal(binsErr)
	}
	return binsDir
}

// removeBinaries deletes what kezBinaries built (from TestMain).
func removeBinaries() {
	if binsDir != "" {
		os.RemoveAll(binsDir)
	}
}

// startProcStack starts nats-server, kez-sig-server and kez-chat-server
// as processes on loopback, waits until the chat-server is ready (logins
// work), and stops everything in t.Cleanup. Their logs are printed when
// the test fails.
func startProcStack(t testing.TB, o procOptions) *procStack {
	t.Helper()
	needProcesses(t)
	bins := kezBinaries(t)
	s := &procStack{Dir: t.TempDir()}
	s.KeysDir = filepath.Join(s.Dir, "chat-keys")

	// nats.conf from the chat-server program itself, as an operator gets it.
	out, err := exec.Command(filepath.Join(bins, "kez-chat-server"), "nats-config", "--keys", s.KeysDir).Output()
	if err != nil {
		t.Fatalf("kez-chat-server nats-config: %v", err)
	}
	conf := string(out)
	if o.Admin {
		chat := "  CHAT {\n    jetstream: enabled\n    users: [\n"
		if !strings.Contains(conf, chat) {
			t.Fatalf("the snippet's chat account has an unexpected form:\n%s", conf)
		}
		conf = strings.Replace(conf, chat, chat+"      { user: admin, password: \""+adminPassword+"\" }\n", 1)
		conf = strings.Replace(conf, "auth_users: [ ", "auth_users: [ admin, ", 1)
	}
	s.NATS = natstest.StartProcess(t, conf+o.NATSConfExtra)
	s.NATSURL = s.NATS.ClientURL()

	ports := freeLoopbackPorts(t, 2)
	sigAddr, chatAddr := "127.0.0.1:"+strconv.Itoa(ports[0]), "127.0.0.1:"+strconv.Itoa(ports[1])
	s.SigURL, s.ChatURL, s.Domain = "http://"+sigAddr, "http://"+chatAddr, procDomain

	sigArgs := []string{"--listen", sigAddr, "--db", filepath.Join(s.Dir, "sig.db"), "--log-level", "debug"}
	chatArgs := []string{"--listen", chatAddr, "--domain", s.Domain, "--sig-server", s.SigURL, "--nats", s.NATSURL,
		"--db", filepath.Join(s.Dir, "chat.db"), "--keys", s.KeysDir, "--log-level", "debug"}
	if o.NoHTTPLimits {
		sigArgs = append(sigArgs, "--appends-per-ip", "off", "--chains-per-ip", "off", "--appends-per-key", "off", "--reads-per-ip", "off")
		chatArgs = append(chatArgs, "--claims-per-ip", "off", "--claims-per-key", "off", "--reads-per-ip", "off")
	}
	s.sig = startServerProc(t, filepath.Join(bins, "kez-sig-server"), append(sigArgs, o.SigArgs...), o.SigEnv, filepath.Join(s.Dir, "sig-server.log"))
	s.chat = startServerProc(t, filepath.Join(bins, "kez-chat-server"), append(chatArgs, o.ChatArgs...), o.ChatEnv, filepath.Join(s.Dir, "chat-server.log"))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kez-chat-server log (tail):\n%s", tail(s.chatLog(), 12000))
			t.Logf("kez-sig-server log (tail):\n%s", tail(s.sigLog(), 4000))
		}
	})
	s.sig.waitHTTP(t, s.SigURL+"/readyz")
	s.chat.waitHTTP(t, s.ChatURL+"/readyz")
	return s
}

// adminPassword is the chat account administrator's password (Admin).
const adminPassword = "kez-systemtest-admin"

// AdminJetStream logs in as the chat account's administrator (the stack
// must have been started with Admin) and returns its JetStream handle; the
// connection is closed in t.Cleanup.
func (s *procStack) AdminJetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.NATSURL, nats.UserInfo("admin", adminPassword), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("admin login: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// freeLoopbackPorts returns n distinct free TCP ports on 127.0.0.1.
func freeLoopbackPorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ports = append(ports, natstest.FreePort(t))
	}
	return ports
}

func startServerProc(t testing.TB, bin string, args, env []string, logPath string) *serverProc {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting %s: %v", filepath.Base(bin), err)
	}
	p := &serverProc{cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitHTTP polls url until it answers 200, the process exits, or a minute
// passes (the process is another program: there is nothing to wait on).
func (p *serverProc) waitHTTP(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited:\n%s", filepath.Base(p.cmd.Path), tail(p.log(), 4000))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready at %s within a minute:\n%s", filepath.Base(p.cmd.Path), url, tail(p.log(), 4000))
		}
	}
}

func (p *serverProc) log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

// chatLog and sigLog return what the chat-server and sig-server logged so far.
func (s *procStack) chatLog() string { return s.chat.log() }
func (s *procStack) sigLog() string  { return s.sig.log() }

// register registers name@Domain the way "kez register" does (the
// identity of name, its eldest link at the sig-server, the handle claimed
// at the chat-server) and fails the test if that does not work.
func (s *procStack) register(t testing.TB, name string) *user {
	t.Helper()
	u, err := s.tryRegister(name)
	if err != nil {
		t.Fatalf("registering %s: %v", name, err)
	}
	return u
}

// tryRegister is register that returns the error.
func (s *procStack) tryRegister(name string) (*user, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := handles.Rules{DefaultDomain: s.Domain}.Parse(name)
	if err != nil {
		return nil, err
	}
	id := stacktest.Identity(name)
	if _, err := handles.Register(ctx, id, h, handles.RegisterOptions{ServerURL: s.ChatURL, SigServerURL: s.SigURL}); err != nil {
		return nil, err
	}
	return &user{name: name, id: id, key: id.PublicKey(), handle: h}, nil
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
