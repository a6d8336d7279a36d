package chatserver

import (
	"net/http"
	"strings"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/internal/httpserve"
)

// InfoPath is where a chat-server describes itself: GET answers a
// [handles.Info] (the client side is [handles.Client.Info]).
const InfoPath = handles.InfoPath

// Handler returns the server's HTTP handler: the handle registry (claim,
// lookup, WebFinger, devices), GET /v1/info, and /healthz, /readyz (see
// [Server.Ready]) and Prometheus /metrics, with request metrics and
// logging. It may be called before Start; until Start has succeeded, and
// after Close, the API answers 503. Every call returns the same handler.
func (s *Server) Handler() http.Handler {
	s.handlerOnce.Do(func() {
		mux := http.NewServeMux()
		mux.Handle("POST /v1/handles", s.api(func(hs *handles.Server) http.Handler {
			return s.metrics.countClaims(hs.ClaimHandler())
		}))
		mux.Handle("GET /v1/handles/{name}", s.api((*handles.Server).LookupHandler))
		mux.Handle("POST "+handles.DevicesPath, s.api(func(hs *handles.Server) http.Handler {
			return s.metrics.countDevices(hs.DevicesHandler())
		}))
		mux.Handle("GET "+handles.DevicesPath+"/{key}", s.api((*handles.Server).DeviceLookupHandler))
		mux.Handle("GET /.well-known/webfinger", s.api((*handles.Server).WebFingerHandler))
		mux.Handle("OPTIONS /.well-known/webfinger", s.api((*handles.Server).WebFingerHandler))
		mux.Handle("GET "+InfoPath, s.api(func(hs *handles.Server) http.Handler { return hs.LimitReads(http.HandlerFunc(s.info)) }))
		s.mu.Lock()
		s.base()
		reg, log := s.reg, s.log
		s.mu.Unlock()
		s.handler = httpserve.Wrap(mux, httpserve.Options{Ready: s.Ready, Registry: reg, Logger: log})
	})
	return s.handler
}

// api serves a route with the running registry server, or 503.
func (s *Server) api(route func(*handles.Server) http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hs := s.hs.Load()
		if hs == nil {
			httpjson.Error(w, http.StatusServiceUnavailable, "the chat-server is not running")
			return
		}
		if s.store.Load() == nil && r.URL.Path != InfoPath {
			httpjson.Error(w, http.StatusServiceUnavailable, "the chat-server's handle registry is not open yet; try again shortly")
			return
		}
		route(hs).ServeHTTP(w, r)
	})
}

func (s *Server) info(w http.ResponseWriter, r *http.Request) {
	sig := s.PublicSigServerURL
	if sig == "" {
		sig = s.SigServerURL
	}
	httpjson.Write(w, http.StatusOK, handles.Info{Domain: s.Domain, SigServer: strings.TrimRight(sig, "/"), Relays: s.relays})
}
