package translog_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/translog"
)

// sigServer is a real HTTP server serving what a sig-server serves of its
// log, from a log the test can swap: a lying server shows one log to
// alice and another (signed by the same key) to bob.
type sigServer struct {
	URL      string
	log      atomic.Pointer[tlogtest.Log]
	infoHits atomic.Int64
	mu       sync.Mutex
	override map[string]http.HandlerFunc // path → handler, before the log's
}

func newSigServer(t *testing.T, l *tlogtest.Log) *sigServer {
	s := &sigServer{override: map[string]http.HandlerFunc{}}
	s.log.Store(l)
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *sigServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v1/info" {
		s.infoHits.Add(1)
	}
	s.mu.Lock()
	h := s.override[r.URL.Path]
	s.mu.Unlock()
	if h != nil {
		h(w, r)
		return
	}
	if l := s.log.Load(); l != nil {
		l.Handler().ServeHTTP(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"log":null}`))
}

// on makes path answer with h (nil: the log's answer again).
func (s *sigServer) on(path string, h http.HandlerFunc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h == nil {
		delete(s.override, path)
	} else {
		s.override[path] = h
	}
}

func newMonitor(pins translog.Pins) *translog.Monitor {
	return &translog.Monitor{Pins: pins, Logger: slog.New(slog.DiscardHandler)}
}
