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
//	kez_chat_devices_registered_total   devices added (POST /v1/devices answered 201)
//	kez_chat_device_revocations_total   revocations this server stored (again for one sent again)
//	kez_chat_device_kicks_total{result="closed|failed|unavailable"}
//	    revoked devices' connections closed, kicks that failed, and sweeps
//	    that could not list connections (no kicker login, no NATS answer)
//	kez_chat_device_revocation_notices_total   revocations other chat-servers announced
//	kez_http_limited_total{endpoint,reason}, kez_http_limiter_keys{…},
//	kez_http_limiter_evictions_total{…}  the rate limits (internal/limitmetrics)
//
// the callout's flood limits (see loginCollector) and the registry
// view's (see viewCollectors).
type metrics struct {
	claims      *prometheus.CounterVec
	registered  prometheus.Counter
	revocations prometheus.Counter
	kicks       *prometheus.CounterVec
	notices     prometheus.Counter
}

// Results of kez_chat_device_kicks_total.
const (
	kickClosed      = "closed"      // a revoked device's connection was closed
	kickFailed      = "failed"      // a kick a NATS server refused or did not answer
	kickUnavailable = "unavailable" // a sweep that could not list the connections
)

func newMetrics(reg prometheus.Registerer, s *Server, svc *callout.Service) (*metrics, error) {
	m := &metrics{
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_handle_claims_total",
			Help: "Handle claims answered, by result: created (a new handle), renewed (the key already held it), refused (4xx), failed (5xx).",
		}, []string{"result"}),
		registered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kez_chat_devices_registered_total",
			Help: "Devices added to the registry (add_device links stored for the first time).",
		}),
		revocations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kez_chat_device_revocations_total",
			Help: "Device revocations this chat-server stored and acted on (a revocation sent again counts again: it repeats the kicks and the purge).",
		}),
		kicks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_device_kicks_total",
			Help: "Revoked devices' NATS connections by result: closed (kicked), failed (a kick refused or unanswered), unavailable (a sweep that could not list connections: no kicker login or no NATS server answered).",
		}, []string{"result"}),
		notices: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kez_chat_device_revocation_notices_total",
			Help: "Revocation notices received from other chat-servers (kez.v1.revoked; this server's own are not counted).",
		}),
	}
	for _, r := range []string{"created", "renewed", "refused", "failed"} {
		m.claims.WithLabelValues(r) // export zeros
	}
	for _, r := range []string{kickClosed, kickFailed, kickUnavailable} {
		m.kicks.WithLabelValues(r)
	}
	auth := func(result string, read func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kez_chat_authorizations_total",
			Help:        "NATS logins the auth callout answered, by result.",
			ConstLabels: prometheus.Labels{"result": result},
		}, func() float64 { return float64(read()) })
	}
	cs := []prometheus.Collector{
		m.claims, m.registered, m.revocations, m.kicks, m.notices,
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
	cs = append(cs, viewCollectors(s)...)
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

// countDevices counts the devices the device handler added (201).
func (m *metrics) countDevices(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		if rec.status == http.StatusCreated {
			m.registered.Inc()
		}
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
