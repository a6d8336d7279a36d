// Package limitmetrics exports the counters of the HTTP servers' rate
// limits (package ratelimit) to Prometheus, the same families on both
// servers:
//
//	kez_http_limited_total{endpoint,reason}            requests refused with 429
//	kez_http_limiter_keys{endpoint,reason}             client addresses or keys tracked now
//	kez_http_limiter_evictions_total{endpoint,reason}  keys forgotten because the table was full
//
//	reg.MustRegister(limitmetrics.New(handler.LimitStats))
package limitmetrics

import (
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	limited = prometheus.NewDesc("kez_http_limited_total",
		"Requests refused with 429 Too Many Requests, by endpoint and by what was limited (ip: the client address, key: the user key, new_chain: new chains per address).",
		[]string{"endpoint", "reason"}, nil)
	keys = prometheus.NewDesc("kez_http_limiter_keys",
		"Client addresses or keys a rate limiter tracks now; bounded by its table size.",
		[]string{"endpoint", "reason"}, nil)
	evictions = prometheus.NewDesc("kez_http_limiter_evictions_total",
		"Keys a rate limiter forgot because its table was full while their bucket was not (many distinct clients at once).",
		[]string{"endpoint", "reason"}, nil)
)

// collector reads the limiters' stats at each scrape.
type collector struct {
	stats func() []ratelimit.Stats
}

// New returns a collector of the limiters whose stats the function
// returns at each scrape (nil or empty: none yet).
func New(stats func() []ratelimit.Stats) prometheus.Collector { return collector{stats} }

// Describe implements prometheus.Collector.
func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- limited
	ch <- keys
	ch <- evictions
}

// Collect implements prometheus.Collector.
func (c collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.stats() {
		ch <- prometheus.MustNewConstMetric(limited, prometheus.CounterValue, float64(s.Limited), s.Endpoint, s.Reason)
		ch <- prometheus.MustNewConstMetric(keys, prometheus.GaugeValue, float64(s.Tracked), s.Endpoint, s.Reason)
		ch <- prometheus.MustNewConstMetric(evictions, prometheus.CounterValue, float64(s.Evicted), s.Endpoint, s.Reason)
	}
}
