package callout

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// summary is the state of the periodic INFO line that sums up the denials:
// each denial is logged at DEBUG only, so a flood cannot flood the log.
type summary struct {
	slow atomic.Uint64 // the subscription's dropped messages, last read

	mu        sync.Mutex
	errLogged bool  // a "could not decide" error was logged in this period
	last      Stats // the counters when the period began
}

// firstError reports whether this is the period's first "could not
// decide" error, which is logged at ERROR (the others at DEBUG).
func (p *summary) firstError() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := !p.errLogged
	p.errLogged = true
	return first
}

// summarize logs the summary every SummaryEvery, and once more when stop
// closes.
func (s *Service) summarize(stop <-chan struct{}) {
	defer s.wg.Done()
	t := time.NewTicker(s.lim.SummaryEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			s.logSummary()
			return
		case <-t.C:
			s.logSummary()
		}
	}
}

// logSummary logs what was refused since the last summary, if anything:
// one INFO line with the denials by cause, the backoff's and the queues'
// work, and the address that failed most.
func (s *Service) logSummary() {
	now := s.Stats()
	s.summary.mu.Lock()
	last := s.summary.last
	s.summary.last, s.summary.errLogged = now, false
	s.summary.mu.Unlock()
	addrs, top, topN := s.track.endPeriod()

	denied := now.Denied - last.Denied
	dropped := (now.DroppedFull - last.DroppedFull) + (now.DroppedExpired - last.DroppedExpired) + (now.DroppedSlow - last.DroppedSlow)
	if denied == 0 && dropped == 0 {
		return
	}
	attrs := []any{"denied", denied, "granted", now.Authorized - last.Authorized, "period", s.lim.SummaryEvery}
	for _, c := range DenyCodes {
		if n := now.DeniedBy[c] - last.DeniedBy[c]; n > 0 {
			attrs = append(attrs, string(c), n)
		}
	}
	attrs = append(attrs,
		"delayed", now.Delayed-last.Delayed, "unanswered", now.Unanswered-last.Unanswered,
		"dropped_queue_full", now.DroppedFull-last.DroppedFull, "dropped_expired", now.DroppedExpired-last.DroppedExpired,
		"dropped_slow_consumer", now.DroppedSlow-last.DroppedSlow)
	if s.lim.tracking() {
		attrs = append(attrs, "failing_addresses", addrs)
	}
	if topN > 0 {
		attrs = append(attrs, "top_address", top.String(), "top_address_failures", topN)
	}
	s.log.Log(nil, slog.LevelInfo, "logins refused", attrs...)
}
