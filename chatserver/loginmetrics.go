package chatserver

import (
	"github.com/kez-lat/kez-chat/callout"
	"github.com/prometheus/client_golang/prometheus"
)

// loginCollector exports what the auth callout's flood limits did
// (callout.Stats), read once per scrape:
//
//	kez_chat_login_denials_total{reason="credentials|unknown_key|bad_signature|suspended|revoked|policy|error"}
//	kez_chat_login_backoffs_total{action="delayed|unanswered"}
//	kez_chat_login_dropped_total{reason="queue_full|expired|slow_consumer"}
//	kez_chat_login_queue_depth{lane="known|new|suspect"}
//	kez_chat_login_held_denials
//	kez_chat_login_tracked{kind="addresses|known_pairs"}
type loginCollector struct {
	svc                                      *callout.Service
	denials, backoffs, dropped, queue, track *prometheus.Desc
	held                                     *prometheus.Desc
}

func newLoginCollector(svc *callout.Service) *loginCollector {
	return &loginCollector{
		svc: svc,
		denials: prometheus.NewDesc("kez_chat_login_denials_total",
			"NATS logins the auth callout refused, by cause (error: it could not decide).", []string{"reason"}, nil),
		backoffs: prometheus.NewDesc("kez_chat_login_backoffs_total",
			"Denials the per-address backoff held before answering (delayed) or left for nats-server to refuse at its auth timeout (unanswered).", []string{"action"}, nil),
		dropped: prometheus.NewDesc("kez_chat_login_dropped_total",
			"Authorization requests dropped unread: their lane was full, they expired while queued, or the NATS client dropped them (slow consumer).", []string{"reason"}, nil),
		queue: prometheus.NewDesc("kez_chat_login_queue_depth",
			"Authorization requests waiting for a worker, by lane.", []string{"lane"}, nil),
		held: prometheus.NewDesc("kez_chat_login_held_denials",
			"Denials held by the backoff now.", nil, nil),
		track: prometheus.NewDesc("kez_chat_login_tracked",
			"Failing client addresses and key-address pairs with earlier logins the callout remembers now.", []string{"kind"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *loginCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.denials, c.backoffs, c.dropped, c.queue, c.held, c.track} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *loginCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.svc.Stats()
	counter := func(d *prometheus.Desc, v uint64, label ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), label...)
	}
	gauge := func(d *prometheus.Desc, v int, label ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), label...)
	}
	for _, code := range callout.DenyCodes {
		counter(c.denials, st.DeniedBy[code], string(code))
	}
	counter(c.backoffs, st.Delayed, "delayed")
	counter(c.backoffs, st.Unanswered, "unanswered")
	counter(c.dropped, st.DroppedFull, "queue_full")
	counter(c.dropped, st.DroppedExpired, "expired")
	counter(c.dropped, st.DroppedSlow, "slow_consumer")
	for _, l := range callout.Lanes {
		gauge(c.queue, st.Queued[l], l.String())
	}
	gauge(c.held, st.Held)
	gauge(c.track, st.Addresses, "addresses")
	gauge(c.track, st.Known, "known_pairs")
}
