package limitmetrics

import (
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/prometheus/client_golang/prometheus"
)

func TestCollector(t *testing.T) {
	l := ratelimit.New(ratelimit.Limit{N: 1, Per: time.Hour}, ratelimit.Options{Endpoint: "claim", Reason: "ip", MaxKeys: 2})
	for _, k := range []string{"a", "a", "a", "b", "c"} {
		l.Allow(k)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(New(func() []ratelimit.Stats { return []ratelimit.Stats{l.Stats()} }))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"kez_http_limited_total": 2, "kez_http_limiter_evictions_total": 1, "kez_http_limiter_keys": 2}
	for _, f := range families {
		m := f.GetMetric()[0]
		labels := map[string]string{}
		for _, lp := range m.GetLabel() {
			labels[lp.GetName()] = lp.GetValue()
		}
		v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
		if labels["endpoint"] != "claim" || labels["reason"] != "ip" || v != want[f.GetName()] {
			t.Errorf("%s%v = %v, want %v", f.GetName(), labels, v, want[f.GetName()])
		}
		delete(want, f.GetName())
	}
	if len(want) != 0 {
		t.Errorf("missing %v", want)
	}
}
