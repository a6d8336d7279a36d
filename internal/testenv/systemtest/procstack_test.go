package systemtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
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
		root, err := devstack.ModuleDir()
		if err != nil {
			binsErr = err
			return
		}
		binsErr = devstack.Build(context.Background(), root, dir, "./cmd/kez-chat-server", "./cmd/kez-sig-server")
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
// as processes on loopback with the devstack launcher, waits until the
// chat-server is ready (logins work), and stops everything in t.Cleanup.
// Their logs are printed when the test fails.
func startProcStack(t testing.TB, o procOptions) *procStack {
	t.Helper()
	needProcesses(t)
	bins := kezBinaries(t)
	s := &procStack{Dir: t.TempDir(), Domain: procDomain}
	sigArgs := []string{"--log-level", "debug"}
	chatArgs := []string{"--log-level", "debug"}
	if o.NoHTTPLimits {
		sigArgs = append(sigArgs, "--appends-per-ip", "off", "--chains-per-ip", "off", "--appends-per-key", "off", "--reads-per-ip", "off")
		chatArgs = append(chatArgs, "--claims-per-ip", "off", "--claims-per-key", "off", "--reads-per-ip", "off")
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kez-chat-server log (tail):\n%s", tail(s.chatLog(), 12000))
			t.Logf("kez-sig-server log (tail):\n%s", tail(s.sigLog(), 4000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dev, err := devstack.Start(ctx, devstack.Config{
		Dir:        s.Dir,
		Domain:     procDomain,
		NATSServer: natstest.ServerBinary(t),
		EditNATSConfig: func(string) (string, error) {
			// nats.conf from the chat-server program itself, as an operator gets it.
			out, err := exec.Command(filepath.Join(bins, "kez-chat-server"), "nats-config", "--keys", filepath.Join(s.Dir, devstack.KeysFolder)).Output()
			if err != nil {
				return "", fmt.Errorf("kez-chat-server nats-config: %w", err)
			}
			conf := string(out)
			if o.Admin {
				chat := "  CHAT {\n    jetstream: enabled\n    users: [\n"
				if !strings.Contains(conf, chat) {
					return "", fmt.Errorf("the snippet's chat account has an unexpected form:\n%s", conf)
				}
				conf = strings.Replace(conf, chat, chat+"      { user: admin, password: \""+adminPassword+"\" }\n", 1)
				conf = strings.Replace(conf, "auth_users: [ ", "auth_users: [ admin, ", 1)
			}
			return conf + o.NATSConfExtra, nil
		},
		SigServer:  filepath.Join(bins, "kez-sig-server"),
		SigArgs:    append(sigArgs, o.SigArgs...),
		SigEnv:     o.SigEnv,
		ChatServer: filepath.Join(bins, "kez-chat-server"),
		ChatArgs:   append(chatArgs, o.ChatArgs...),
		ChatEnv:    o.ChatEnv,
	})
	if err != nil {
		t.Fatalf("starting the process stack: %v", err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("stopping the process stack: %v", err)
		}
	})
	s.NATSURL, s.ChatURL, s.SigURL, s.KeysDir = dev.NATSURL, dev.ServerURL, dev.SigServerURL, dev.KeysDir
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

// chatLog and sigLog return what the chat-server and sig-server logged so far.
func (s *procStack) chatLog() string { return readLog(filepath.Join(s.Dir, devstack.ChatLogFile)) }
func (s *procStack) sigLog() string  { return readLog(filepath.Join(s.Dir, devstack.SigLogFile)) }

func readLog(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

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
