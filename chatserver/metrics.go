package chatserver

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/limitmetrics"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the chat-server's own Prometheus metrics (the request
// metrics come from the HTTP wrapper):
//
//	kez_chat_authorizations_total{result="allowed|denied|malformed"}
//	kez_chat_handle_claims_total{result="created|renewed|refused|failed"}
//	kez_chat_handle_lookalikes_refused_total   claims refused as look-alikes
//	kez_chat_nats_connected   1 while both NATS logins are up
//	kez_chat_kicker_connected 1 while the kicker's login is up (it closes revoked devices' connections)
//	kez_http_limited_total{endpoint,reason}, kez_http_limiter_keys{…},
//	kez_http_limiter_evictions_total{…}  the rate limits (internal/limitmetrics)
//
// and the callout's flood limits (see loginCollector).
type metrics struct {
	claims *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server, svc *callout.Service) (*metrics, error) {
	m := &metrics{claims: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kez_chat_handle_claims_total",
		Help: "Handle claims answered, by result: created (a new handle), renewed (the key already held it), refused (4xx), failed (5xx).",
	}, []string{"result"})}
	for _, r := range []string{"created", "renewed", "refused", "failed"} {
		m.claims.WithLabelValues(r) // export zeros
	}
	auth := func(result string, read func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kez_chat_authorizations_total",
			Help:        "NATS logins the auth callout answered, by result.",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(read()) })
	}
	cs := []prometheus.Collector{
		m.claims,
		newLoginCollector(svc),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kez_chat_handle_lookalikes_refused_total",
			Help: "Handle claims refused because another key holds a look-alike of the name (same skeleton, another name); also counted as refused claims.",
		}, func() float64 {
			if hs := s.hs.Load(); hs != nil {
				return float64(hs.LookAlikeRefusals())
			}
			return 0
		}),
		limitmetrics.New(func() []ratelimit.Stats {
			if hs := s.hs.Load(); hs != nil {
				return hs.LimitStats()
			}
			return nil
		}),
		auth("allowed", func() uint64 { return svc.Stats().Authorized }),
		auth("denied", func() uint64 { return svc.Stats().Denied }),
		auth("malformed", func() uint64 { return svc.Stats().Malformed }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kez_chat_nats_connected",
			Help: "1 while both NATS logins of the chat-server (callout service and provisioner) are connected, else 0.",
		}, func() float64 {
			a, b := s.svcConn.Load(), s.provConn.Load()
			if a != nil && b != nil && a.IsConnected() && b.IsConnected() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kez_chat_kicker_connected",
			Help: "1 while the chat-server's kicker login (system account, closes revoked devices' connections) is connected, else 0: 0 for long means nats.conf lacks the kicker.",
		}, func() float64 {
			if k := s.kickConn.Load(); k != nil && k.IsConnected() {
				return 1
			}
			return 0
		}),
	}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			var are prometheus.AlreadyRegisteredError
			if errors.As(err, &are) {
				return nil, fmt.Errorf("chatserver: the metrics registry already has this server's metrics; give each Server its own Registry (%w)", err)
			}
			return nil, fmt.Errorf("chatserver: registering metrics: %w", err)
		}
	}
	return m, nil
}

// countClaims counts the answers of the claim handler by status.
func (m *metrics) countClaims(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		result := "refused"
		switch {
		case rec.status == http.StatusCreated:
			result = "created"
		case rec.status < 300:
			result = "renewed"
		case rec.status >= 500:
			result = "failed"
		}
		m.claims.WithLabelValues(result).Inc()
	})
}

// statusRecorder captures a response's status code.
type statusRecorder struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
