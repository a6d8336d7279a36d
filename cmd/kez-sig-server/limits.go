package main

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/limitmetrics"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/jsstore"
	"github.com/prometheus/client_golang/prometheus"
)

// collector deletes orphan chains (sigchain.OrphanCollector) older than
// ttl, once at start and then every interval, until ctx ends.
type collector struct {
	chains    *chains
	ttl       time.Duration
	interval  time.Duration
	now       func() time.Time
	log       *slog.Logger
	collected atomic.Uint64
	failed    atomic.Uint64
}

// run collects until ctx ends, or until the store says it never can.
func (c *collector) run(ctx context.Context) {
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		if st := c.chains.store(); st != nil {
			n, err := st.CollectOrphans(ctx, c.now().Add(-c.ttl))
			c.collected.Add(uint64(n))
			switch {
			case errors.Is(err, jsstore.ErrCannotCollect):
				c.failed.Add(1)
				c.log.Warn("orphan chains are not collected", "err", err)
				return
			case err != nil && ctx.Err() == nil:
				c.failed.Add(1)
				c.log.Warn("collecting orphan chains failed; trying again later", "err", err, "retry_in", c.interval)
			case n > 0:
				c.log.Info("collected orphan chains", "chains", n, "older_than", c.ttl)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// linkSweepInterval is how often the sweeper deletes expired link
// requests.
const linkSweepInterval = time.Minute

// sweeper deletes expired device link requests
// (sigchain.LinkRequestStore) every interval, until ctx ends.
type sweeper struct {
	chains   *chains
	interval time.Duration
	now      func() time.Time
	log      *slog.Logger
	swept    atomic.Uint64
}

func (s *sweeper) run(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lr, ok := s.chains.store().(sigchain.LinkRequestStore)
		if !ok {
			continue
		}
		n, err := lr.SweepLinkRequests(ctx, s.now())
		s.swept.Add(uint64(n))
		if err != nil && ctx.Err() == nil {
			s.log.Warn("sweeping expired link requests failed; trying again later", "err", err, "retry_in", s.interval)
		}
	}
}

// registerMetrics adds the sig-server's own metrics to reg:
//
//	kez_http_limited_total{endpoint,reason} … (internal/limitmetrics)
//	kez_sig_chain_refusals_total{reason="links|bytes"}  appends refused by a cap
//	kez_sig_chains_collected_total                      orphan chains deleted
//	kez_sig_collection_failures_total                   collections that failed
//	kez_sig_prekeys_stored_total                        prekey records stored
//	kez_sig_prekey_refusals_total{reason}               prekey records refused: malformed, invalid, not_newer, no_chain, device_revoked
//	kez_sig_link_requests_stored_total                  device link requests stored
//	kez_sig_link_request_refusals_total{reason}         link requests refused: malformed, invalid, expired, device_known, full
//	kez_sig_link_requests_swept_total                   expired link requests deleted
//	kez_sig_group_links_stored_total                    group links stored
//	kez_sig_group_refusals_total{reason}                group links refused, by the API's reason
//
// (the transparency log registers its own: package translog/logserver).
func registerMetrics(reg prometheus.Registerer, ch *chains, gc *collector, sw *sweeper, logStats func() []ratelimit.Stats) {
	stats := func() sigchain.HandlerStats {
		if h := ch.app(); h != nil {
			return h.Stats()
		}
		return sigchain.HandlerStats{}
	}
	groups := func() group.HandlerStats {
		if h := ch.groups(); h != nil {
			return h.Stats()
		}
		return group.HandlerStats{}
	}
	refusals := func(reason string, read func(sigchain.HandlerStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kez_sig_chain_refusals_total",
			Help:        "Appends refused because the chain would pass a cap: links (--max-chain-links) or bytes (--max-chain-bytes).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(read(stats())) })
	}
	reg.MustRegister(
		limitmetrics.New(func() []ratelimit.Stats {
			return append(append(stats().Limiters, groups().Limiters...), logStats()...)
		}),
		refusals("links", func(s sigchain.HandlerStats) uint64 { return s.TooManyLinks }),
		refusals("bytes", func(s sigchain.HandlerStats) uint64 { return s.TooManyBytes }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kez_sig_chains_collected_total",
			Help: "Orphan chains (no link ever named a handle) deleted after --orphan-ttl.",
		}, func() float64 { return float64(gc.collected.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kez_sig_collection_failures_total",
			Help: "Collections of orphan chains that failed (see the log).",
		}, func() float64 { return float64(gc.failed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kez_sig_prekeys_stored_total",
			Help: "Signed prekey records stored (PUT /v1/prekeys/{key} answered 201).",
		}, func() float64 { return float64(stats().Prekeys.Stored) }),
	)
	for _, r := range []struct {
		reason string
		read   func(sigchain.PrekeyStats) uint64
	}{
		{"malformed", func(s sigchain.PrekeyStats) uint64 { return s.Malformed }},
		{"invalid", func(s sigchain.PrekeyStats) uint64 { return s.Invalid }},
		{"not_newer", func(s sigchain.PrekeyStats) uint64 { return s.NotNewer }},
		{"no_chain", func(s sigchain.PrekeyStats) uint64 { return s.NoChain }},
		{"device_revoked", func(s sigchain.PrekeyStats) uint64 { return s.Revoked }},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kez_sig_prekey_refusals_total",
			Help:        "Prekey records refused: malformed (not a record, too large, wrong content type), invalid (does not verify for the key, expired, future, valid too long), not_newer (a rollback), no_chain (no chain for the key, which is no current device either), device_revoked (a revoked device).",
			ConstLabels: prometheus.Labels{"reason": r.reason},
		}, func() float64 { return float64(r.read(stats().Prekeys)) }))
	}
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kez_sig_link_requests_stored_total",
			Help: "Device link requests stored (POST /v1/links answered 201).",
		}, func() float64 { return float64(stats().LinkRequests.Stored) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "kez_sig_link_requests_swept_total",
			Help: "Expired device link requests deleted by the sweeper (a JetStream store drops them by itself).",
		}, func() float64 { return float64(sw.swept.Load()) }),
	)
	for _, r := range []struct {
		reason string
		read   func(sigchain.LinkRequestStats) uint64
	}{
		{"malformed", func(s sigchain.LinkRequestStats) uint64 { return s.Malformed }},
		{"invalid", func(s sigchain.LinkRequestStats) uint64 { return s.Invalid }},
		{"expired", func(s sigchain.LinkRequestStats) uint64 { return s.Expired }},
		{"device_known", func(s sigchain.LinkRequestStats) uint64 { return s.DeviceKnown }},
		{"full", func(s sigchain.LinkRequestStats) uint64 { return s.Full }},
	} {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kez_sig_link_request_refusals_total",
			Help:        "Device link requests refused: malformed (too large, wrong content type), invalid (not a validly signed request), expired (expired or made in the future), device_known (the device is on a chain here), full (--max-pending-link-requests reached).",
			ConstLabels: prometheus.Labels{"reason": r.reason},
		}, func() float64 { return float64(r.read(stats().LinkRequests)) }))
	}
	reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "kez_sig_group_links_stored_total",
		Help: "Links of groups' membership chains stored (POST /v1/groups answered 201).",
	}, func() float64 { return float64(groups().Stored) }))
	for _, reason := range group.RefusalReasons {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "kez_sig_group_refusals_total",
			Help:        "Group links refused, by reason (docs/spec/group.md §7): malformed, invalid, not_allowed, not_member, too_many_members, device_unknown, device_not_allowed, not_local, clock, name_taken, conflict, no_group, groups_per_key, group_links, group_bytes.",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(groups().Refused[reason]) }))
	}
}
