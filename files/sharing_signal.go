package files

import "github.com/kez-lat/kez-chat/files/internal/signal"

// AnswerLimits bound the signalling work a serving device does for
// requests on its subject (docs/spec/signalling.md §7): over Rate/Burst,
// a request gets an unsigned cookie reply, and a request that carries
// its cookie is answered within its requester key's own
// KeyRate/KeyBurst. The zero value means the defaults: 50 answers/s,
// burst 100; 5/s, burst 10 per key; 4096 keys remembered.
type AnswerLimits struct {
	Rate     float64 // answers (and haves checked) per second without a cookie
	Burst    int     // answers in a burst without a cookie
	KeyRate  float64 // answers per second to one requester key's cookied requests
	KeyBurst int     // answers in a burst to one requester key's cookied requests
	MaxKeys  int     // requester keys whose budgets are kept, least recently used forgotten first
}

// SignallingStats count what a serving device did with the requests on
// its signalling subject (docs/spec/signalling.md §7).
type SignallingStats struct {
	Answered int64 // requests answered and haves checked
	Cookied  int64 // requests over the budget that got a cookie reply
	// Dropped: malformed, refused (another key, stale, a reply subject
	// outside the requester's inbox), a bad cookie, over a key's budget,
	// or a have over the budget.
	Dropped int64
}

func (l AnswerLimits) budget() signal.AnswerBudget {
	return signal.AnswerBudget{Rate: l.Rate, Burst: l.Burst, KeyRate: l.KeyRate, KeyBurst: l.KeyBurst, MaxKeys: l.MaxKeys}
}

func signallingStats(c *signal.AnswerCounters) SignallingStats {
	s := c.Stats()
	return SignallingStats{Answered: s.Answered, Cookied: s.Cookied, Dropped: s.Dropped}
}
