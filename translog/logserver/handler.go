package logserver

import (
	"errors"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/translog"
)

// Paths of the log's HTTP API ([Log.Handler]).
const (
	InfoPath = wire.InfoPath
	LogPath  = "/v1/log/" // checkpoint, tile/…, consistency
)

// Limits are the abuse limits of [Log.Handler]. Zero fields take the
// value of [DefaultLimits]; [ratelimit.Unlimited] turns the rate off.
type Limits struct {
	// ReadsPerIP bounds the requests one client address sends to GET
	// /v1/info and every /v1/log/ endpoint together.
	ReadsPerIP ratelimit.Limit
	// ClientIP says how a request's client address is known.
	ClientIP ratelimit.ClientIP
	// MaxTracked bounds the addresses the limiter tracks (0:
	// [ratelimit.DefaultMaxKeys]).
	MaxTracked int
	// Now is the limiter's clock; nil means time.Now.
	Now func() time.Time
}

// DefaultLimits are the limits of a zero [Limits].
var DefaultLimits = Limits{ReadsPerIP: ratelimit.Limit{N: 1200, Per: time.Minute}}

// Handler serves the log's HTTP API; see [Log.Handler].
type Handler struct {
	log      *Log // nil: no log
	reads    *ratelimit.Limiter
	clientIP ratelimit.ClientIP
	mux      *http.ServeMux
}

// Handler returns the log's HTTP API (docs/spec/translog.md):
//
//	GET /v1/info                           the log's origin and key: translog.Info
//	GET /v1/log/checkpoint                 the published checkpoint (text/plain)
//	GET /v1/log/tile/{L}/{N}[.p/{W}]       a hash tile (C2SP tlog-tiles)
//	GET /v1/log/tile/entries/{N}[.p/{W}]   an entry bundle
//	GET /v1/log/consistency?from=M&to=N    a translog.ConsistencyProof, 0 < M ≤ N ≤ the published size
//
// Tile paths are parsed by the tlog-tiles grammar, in its canonical form
// only (else 400), and must lie within the published tree (else 404); the files are
// read through tessera, never by a path built from the URL. Full tiles
// and bundles are cached as immutable. Every endpoint counts against
// lim.ReadsPerIP (429 with Retry-After past it).
//
// A nil *Log serves a server that keeps no log: /v1/info answers
// {"log":null} and /v1/log/ 404.
func (l *Log) Handler(lim Limits) *Handler {
	h := &Handler{log: l, clientIP: lim.ClientIP, mux: http.NewServeMux()}
	h.reads = ratelimit.New(lim.ReadsPerIP.Or(DefaultLimits.ReadsPerIP),
		ratelimit.Options{Endpoint: "log", Reason: "ip", MaxKeys: lim.MaxTracked, Now: lim.Now})
	h.mux.HandleFunc("GET "+InfoPath, h.serve("info", h.info))
	h.mux.HandleFunc("GET "+LogPath+"checkpoint", h.serve("checkpoint", h.checkpoint))
	h.mux.HandleFunc("GET "+LogPath+"tile/{path...}", h.serve("tile", h.tile))
	h.mux.HandleFunc("GET "+LogPath+"consistency", h.serve("consistency", h.consistency))
	h.mux.HandleFunc(LogPath, h.serve("other", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Error(w, http.StatusNotFound, "no such log resource")
	}))
	return h
}

// ServeHTTP serves the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// Stats returns the counters of the handler's rate limit (endpoint "log",
// reason "ip"), for package limitmetrics.
func (h *Handler) Stats() []ratelimit.Stats { return []ratelimit.Stats{h.reads.Stats()} }

// Limits returns the limits in force, defaults filled in.
func (h *Handler) Limits() Limits {
	return Limits{ReadsPerIP: h.reads.Limit(), ClientIP: h.clientIP}
}

