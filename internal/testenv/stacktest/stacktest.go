// Package stacktest brings up a whole KEZ deployment for the tests of other
// packages, with one call and all real parts:
//
//	st := stacktest.Start(t, stacktest.Options{})
//	alice := st.NewUser(t, "alice") // eldest link + handle claim, KEZ_HOME ready
//	nc, err := chat.Connect(ctx, st.NATSURL, alice.Identity)
//
// Start runs the dev-stack launcher (package devstack) in t.TempDir(): a
// nats-server (in the test process, or as a separate process with
// Options.NATSProcess) configured with exactly the nats.conf snippet
// "kez-chat-server nats-config" prints for the stack's keys, a sig-server
// (sigchain.NewHandler over a SQLite file, with a transparency log) and a
// chat-server (chatserver.Server), each on a loopback port. It waits until the
// chat-server is ready (callout listening, inbox stream provisioned) and
// stops everything in t.Cleanup. The servers' logs are printed if the test
// fails.
//
// Users are made from deterministic words ([Identity]), so a test may
// rely on "alice" having the same key in every run. Stack.Env gives the
// environment a kez CLI run needs to act as a user.
//
// The package is for tests only. It imports neither chat nor files, so
// their own (in-package) tests can use it.
package stacktest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog/logserver"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// DefaultDomain is the handle domain of a stack unless Options.Domain
// says otherwise (.test is reserved for testing, RFC 6761).
const DefaultDomain = devstack.DefaultDomain

// readyTimeout bounds how long the stack may take to start, and the
// chat-server to become ready again.
const readyTimeout = 60 * time.Second

// Options shape a stack. The zero value is a complete stack with NATS in
// the test process.
type Options struct {
	// Domain is the handle domain the chat-server registers. Default
	// [DefaultDomain].
	Domain string
	// AllowLocal lets the chat-server accept development domains (an
	// IP:port Domain, for instance).
	AllowLocal bool
	// NATSProcess runs nats-server as a separate process (the binary
	// natstest builds once and caches; the first run takes a minute),
	// which a fault test can kill with SIGKILL.
	NATSProcess bool
	// UserJWTLifetime is the chat-server's callout user JWT lifetime;
	// default the chat-server's.
	UserJWTLifetime time.Duration
	// Inbox configures the inbox stream; zero means the defaults.
	Inbox callout.InboxConfig
	// Authorizer is passed to the chat-server.
	Authorizer callout.Authorizer
	// MailLimits are the chat-server gate's limits; zero means the defaults.
	MailLimits chatserver.MailLimits
	// Now is the chat-server's clock (claims, user JWTs); nil: time.Now.
	Now func() time.Time
	// Limits turns on the servers' rate limits and caps with their
	// defaults (handles.DefaultLimits, sigchain.DefaultLimits). Off by
	// default: every user of a stack comes from one loopback address.
	Limits bool
	// WrapSigServer, if set, wraps the sig-server's handler (to count or
	// record the requests it serves, say).
	WrapSigServer func(http.Handler) http.Handler
	// NoSigLog runs the sig-server without its transparency log (by
	// default it keeps one, checkpoints every 100 ms, and every chain GET
	// carries a proof).
	NoSigLog bool
	// Relays are the relay addresses the chat-server's /v1/info offers
	// (chatserver.Server.Relays).
	Relays []string
}

// Stack is a running deployment. Its fields are set by [Start] and must not
// be changed; its methods are safe for concurrent use, except those that
// take a testing.TB, which follow the rules of that TB.
type Stack struct {
	NATSURL      string // nats://127.0.0.1:PORT, the same across RestartNATS
	ServerURL    string // the chat-server's base URL (KEZ_SERVER)
	SigServerURL string // the sig-server's base URL (KEZ_SIG_SERVER)
	Domain       string // the handle domain (KEZ_DOMAIN)
	KeysDir      string // the chat-server's callout keys
	NATSConfig   string // the nats.conf snippet NATS runs with, as rendered for KeysDir
	Chat         *chatserver.Server
	SigLog       *logserver.Log // the sig-server's transparency log; nil with Options.NoSigLog

	t          testing.TB
	allowLocal bool
	dev        *devstack.Stack
	log        *testlog.Buffer
}

// Start brings up NATS, a sig-server and a chat-server, waits until the
// chat-server is ready, and registers their shutdown in t.Cleanup. Any
// failure fails the test.
func Start(t testing.TB, o Options) *Stack {
	t.Helper()
	dir := t.TempDir()
	s := &Stack{t: t, log: &testlog.Buffer{}, allowLocal: o.AllowLocal}
	log := slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stacktest: chat-server and sig-server log:\n%s", s.log.Tail(16000))
			t.Logf("stacktest: nats-server log (tail):\n%s", tail(filepath.Join(dir, devstack.NATSLogFile), 8000))
		}
	})

	sigLimits, chatLimits := sigchain.NoLimits(), handles.NoLimits()
	if o.Limits {
		sigLimits, chatLimits = sigchain.Limits{}, handles.Limits{}
	}
	cfg := devstack.Config{
		Dir:           dir,
		Domain:        o.Domain,
		AllowLocal:    o.AllowLocal,
		Logger:        log,
		SigOptions:    []sigchain.HandlerOption{sigchain.WithLimits(sigLimits)},
		WrapSigServer: o.WrapSigServer,
		SigNoLog:      o.NoSigLog,
		EditChat: func(c *chatserver.Server) {
			c.NATSOptions = []nats.Option{nats.ReconnectWait(20 * time.Millisecond), nats.ReconnectJitter(10*time.Millisecond, 10*time.Millisecond)}
			c.UserJWTLifetime = o.UserJWTLifetime
			c.Inbox = o.Inbox
			c.Authorizer = o.Authorizer
			c.MailLimits = o.MailLimits
			c.HTTPLimits = chatLimits
			c.Now = o.Now
			c.Relays = o.Relays
		},
	}
	if o.NATSProcess {
		cfg.NATSServer = natstest.ServerBinary(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	dev, err := devstack.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("stacktest: %v", err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("stacktest: closing the stack: %v", err)
		}
	})
	s.dev = dev
	s.NATSURL, s.ServerURL, s.SigServerURL = dev.NATSURL, dev.ServerURL, dev.SigServerURL
	s.Domain, s.KeysDir, s.NATSConfig, s.Chat, s.SigLog = dev.Domain, dev.KeysDir, dev.NATSConfig, dev.Chat, dev.SigLog
	return s
}

