package natsconn

import (
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go"
)

// DefaultBackoff is how long [Connect]'s clients wait between rounds of
// reconnection attempts: a random time up to 250 ms before the first round,
// the bound doubling each round up to 10 s. After a NATS server restarts,
// its clients come back spread over those windows instead of all at once.
var DefaultBackoff = Backoff{Min: 250 * time.Millisecond, Max: 10 * time.Second}

// Backoff is an exponential reconnect backoff with full jitter: before
// round n of reconnection attempts (n from 1; a round tries every server
// URL once) the client waits a uniformly random time in [0, min(Max,
// Min·2ⁿ⁻¹)). A random wait, not a fixed one, keeps many clients that
// lost the same server from reconnecting in lockstep.
type Backoff struct {
	// Min is the bound of the first wait, Max the bound of every wait.
	Min, Max time.Duration
	// Rand returns a random number in [0, n) for n > 0; nil means
	// math/rand/v2.Int64N. Tests give a seeded source.
	Rand func(n int64) int64
}

// Bound returns the upper bound of the wait before round attempt
// (attempt < 1 counts as 1): min(Max, Min·2^(attempt-1)), and at least
// one nanosecond.
func (b Backoff) Bound(attempt int) time.Duration {
	bound := max(b.Min, 1)
	for i := 1; i < attempt && bound < b.Max; i++ {
		bound *= 2
	}
	if b.Max > 0 && bound > b.Max {
		bound = b.Max
	}
	return bound
}

// Delay returns the wait before round attempt of reconnection attempts, a
// random time in [0, [Backoff.Bound](attempt)). It is a
// nats.ReconnectDelayHandler.
func (b Backoff) Delay(attempt int) time.Duration {
	rnd := b.Rand
	if rnd == nil {
		rnd = rand.Int64N
	}
	return time.Duration(rnd(int64(b.Bound(attempt))))
}

// Option returns a nats.Option that makes a connection wait as b says
// between rounds of reconnection attempts (nats.CustomReconnectDelay).
// Pass it to [Connect] to replace [DefaultBackoff].
func (b Backoff) Option() nats.Option { return nats.CustomReconnectDelay(b.Delay) }
