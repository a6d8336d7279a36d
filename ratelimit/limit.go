// Package ratelimit holds the abuse limits of KEZ's HTTP servers (the
// sig-server's chain API and the chat-server's handle registry): token
// buckets keyed by client address or by key, in a table of bounded size;
// the client address a server should trust ([ClientIP]); the 429 answer
// with Retry-After ([Refuse]); and, for clients, the typed error such an
// answer becomes ([Error], [ErrLimited]).
//
//	claims := ratelimit.New(ratelimit.Limit{N: 10, Per: time.Hour}, ratelimit.Options{Endpoint: "claim", Reason: "ip"})
//	if ok, wait := claims.Allow(ip.Key(r)); !ok {
//		ratelimit.Refuse(w, wait, "too many handle claims from your address")
//		return
//	}
//
// It has no dependencies beyond the standard library and the module's own
// internal packages, so the SDK packages (sigchain, handles) use it.
package ratelimit

import (
	"container/list"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Limit is a token bucket: N requests at once, refilled at N per Per (one
// every Per/N). The zero value means "the default" to the configurations
// that hold a Limit; [Unlimited] turns a limit off.
type Limit struct {
	N   int
	Per time.Duration
}

// Unlimited is a Limit that allows everything.
var Unlimited = Limit{N: -1}

// IsZero reports whether l is the zero value (the default).
func (l Limit) IsZero() bool { return l == Limit{} }

// Off reports whether l allows everything ([Unlimited], or a Limit with
// no period).
func (l Limit) Off() bool { return l.N < 0 || l.N > 0 && l.Per <= 0 }

// Or returns l, or def if l is the zero value.
func (l Limit) Or(def Limit) Limit {
	if l.IsZero() {
		return def
	}
	return l
}

// String formats l the way [ParseLimit] reads it: "10/1h", "off".
func (l Limit) String() string {
	if l.Off() {
		return "off"
	}
	return strconv.Itoa(l.N) + "/" + shortDuration(l.Per)
}

// shortDuration writes d without the zero units time.Duration.String adds
// ("1h" rather than "1h0m0s").
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// ErrBadLimit reports a limit [ParseLimit] cannot read.
var ErrBadLimit = errors.New("ratelimit: not a limit")

// ParseLimit reads a limit as operators write it: "N/PERIOD" with a Go
// duration or a bare unit ("10/1h", "600/h", "1200/1m", "5/30s"), or
// "off" (also "0", "unlimited") for [Unlimited]. N is also the burst.
func ParseLimit(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "off", "0", "unlimited", "none":
		return Unlimited, nil
	}
	num, per, ok := strings.Cut(s, "/")
	if !ok {
		return Limit{}, fmt.Errorf("%w: %q: want N/PERIOD (e.g. 10/1h) or off", ErrBadLimit, s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 1 {
		return Limit{}, fmt.Errorf("%w: %q: the count must be a whole number of at least 1", ErrBadLimit, s)
	}
	per = strings.TrimSpace(per)
	if per != "" && (per[0] < '0' || per[0] > '9') {
		per = "1" + per // "h" → "1h"
	}
	d, err := time.ParseDuration(per)
	if err != nil || d <= 0 {
		return Limit{}, fmt.Errorf("%w: %q: the period must be a positive duration such as 1h, 10m or 30s", ErrBadLimit, s)
	}
	return Limit{N: n, Per: d}, nil
}

// DefaultMaxKeys is how many keys a [Limiter] tracks at most unless
// [Options].MaxKeys says otherwise: about 200 bytes each.
const DefaultMaxKeys = 50_000

// Options configure [New].
type Options struct {
	// Endpoint and Reason name the limiter in metrics and logs, e.g.
	// "claim" and "ip".
	Endpoint, Reason string
	// MaxKeys bounds the keys tracked at once (0: [DefaultMaxKeys]). When
	// the table is full, the least recently used key is forgotten: it
	// starts again with a full bucket. Keys whose bucket has refilled are
	// forgotten first, which loses nothing.
	MaxKeys int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter is one [Limit] applied to each key separately (a client
// address, a user key), with a bounded table of buckets. A nil *Limiter,
// or one with an [Limit.Off] limit, allows everything. It is safe for
// concurrent use.
type Limiter struct {
	limit    Limit
	max      int
	now      func() time.Time
	endpoint string
	reason   string

	mu      sync.Mutex
	buckets map[string]*list.Element // of *bucket
	lru     list.List                // front: most recently used
	limited uint64
	evicted uint64
}

type bucket struct {
	key    string
	tokens float64
	last   time.Time
}

// New returns a Limiter applying l to each key.
func New(l Limit, o Options) *Limiter {
	if o.MaxKeys <= 0 {
		o.MaxKeys = DefaultMaxKeys
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Limiter{limit: l, max: o.MaxKeys, now: o.Now, endpoint: o.Endpoint, reason: o.Reason, buckets: map[string]*list.Element{}}
}

// Limit returns the limit the Limiter applies.
func (l *Limiter) Limit() Limit {
	if l == nil {
		return Unlimited
	}
	return l.limit
}

// refill brings b up to now and reports whether it is full.
func (l *Limiter) refill(b *bucket, now time.Time) bool {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(l.limit.N), b.tokens+d.Seconds()*float64(l.limit.N)/l.limit.Per.Seconds())
		b.last = now
	}
	return b.tokens >= float64(l.limit.N)
}

// Allow takes one token from key's bucket. It returns true if there was
// one; otherwise false and how long until there is.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	if l == nil || l.limit.Off() {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	// Forget a few buckets that have refilled: a full bucket is the same
	// as none, so the table holds only keys that were active lately.
	for range 2 {
		e := l.lru.Back()
		if e == nil || !l.refill(e.Value.(*bucket), now) {
			break
		}
		l.remove(e)
	}
	e := l.buckets[key]
	if e == nil {
		if len(l.buckets) >= l.max {
			l.remove(l.lru.Back())
			l.evicted++
		}
		e = l.lru.PushFront(&bucket{key: key, tokens: float64(l.limit.N), last: now})
		l.buckets[key] = e
	} else {
		l.lru.MoveToFront(e)
	}
	b := e.Value.(*bucket)
	l.refill(b, now)
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	l.limited++
	wait := (1 - b.tokens) * l.limit.Per.Seconds() / float64(l.limit.N)
	return false, time.Duration(math.Ceil(wait * float64(time.Second)))
}

// Refund gives back the token an allowed request of key took, for a
// request that turned out not to count (an append that lost a race to
// another and stored nothing). The bucket never holds more than N.
func (l *Limiter) Refund(key string) {
	if l == nil || l.limit.Off() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e := l.buckets[key]; e != nil {
		b := e.Value.(*bucket)
		b.tokens = math.Min(b.tokens+1, float64(l.limit.N))
	}
}

func (l *Limiter) remove(e *list.Element) {
	l.lru.Remove(e)
	delete(l.buckets, e.Value.(*bucket).key)
}

// Stats are a Limiter's counters, for metrics.
type Stats struct {
	Endpoint, Reason string
	// Limited counts the requests refused.
	Limited uint64
	// Evicted counts the keys forgotten because the table was full
	// while their bucket was not.
	Evicted uint64
	// Tracked is the number of keys in the table now.
	Tracked int
}

// Stats returns the Limiter's counters.
func (l *Limiter) Stats() Stats {
	if l == nil {
		return Stats{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Endpoint: l.endpoint, Reason: l.reason, Limited: l.limited, Evicted: l.evicted, Tracked: len(l.buckets)}
}
