package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/logserver"
)

// logSigServer is a sig-server on a real listener: a real handler over a
// real SQLite store for chains, and a real log (package logserver) that a
// test may swap for another one with the same key at the same URL.
type logSigServer struct {
	url     string
	chains  *sigchain.Client
	log     *logserver.Log
	keyFile string
	logs    atomic.Pointer[http.Handler]
}

func startLogSigServer(t *testing.T) *logSigServer {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	store, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	s := &logSigServer{keyFile: filepath.Join(t.TempDir(), "log.key")}
	s.log = s.openLog(t)
	s.serve(s.log)
	mux := http.NewServeMux()
	mux.Handle(sigchain.ChainsPath, sigchain.NewHandler(store, sigchain.WithLimits(sigchain.NoLimits()), sigchain.WithLogger(quiet)))
	logs := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*s.logs.Load()).ServeHTTP(w, r) })
	mux.Handle("/v1/info", logs)
	mux.Handle("/v1/log/", logs)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	s.url = hs.URL
	s.chains = &sigchain.Client{BaseURL: hs.URL, HTTPClient: hs.Client()}
	return s
}

// openLog opens a new log in a temporary folder, signed with the
// server's log key.
func (s *logSigServer) openLog(t *testing.T) *logserver.Log {
	t.Helper()
	signer, _, err := logserver.LoadOrCreateKey(s.keyFile, "kez.test/sigchain-log")
	if err != nil {
		t.Fatal(err)
	}
	l, err := logserver.Open(context.Background(), logserver.Config{Dir: t.TempDir(), Signer: signer,
		CheckpointInterval: logserver.MinCheckpointInterval, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

func (s *logSigServer) serve(l *logserver.Log) {
	var h http.Handler = l.Handler(logserver.Limits{ReadsPerIP: ratelimit.Unlimited})
	s.logs.Store(&h)
}

// chainOf makes n links of a chain of id after st; store says whether
// the server stores them. Each is logged in l.
func (s *logSigServer) chainOf(t *testing.T, l *logserver.Log, id *kez.Identity, st *sigchain.State, n int, store bool) *sigchain.State {
	t.Helper()
	for range n {
		typ, body := sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "")
		if st != nil {
			typ, body = sigchain.TypeAddClaim, sigchain.AddClaimBody("github", fmt.Sprint("n", st.Seqno()), "https://example.com/")
		}
		link, err := sigchain.NewLink(id, st, typ, body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if store {
			if err := s.chains.Append(context.Background(), link); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.Append(context.Background(), translog.Entry{Key: id.PublicKey(), Seqno: link.Seqno(), ID: link.ID().String()}); err != nil {
			t.Fatal(err)
		}
		if st == nil {
			st, err = sigchain.Verify([]*sigchain.Link{link})
		} else {
			st, err = st.Extend([]*sigchain.Link{link})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// kez audit on a real sig-server with a log: its sentences, its resume,
// its JSON, its findings (exit 1), a rewritten log, and what it says
// without a server or a log.
func TestAuditCommand(t *testing.T) {
	s := startLogSigServer(t)
	home := t.TempDir()
	alice, bob := stacktest.Identity("alice"), stacktest.Identity("bob")
	ast := s.chainOf(t, s.log, alice, nil, 2, true)
	s.chainOf(t, s.log, bob, nil, 2, true)

	audit := func(args ...string) result {
		return kezCmd(t, nil, "", append([]string{"audit", "--server", s.url, "--home", home}, args...)...)
	}
	r := audit()
	if r.code != 0 || r.stdout != "Audited entries 1–4 of log kez.test/sigchain-log: 2 chains, no problems.\n" || r.stderr != "" {
		t.Fatalf("first audit: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(home, "audit.db")); err != nil {
		t.Errorf("no audit.db in the state folder: %v", err)
	}
	if r := audit(); r.code != 0 || r.stdout != "No new entries in log kez.test/sigchain-log since the last audit (4 audited): 0 chains, no problems.\n" {
		t.Errorf("second audit: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// A link logged that the chain endpoint does not serve: hidden.
	ast = s.chainOf(t, s.log, alice, ast, 1, false)
	r = audit("--json")
	if r.code != 1 || !strings.Contains(r.stdout, `"kind":"hidden","key":"`+alice.PublicKey().String()+`","seqno":3`) ||
		r.stderr != "kez audit: the audit of the log of "+s.url+" found 1 problem\n" {
		t.Errorf("hidden, --json: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	fields, _ := jsonTemplate(t, cliDoc(t), "audit")
	checkJSONFields(t, "kez audit --json", r.stdout, fields)

	// The same key's other log, at the same URL: not the log audited.
	other := s.openLog(t)
	s.chainOf(t, other, bob, nil, 3, false)
	s.serve(other)
	r = audit()
	if r.code != 1 || !strings.Contains(r.stdout, "The log is not the one audited before: ") ||
		!strings.Contains(r.stdout, "Nothing of this run was recorded.") || !strings.Contains(r.stdout, "— kez.test/sigchain-log ") {
		t.Errorf("rewritten: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// --follow stops at the first run with a problem.
	if r := audit("--follow", "--interval", "10ms"); r.code != 1 {
		t.Errorf("--follow on a rewritten log: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// The honest log again: audited on from where it was.
	s.serve(s.log)
	if r := audit(); r.code != 0 || r.stdout != "No new entries in log kez.test/sigchain-log since the last audit (5 audited): 0 chains, no problems.\n" {
		t.Errorf("honest again: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// No server, a server without a log, usage errors.
	r = kezCmd(t, nil, "", "audit", "--home", t.TempDir())
	if r.code != 1 || r.stderr != "kez audit: no sig-server to audit: pass --server URL, or set KEZ_SIG_SERVER\n" {
		t.Errorf("no server: exit %d\n%s", r.code, r.stderr)
	}
	plain := httptest.NewServer(sigchain.NewHandler(nil))
	t.Cleanup(plain.Close)
	r = kezCmd(t, map[string]string{"KEZ_SIG_SERVER": plain.URL}, "", "audit", "--home", t.TempDir())
	if r.code != 1 || r.stderr != "kez audit: the sig-server at "+plain.URL+" keeps no transparency log, so there is nothing to audit\n" {
		t.Errorf("no log: exit %d\n%s", r.code, r.stderr)
	}
	for _, args := range [][]string{{"audit", "extra"}, {"audit", "--interval", "0s"}} {
		if r := kezCmd(t, nil, "", args...); r.code != 2 {
			t.Errorf("kez %s: exit %d, want 2", strings.Join(args, " "), r.code)
		}
	}
}

// kez audit --follow audits again every --interval until Ctrl-C (here:
// the context ends after the third run), then exits 0.
func TestAuditFollow(t *testing.T) {
	s := startLogSigServer(t)
	s.chainOf(t, s.log, stacktest.Identity("alice"), nil, 1, true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &runCounter{cancel: cancel, after: 3}
	var errb bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: out, stderr: &errb, getenv: func(string) string { return "" }}
	code := run(ctx, e, []string{"audit", "--follow", "--interval", "1ms", "--server", s.url, "--home", t.TempDir()})
	if code != 0 || out.runs() < 3 || errb.Len() != 0 {
		t.Errorf("exit %d after %d runs\n%s", code, out.runs(), errb.String())
	}
}

// runCounter counts the lines written to it and cancels after some.
type runCounter struct {
	mu     sync.Mutex
	n      int
	after  int
	cancel func()
}

func (c *runCounter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += bytes.Count(p, []byte("\n"))
	if c.n >= c.after {
		c.cancel()
	}
	return len(p), nil
}

func (c *runCounter) runs() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// kez audit on a dev stack: the account's sig-server by default (its
// profile, with no KEZ_SIG_SERVER), whose log holds every user's links.
func TestAuditStack(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.Env(st.NewUser(t, "alice"))
	st.NewUser(t, "bob")
	origin := st.SigLog.Info().Origin
	env := with(alice, "KEZ_SIG_SERVER", "")
	r := mustRun(t, env, "", "audit")
	if !strings.HasPrefix(r.stdout, "Audited entries 1–") || !strings.HasSuffix(r.stdout, " of log "+origin+": 2 chains, no problems.\n") {
		t.Errorf("first audit:\n%s", r.stdout)
	}
	r = mustRun(t, env, "", "audit")
	if !strings.HasPrefix(r.stdout, "No new entries in log "+origin+" since the last audit") {
		t.Errorf("second audit:\n%s", r.stdout)
	}
}