// WaitReady waits until the chat-server is ready again, for instance after
// a test stopped or killed NATS and started it again. It fails the test
// after a minute.
func (s *Stack) WaitReady() {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := s.dev.WaitReady(ctx); err != nil {
		s.t.Fatalf("stacktest: %v", err)
	}
}

// RestartNATS stops NATS gracefully and starts it again on the same port
// with the same JetStream store, then waits until the chat-server is ready
// again. Clients with reconnects enabled come back by themselves.
func (s *Stack) RestartNATS() {
	s.t.Helper()
	s.NATS().Restart()
	s.WaitReady()
}

// NATS returns the stack's NATS server, to stop, kill or restart it.
func (s *Stack) NATS() *NATS { return &NATS{s: s} }

// NATS is the NATS server of a stack, running in the test process or as a
// process (Options.NATSProcess). Its methods fail the stack's test on
// error. After starting it again, call [Stack.WaitReady].
type NATS struct{ s *Stack }

// Server returns the server running in the test process (for Connz,
// account lookups…), or nil when NATS runs as a process or is stopped.
// After [NATS.Restart] it is a new value.
func (n *NATS) Server() *server.Server { return n.s.dev.NATS() }

// PID returns the process ID of NATS running as a process, or 0.
func (n *NATS) PID() int { return n.s.dev.NATSPID() }

// Shutdown stops the server gracefully and waits until it has stopped. It
// is idempotent; [NATS.Restart] starts it again.
func (n *NATS) Shutdown() {
	n.s.t.Helper()
	if err := n.s.dev.StopNATS(); err != nil {
		n.s.t.Fatalf("stacktest: stopping NATS: %v", err)
	}
}

// Kill ends NATS running as a process with SIGKILL, as a crash would, and
// waits for it to exit; for NATS in the test process it fails the test.
func (n *NATS) Kill() {
	n.s.t.Helper()
	if err := n.s.dev.KillNATS(); err != nil {
		n.s.t.Fatalf("stacktest: %v", err)
	}
}

// Restart stops the server if it runs and starts it again on the same
// ports with the same configuration file (read again) and JetStream store.
func (n *NATS) Restart() {
	n.s.t.Helper()
	n.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := n.s.dev.StartNATS(ctx); err != nil {
		n.s.t.Fatalf("stacktest: starting NATS again: %v", err)
	}
}

// StoreDir returns the JetStream store folder.
func (n *NATS) StoreDir() string { return filepath.Join(n.s.dev.Dir, devstack.NATSStore) }

// ConfigFile returns the path of the configuration file NATS runs with.
func (n *NATS) ConfigFile() string { return filepath.Join(n.s.dev.Dir, devstack.NATSConfFile) }

// Logs returns what the chat-server and sig-server logged so far.
func (s *Stack) Logs() string { return s.log.String() }

// Resolver returns a resolver for the stack's domain whose home server is
// the stack's chat-server, as a client configured with [Stack.Env] uses.
func (s *Stack) Resolver() *handles.Resolver {
	return &handles.Resolver{
		DefaultDomain: s.Domain,
		HomeServer:    s.ServerURL,
		HTTPClient:    &http.Client{Timeout: 10 * time.Second},
		AllowLocal:    s.allowLocal,
	}
}

// Env returns the environment a kez CLI run needs to act as u on this
// stack: KEZ_HOME, KEZ_SERVER, KEZ_SIG_SERVER, KEZ_DOMAIN and NATS_URL.
// u may be nil (no KEZ_HOME).
func (s *Stack) Env(u *User) map[string]string {
	env := map[string]string{
		"NATS_URL":       s.NATSURL,
		"KEZ_SERVER":     s.ServerURL,
		"KEZ_SIG_SERVER": s.SigServerURL,
		"KEZ_DOMAIN":     s.Domain,
	}
	if u != nil {
		env["KEZ_HOME"] = u.Home
	}
	return env
}

// Words returns the deterministic paper backup of a test user: the words
// of SHA-256("kez stacktest user " + name).
func Words(name string) kez.Mnemonic {
	e := sha256.Sum256([]byte("kez stacktest user " + name))
	m, err := kez.MnemonicFromEntropy(e[:])
	if err != nil {
		panic(fmt.Sprintf("stacktest: words for %q: %v", name, err)) // 32 bytes always make words
	}
	return m
}

// Identity returns the deterministic identity of a test user (see
// [Words]): the same name gives the same key in every run and every stack.
func Identity(name string) *kez.Identity {
	id, err := kez.FromMnemonic(Words(name))
	if err != nil {
		panic(fmt.Sprintf("stacktest: identity for %q: %v", name, err))
	}
	return id
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		return "…" + string(b[len(b)-n:])
	}
	return string(b)
}
