package chatserver

import (
	"math"

	"github.com/kez-lat/kez-chat/handles/jsstore"
	"github.com/prometheus/client_golang/prometheus"
)

// viewCollectors are the metrics of the registry's view for logins
// (StoreJetStream with the view on; none otherwise):
//
//	kez_chat_registry_view_age_seconds   now - the start of the view's last successful check (+Inf: none yet)
//	kez_chat_registry_view_keys          entries, key indexes and device records the view holds
//	kez_chat_registry_view_lookups_total{answer="view|store|stale"}
//	    logins answered from the view, by the store for a key the view
//	    lacks, and by the store because the view was stale
func viewCollectors(s *Server) []prometheus.Collector {
	if s.StoreBackend != StoreJetStream || s.RegistryMaxStale < 0 {
		return nil
	}
	stats := func() (jsstore.ViewStats, bool) {
		if r := s.store.Load(); r != nil && r.view != nil {
			return r.view.Stats(), true
		}
		return jsstore.ViewStats{}, false
	}
	cs := []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kez_chat_registry_view_age_seconds",
			Help: "Seconds since the start of the last check that the chat-server's view of the handle registry held every change (+Inf before the first); over the maximum staleness (--registry-max-stale), logins read the registry bucket.",
		}, func() float64 {
			st, ok := stats()
			if !ok || st.FreshAt.IsZero() {
				return math.Inf(1)
			}
			return st.Age.Seconds()
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kez_chat_registry_view_keys",
			Help: "Entries, key indexes and device records the chat-server's view of the handle registry holds.",
		}, func() float64 {
			st, _ := stats()
			return float64(st.Keys)
		}),
	}
	for _, a := range []string{jsstore.AnswerView, jsstore.AnswerStore, jsstore.AnswerStale} {
		cs = append(cs, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kez_chat_registry_view_lookups_total",
			Help:        "Login lookups (callout and gate) by answer: view (from memory), store (the view lacked the key: read from the bucket), stale (the view was older than the maximum staleness or still loading: read from the bucket).",
			ConstLabels: prometheus.Labels{"answer": a},
		}, func() float64 {
			st, _ := stats()
			return float64(st.Lookups[a])
		}))
	}
	return cs
}
