package relay

import (
	"errors"

	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons of kez_relay_refused_total.
const (
	// ReasonNotRegistered: the registry does not know the key that asked
	// for a reservation (or it is suspended, revoked, or not a KEZ key).
	ReasonNotRegistered = "not_registered"
	// ReasonRegistryUnreachable: the registry could not say (fail closed).
	ReasonRegistryUnreachable = "registry_unreachable"
	// ReasonRegistryRate: one IP address asked about too many unknown
	// keys ([Config].RegistryLookupsPerIP).
	ReasonRegistryRate = "registry_rate"
	// ReasonReservationLimit: over MaxReservations or
	// MaxReservationsPerIP.
	ReasonReservationLimit = "reservation_limit"
	// ReasonCircuitLimit: over MaxCircuits, or out of resources.
	ReasonCircuitLimit = "circuit_limit"
	// ReasonCircuitIPLimit: over MaxCircuitsPerIP or
	// MaxCircuitsPerIPToPeer (the connecting peer's address).
	ReasonCircuitIPLimit = "circuit_ip_limit"
	// ReasonNoReservation: a connection to a peer holding no reservation.
	ReasonNoReservation = "no_reservation"
)

// metrics are the relay's own counters (go-libp2p's relay metrics are
// registered beside them).
type metrics struct {
	bytes       *prometheus.CounterVec // direction
	rateLimited prometheus.Counter
	refused     *prometheus.CounterVec // reason
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		bytes: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_relay_bytes_total",
			Help: "Bytes relayed, by direction: to_target (from the peer that connects through the relay to the peer holding the reservation) or from_target.",
		}, []string{"direction"})),
		rateLimited: register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kez_relay_rate_limited_seconds_total",
			Help: "Seconds circuits waited for the per-circuit or total rate limit, summed over circuits.",
		})),
		refused: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_relay_refused_total",
			Help: "Reservations and connections refused, by reason.",
		}, []string{"reason"})),
	}
	for _, d := range []string{dirToTarget, dirFromTarget} {
		m.bytes.WithLabelValues(d)
	}
	for _, r := range []string{ReasonNotRegistered, ReasonRegistryUnreachable, ReasonRegistryRate, ReasonReservationLimit, ReasonCircuitLimit, ReasonCircuitIPLimit, ReasonNoReservation} {
		m.refused.WithLabelValues(r)
	}
	return m
}

// register registers c, or returns the collector of the same
// description registered already (a registry given to two relays).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if old, ok := are.ExistingCollector.(C); ok {
				return old
			}
		}
		panic(err)
	}
	return c
}

// tracer is go-libp2p's relay metrics tracer that also counts the
// service's refusals in kez_relay_refused_total.
type tracer struct {
	relayv2.MetricsTracer
	m *metrics
}

// ReservationRequestHandled counts a reservation refused over the limits
// (a refusal by the registry is counted where it is decided).
func (t tracer) ReservationRequestHandled(status pbv2.Status) {
	t.MetricsTracer.ReservationRequestHandled(status)
	if status == pbv2.Status_RESERVATION_REFUSED {
		t.m.refused.WithLabelValues(ReasonReservationLimit).Inc()
	}
}

// ConnectionRequestHandled counts a connection refused over the limits
// or to a peer without a reservation.
func (t tracer) ConnectionRequestHandled(status pbv2.Status) {
	t.MetricsTracer.ConnectionRequestHandled(status)
	switch status {
	case pbv2.Status_RESOURCE_LIMIT_EXCEEDED:
		t.m.refused.WithLabelValues(ReasonCircuitLimit).Inc()
	case pbv2.Status_NO_RESERVATION:
		t.m.refused.WithLabelValues(ReasonNoReservation).Inc()
	}
}