// statusWriter remembers the status code written.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// serve wraps an endpoint with the rate limit and the request counter.
func (h *Handler) serve(endpoint string, f http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		if ok, wait := h.reads.Allow(h.clientIP.Key(r)); !ok {
			ratelimit.Refuse(sw, wait, "too many log reads from your address; wait and try again")
		} else {
			f(sw, r)
		}
		if h.log != nil {
			label := endpoint
			if endpoint == "tile" && strings.HasPrefix(r.PathValue("path"), "entries/") {
				label = "entries"
			}
			h.log.requests.WithLabelValues(label, strconv.Itoa(sw.code)).Inc()
		}
	}
}

func (h *Handler) info(w http.ResponseWriter, r *http.Request) {
	var info translog.Info
	if h.log != nil {
		li := h.log.Info()
		info.Log = &li
	}
	w.Header().Set("Cache-Control", "no-store")
	httpjson.Write(w, http.StatusOK, info)
}

// noLog answers 404 when there is no log and reports true.
func (h *Handler) noLog(w http.ResponseWriter) bool {
	if h.log == nil {
		httpjson.Error(w, http.StatusNotFound, "this sig-server keeps no transparency log")
	}
	return h.log == nil
}

func (h *Handler) unavailable(w http.ResponseWriter, r *http.Request, what string, err error) {
	h.log.log.ErrorContext(r.Context(), "logserver: "+what, "err", err, "path", r.URL.Path)
	httpjson.Error(w, http.StatusServiceUnavailable, "the log failed "+what+"; try again later")
}

func (h *Handler) checkpoint(w http.ResponseWriter, r *http.Request) {
	if h.noLog(w) {
		return
	}
	cp, err := h.log.published(r.Context())
	if err != nil {
		h.unavailable(w, r, "reading its checkpoint", err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(cp.Note)
}

func (h *Handler) tile(w http.ResponseWriter, r *http.Request) {
	if h.noLog(w) {
		return
	}
	p, err := parseTilePath(r.PathValue("path"))
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "not a tile path (C2SP tlog-tiles: tile/L/N[.p/W] or tile/entries/N[.p/W], N as x001/x234/067)")
		return
	}
	cp, err := h.log.published(r.Context())
	if err != nil {
		h.unavailable(w, r, "reading its checkpoint", err)
		return
	}
	if !p.within(cp.Size) {
		httpjson.Error(w, http.StatusNotFound, "the published log has no such tile")
		return
	}
	var data []byte
	if p.Entries {
		data, err = h.log.reader.ReadEntryBundle(r.Context(), p.Index, p.Width)
	} else {
		data, err = h.log.reader.ReadTile(r.Context(), p.Level, p.Index, p.Width)
	}
	if errors.Is(err, os.ErrNotExist) {
		httpjson.Error(w, http.StatusNotFound, "the published log has no such tile")
		return
	}
	if err != nil {
		h.unavailable(w, r, "reading a tile", err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if p.Width == 0 {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		w.Header().Set("Cache-Control", "no-cache")
	}
	w.Write(data)
}

func (h *Handler) consistency(w http.ResponseWriter, r *http.Request) {
	if h.noLog(w) {
		return
	}
	q := r.URL.Query()
	from, err1 := strconv.ParseUint(q.Get("from"), 10, 64)
	to, err2 := strconv.ParseUint(q.Get("to"), 10, 64)
	if err1 != nil || err2 != nil || len(q["from"]) != 1 || len(q["to"]) != 1 {
		httpjson.Error(w, http.StatusBadRequest, "from and to must be tree sizes (decimal integers), each given once")
		return
	}
	p, err := h.log.Consistency(r.Context(), from, to)
	if errors.Is(err, ErrBadRange) {
		httpjson.Error(w, http.StatusBadRequest, "want 0 < from ≤ to ≤ the published tree size")
		return
	}
	if err != nil {
		h.unavailable(w, r, "building a consistency proof", err)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	httpjson.Write(w, http.StatusOK, p)
}
