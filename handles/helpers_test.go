package handles

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// stack is one operator's deployment, all real: a sig-server (sigchain
// handler over its SQLite file) and a chat-server's handle registry
// (Server over a SQLite registry), each on its own loopback HTTP server.
type stack struct {
	domain string
	sig    *httptest.Server
	sigLog *requestLog // what the sig-server was asked
	sigc   *sigchain.Client
	reg    *SQLiteStore
	server *Server
	chat   *httptest.Server
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func newStack(t testing.TB, domain string) *stack {
	t.Helper()
	dir := t.TempDir()
	chains, err := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { chains.Close() })
	// Rate limits off: these tests are about the registry; limits_test.go
	// turns them on.
	sigLog := &requestLog{}
	sig := httptest.NewServer(sigLog.wrap(sigchain.NewHandler(chains, sigchain.WithLogger(quietLog), sigchain.WithLimits(sigchain.NoLimits()))))
	t.Cleanup(sig.Close)

	reg, err := OpenSQLite(filepath.Join(dir, "handles.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Close() })
	sigc := &sigchain.Client{BaseURL: sig.URL}
	srv, err := NewServer(ServerConfig{Domain: domain, Store: reg, SigServer: sigc, Logger: quietLog, Limits: NoLimits()})
	if err != nil {
		t.Fatal(err)
	}
	chat := httptest.NewServer(srv)
	t.Cleanup(chat.Close)
	return &stack{domain: domain, sig: sig, sigLog: sigLog, sigc: sigc, reg: reg, server: srv, chat: chat}
}

// requestLog records the requests a real server handles.
type requestLog struct {
	mu   sync.Mutex
	reqs []string // "GET /v1/chains/U…?since=0"
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l.mu.Lock()
		l.reqs = append(l.reqs, r.Method+" "+r.URL.RequestURI())
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// take returns the requests recorded since the last call.
func (l *requestLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.reqs
	l.reqs = nil
	return out
}

// startChain appends id's eldest link naming handle (may be "") to the
// stack's sig-server.
func (s *stack) startChain(t testing.TB, id *kez.Identity, handle string) {
	t.Helper()
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest,
		sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, handle), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.sigc.Append(context.Background(), l); err != nil {
		t.Fatal(err)
	}
}

// register makes a user the way "kez register NAME" does: eldest link,
// then the claim.
func (s *stack) register(t testing.TB, name string) *kez.Identity {
	t.Helper()
	id := newIdentity(t)
	h := Handle{Name: name, Domain: s.domain}
	r, err := Register(context.Background(), id, h, RegisterOptions{ServerURL: s.chat.URL, SigServerURL: s.sig.URL})
	if err != nil {
		t.Fatalf("register %s: %v", h, err)
	}
	if !r.Created || r.Record.Key != id.PublicKey().String() {
		t.Fatalf("register %s: created %v, record %+v", h, r.Created, r.Record)
	}
	return id
}

// post sends a JSON body and returns the status and the decoded answer.
func post(t testing.TB, url string, body any) (int, errorBody) {
	t.Helper()
	var b []byte
	switch v := body.(type) {
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e errorBody
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

// get fetches url and decodes a JSON answer into out (if not nil).
func get(t testing.TB, url string, out any) *http.Response {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("GET %s: %d, body not JSON: %v", url, resp.StatusCode, err)
		}
	}
	return resp
}

// rewriting returns a real HTTP server in front of h that lets rewrite
// change every JSON answer: a lying server.
func rewriting(t testing.TB, h http.Handler, rewrite func(path string, v map[string]any)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		var v map[string]any
		body := rec.Body.Bytes()
		if json.Unmarshal(body, &v) == nil {
			rewrite(r.URL.Path, v)
			body, _ = json.Marshal(v)
		}
		for k, vs := range rec.Header() {
			w.Header()[k] = vs
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(body)
	}))
	t.Cleanup(srv.Close)
	return srv
}
