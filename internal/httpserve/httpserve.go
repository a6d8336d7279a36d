// Package httpserve is the plumbing both KEZ servers share: it wraps an
// application [http.Handler] with /healthz, /readyz and Prometheus /metrics,
// request metrics and log/slog request logging ([Wrap]), and runs it on a
// listener until a context is cancelled, then shuts down gracefully
// ([Serve], [ListenAndServe]). The binaries cancel the context on SIGTERM.
//
//	h := httpserve.Wrap(app, httpserve.Options{Registry: reg, Logger: log, Ready: store.Ping})
//	err := httpserve.ListenAndServe(ctx, "127.0.0.1:8081", h, log, nil)
//
// It holds no global state: registries and loggers are passed in.
package httpserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Options configures [Wrap].
type Options struct {
	// Ready reports whether the server can take traffic (e.g. its
	// database answers); /readyz answers 503 with the error otherwise.
	// nil means always ready.
	Ready func(context.Context) error
	// Registry receives the request metrics and is served on /metrics.
	// nil means a new registry with only the request metrics.
	Registry *prometheus.Registry
	// Logger logs one line per request at Info (Debug for the probe and
	// metrics endpoints). nil means slog.Default().
	Logger *slog.Logger
}

// Wrap returns a handler that serves /healthz (always 200 while the
// process runs), /readyz (200 or 503 by Options.Ready), /metrics (the
// Prometheus registry) and everything else with app, counting
// (kez_http_requests_total{method,route,code}), timing
// (kez_http_request_duration_seconds{method,route}) and logging every
// request. route is the app's matched ServeMux pattern, or "other". It
// panics if the metrics cannot be registered for a reason other than being
// registered already by an earlier Wrap on the same registry.
func Wrap(app http.Handler, o Options) http.Handler {
	reg := o.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	requests := register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kez_http_requests_total",
		Help: "HTTP requests served, by method, route pattern and status code.",
	}, []string{"method", "route", "code"}))
	latency := register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "kez_http_request_duration_seconds",
		Help:    "HTTP request latency, by method and route pattern.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms … 4 s
	}, []string{"method", "route"}))

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if o.Ready != nil {
			if err := o.Ready(r.Context()); err != nil {
				httpjson.Error(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
				return
			}
		}
		httpjson.Write(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.Handle("/", app)

	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		mux.ServeHTTP(rec, r)
		// Both muxes set r.Pattern on the same request: the app's, when it
		// has a ServeMux, overrides the catch-all "/".
		route := r.Pattern
		if route == "" || route == "/" {
			route = "other"
		}
		d := time.Since(start)
		requests.WithLabelValues(r.Method, route, strconv.Itoa(rec.status)).Inc()
		latency.WithLabelValues(r.Method, route).Observe(d.Seconds())
		level := slog.LevelInfo
		switch route {
		case "GET /healthz", "GET /readyz", "GET /metrics":
			level = slog.LevelDebug
		}
		log.Log(r.Context(), level, "http request",
			"method", r.Method, "path", r.URL.Path, "route", route, "status", rec.status,
			"bytes", rec.bytes, "duration", d, "remote", r.RemoteAddr)
	})
}

// register registers c, or returns the collector already registered under
// the same description.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic("httpserve: registering metrics: " + err.Error())
	}
	return c
}

// recorder captures the status code and size of a response.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// ShutdownTimeout is how long [Serve] waits for in-flight requests after
// its context is cancelled.
const ShutdownTimeout = 10 * time.Second

// Serve serves h on ln until ctx is cancelled, then stops accepting,
// waits up to [ShutdownTimeout] for in-flight requests and returns nil. It
// returns an error if serving fails. ln is closed on return.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	return ServeTimeout(ctx, ln, h, log, ShutdownTimeout)
}

// ServeTimeout is [Serve] waiting up to timeout (a server's
// --drain-timeout) for in-flight requests; a timeout of 0 or less means
// [ShutdownTimeout].
func ServeTimeout(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = ShutdownTimeout
	}
	if log == nil {
		log = slog.Default()
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("httpserve: serving on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "addr", ln.Addr().String())
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		srv.Close()
		return fmt.Errorf("httpserve: graceful shutdown: %w", err)
	}
	<-errc // http.ErrServerClosed
	return nil
}

// ListenAndServe listens on addr (host:port; port 0 picks a free one),
// calls onListen with the bound address if it is not nil, and runs
// [Serve].
func ListenAndServe(ctx context.Context, addr string, h http.Handler, log *slog.Logger, onListen func(net.Addr)) error {
	return ListenAndServeTimeout(ctx, addr, h, log, onListen, ShutdownTimeout)
}

// ListenAndServeTimeout is [ListenAndServe] running [ServeTimeout].
func ListenAndServeTimeout(ctx context.Context, addr string, h http.Handler, log *slog.Logger, onListen func(net.Addr), timeout time.Duration) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("httpserve: listening on %s: %w", addr, err)
	}
	if onListen != nil {
		onListen(ln.Addr())
	}
	return ServeTimeout(ctx, ln, h, log, timeout)
}
