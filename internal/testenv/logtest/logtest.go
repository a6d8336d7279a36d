// Package logtest runs sig-servers that keep a transparency log, for the
// tests of the clients that check it: each is sigchain.NewHandler over a
// SQLite store with sigchain.WithLog over a translog/logserver log (tessera
// POSIX) in a directory of its own, and the log's HTTP API beside it, on
// a loopback httptest server; all real parts, stopped by t.Cleanup.
//
// Two servers given the same key file sign with one log key, as one
// sig-server would: a test makes one lie by letting them hold different
// histories (a split view).
package logtest

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/logserver"
)

// Origin is the log origin of servers started without one.
const Origin = "kez.test/sigchain-log"

// Options shape a [Server].
type Options struct {
	// KeyFile is the log's note key file (made on first use); "" means
	// log.key in the server's own directory. Give two servers the same
	// file for one log key.
	KeyFile string
	// Origin is the log's origin; "" means [Origin].
	Origin string
}

// Server is a running sig-server with a log.
type Server struct {
	URL   string // its base URL
	Store *sqlitestore.Store
	Log   *logserver.Log
	// Logged serves the chains with the log and the log's API; Unlogged
	// serves the same store as a sig-server without a log (no "log" in
	// chain pages, {"log":null} at /v1/info). Serve picks one.
	Logged, Unlogged http.Handler

	handler atomic.Pointer[http.Handler]
}

// Start starts a sig-server with a log in a fresh directory. Any failure
// fails the test.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	dir := t.TempDir()
	if o.KeyFile == "" {
		o.KeyFile = filepath.Join(dir, "log.key")
	}
	if o.Origin == "" {
		o.Origin = Origin
	}
	quiet := slog.New(slog.DiscardHandler)
	signer, _, err := logserver.LoadOrCreateKey(o.KeyFile, o.Origin)
	if err != nil {
		t.Fatalf("logtest: %v", err)
	}
	lg, err := logserver.Open(context.Background(), logserver.Config{Dir: filepath.Join(dir, "log"), Signer: signer,
		CheckpointInterval: logserver.MinCheckpointInterval, Logger: quiet})
	if err != nil {
		t.Fatalf("logtest: %v", err)
	}
	t.Cleanup(func() { lg.Close(context.Background()) })
	st, err := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	if err != nil {
		t.Fatalf("logtest: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	opts := []sigchain.HandlerOption{sigchain.WithLimits(sigchain.NoLimits()), sigchain.WithLogger(quiet)}
	logged := http.NewServeMux()
	logged.Handle("/", sigchain.NewHandler(st, append(opts, sigchain.WithLog(lg))...))
	lh := lg.Handler(logserver.Limits{ReadsPerIP: ratelimit.Unlimited})
	logged.Handle(logserver.InfoPath, lh)
	logged.Handle(logserver.LogPath, lh)
	unlogged := http.NewServeMux()
	unlogged.Handle("/", sigchain.NewHandler(st, opts...))
	unlogged.HandleFunc(logserver.InfoPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"log":null}`))
	})
	s := &Server{Store: st, Log: lg, Logged: logged, Unlogged: unlogged}
	s.Serve(logged)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*s.handler.Load()).ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Serve makes the server answer with h from now on (Logged, Unlogged, or
// another server's handler: a server that swaps its history).
func (s *Server) Serve(h http.Handler) { s.handler.Store(&h) }

// Client returns a sigchain client of the server.
func (s *Server) Client(log *translog.Monitor) *sigchain.Client {
	return &sigchain.Client{BaseURL: s.URL, Log: log}
}

// Info is the log's origin and key.
func (s *Server) Info() translog.LogInfo { return s.Log.Info() }
