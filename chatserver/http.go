package chatserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/internal/httpserve"
)

// InfoPath is where a chat-server describes itself.
const InfoPath = "/v1/info"

// MaxInfoSize bounds the /v1/info answer a client reads.
const MaxInfoSize = 16 << 10

// Info is the answer of GET /v1/info: what a client needs to register at
// this server. Fields may be added.
type Info struct {
	// Domain is the handle domain the server registers: a claim for
	// alice at this server is for "alice@" + Domain.
	Domain string `json:"domain"`
	// SigServer is the base URL of the sig-server the server checks
	// claims against, as clients reach it; clients append their links
	// there.
	SigServer string `json:"sig_server"`
}

// ErrBadInfo reports a /v1/info answer that is not an [Info] a client can
// use.
var ErrBadInfo = errors.New("chatserver: the server's /v1/info answer is not usable")

// ParseInfo decodes and checks a /v1/info answer: a JSON object of at most
// [MaxInfoSize] bytes whose domain passes the handle domain rules
// (development domains included: the caller chose the server) and whose
// sig_server, if present, is an http or https URL without user
// information. Unknown fields are ignored. Errors wrap [ErrBadInfo].
func ParseInfo(b []byte) (*Info, error) {
	if len(b) > MaxInfoSize {
		return nil, fmt.Errorf("%w: it is over %d bytes", ErrBadInfo, MaxInfoSize)
	}
	var in Info
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadInfo, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrBadInfo)
	}
	d, err := handles.ParseDomain(in.Domain, true)
	if err != nil {
		return nil, fmt.Errorf("%w: its domain: %v", ErrBadInfo, err)
	}
	in.Domain = d
	if in.SigServer != "" {
		u, err := url.Parse(in.SigServer)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%w: its sig_server %q is not an http(s) base URL", ErrBadInfo, in.SigServer)
		}
		in.SigServer = strings.TrimRight(in.SigServer, "/")
	}
	return &in, nil
}

// FetchInfo asks the chat-server at baseURL (KEZ_SERVER) for its [Info].
// client nil means http.DefaultClient; give it a timeout. A server that
// answers 404 (one without /v1/info) gives an error wrapping
// [handles.ErrNotFound]; an unreachable one or a 5xx wraps
// [handles.ErrUnreachable]; a bad answer wraps [ErrBadInfo].
func FetchInfo(ctx context.Context, client *http.Client, baseURL string) (*Info, error) {
	if client == nil {
		client = http.DefaultClient
	}
	u := strings.TrimRight(baseURL, "/") + InfoPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("chatserver: the server URL %q: %w", baseURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", handles.ErrUnreachable, baseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxInfoSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", handles.ErrUnreachable, u, err)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s answers 404; is it a KEZ chat-server?", handles.ErrNotFound, u)
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("%w: %s answers %s", handles.ErrUnreachable, u, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: %s answers %s", ErrBadInfo, u, resp.Status)
	}
	return ParseInfo(b)
}

// Handler returns the server's HTTP handler: the handle registry (claim,
// lookup, WebFinger), GET /v1/info, and /healthz, /readyz (see
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
	httpjson.Write(w, http.StatusOK, Info{Domain: s.Domain, SigServer: strings.TrimRight(sig, "/")})
}
