package signal

import (
	"container/list"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"golang.org/x/time/rate"
)

// Defaults of [AnswerBudget] (docs/spec/signalling.md §7).
const (
	DefaultAnswerRate  = 50   // answers per second to requests without a cookie
	DefaultAnswerBurst = 100  // answers in a burst to requests without a cookie
	DefaultKeyRate     = 5    // answers per second to one requester key's cookied requests
	DefaultKeyBurst    = 10   // answers in a burst to one requester key's cookied requests
	DefaultMaxKeys     = 4096 // requester keys whose budgets are remembered
)

// AnswerBudget bounds the signatures an owner makes (answers) and checks
// (haves) for requests on its subject. Zero fields mean the defaults.
type AnswerBudget struct {
	// Rate and Burst are the token bucket of answers to requests without
	// a cookie, and of haves checked; over it, a request gets a cookie
	// reply and a have is dropped.
	Rate  float64
	Burst int
	// KeyRate and KeyBurst are the token bucket of each requester key's
	// requests that carry a valid cookie; over it, they are dropped.
	KeyRate  float64
	KeyBurst int
	// MaxKeys bounds the requester keys whose buckets are kept; the least
	// recently used is forgotten first.
	MaxKeys int
}

func (b AnswerBudget) withDefaults() AnswerBudget {
	if b.Rate <= 0 {
		b.Rate = DefaultAnswerRate
	}
	if b.Burst <= 0 {
		b.Burst = DefaultAnswerBurst
	}
	if b.KeyRate <= 0 {
		b.KeyRate = DefaultKeyRate
	}
	if b.KeyBurst <= 0 {
		b.KeyBurst = DefaultKeyBurst
	}
	if b.MaxKeys <= 0 {
		b.MaxKeys = DefaultMaxKeys
	}
	return b
}

// AnswerStats counts what an owner did with the messages on its subject.
type AnswerStats struct {
	Answered int64 // requests answered (signed) and haves checked
	Cookied  int64 // requests over the budget that got a cookie reply
	// Dropped counts messages ignored: malformed, for another key, stale,
	// with a reply subject outside the requester's inbox, with a cookie
	// that is not valid, over the requester key's own budget, or haves
	// over the budget.
	Dropped int64
}

// AnswerCounters are an owner's live [AnswerStats], safe for concurrent
// use; the zero value is ready.
type AnswerCounters struct {
	answered, cookied, dropped atomic.Int64
}

// Stats returns the counts so far.
func (c *AnswerCounters) Stats() AnswerStats {
	return AnswerStats{Answered: c.answered.Load(), Cookied: c.cookied.Load(), Dropped: c.dropped.Load()}
}

// verdict is what an owner does with a request that passed its checks.
type verdict int

const (
	verdictAnswer verdict = iota
	verdictCookie
	verdictDrop
)

// gate applies an owner's [AnswerBudget] and cookies.
type gate struct {
	mu     sync.Mutex
	budget AnswerBudget
	global *rate.Limiter
	jar    *cookieJar
	keys   map[kez.PublicKey]*list.Element // of *keyBucket
	lru    *list.List                      // front: most recently used
	count  *AnswerCounters
}

type keyBucket struct {
	key kez.PublicKey
	lim *rate.Limiter
}

func newGate(b AnswerBudget, c *AnswerCounters, now time.Time) *gate {
	b = b.withDefaults()
	if c == nil {
		c = new(AnswerCounters)
	}
	g := &gate{budget: b, jar: newCookieJar(nil), keys: map[kez.PublicKey]*list.Element{}, lru: list.New(), count: c}
	g.global = rate.NewLimiter(rate.Limit(b.Rate), b.Burst)
	g.global.SetBurstAt(now, b.Burst) // start full at the owner's clock
	return g
}

// request decides for a request of kind from requester with nonce, that
// carried cookie (nil: none), at now. For verdictCookie it returns the
// cookie to send. It counts the verdict.
func (g *gate) request(requester kez.PublicKey, nonce [locateNonceLen]byte, kind byte, cookie []byte, now time.Time) (verdict, [CookieLen]byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if cookie != nil {
		if g.jar.valid(cookie, requester, nonce, kind, now) && g.keyLimiter(requester, now).AllowN(now, 1) {
			g.count.answered.Add(1)
			return verdictAnswer, [CookieLen]byte{}
		}
		g.count.dropped.Add(1)
		return verdictDrop, [CookieLen]byte{}
	}
	if g.global.AllowN(now, 1) {
		g.count.answered.Add(1)
		return verdictAnswer, [CookieLen]byte{}
	}
	c, err := g.jar.mint(requester, nonce, kind, now)
	if err != nil {
		g.count.dropped.Add(1)
		return verdictDrop, [CookieLen]byte{}
	}
	g.count.cookied.Add(1)
	return verdictCookie, c
}

// have reports whether a have may be checked at now (the global budget).
func (g *gate) have(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.global.AllowN(now, 1) {
		g.count.answered.Add(1)
		return true
	}
	g.count.dropped.Add(1)
	return false
}

// drop counts a message ignored before the budget.
func (g *gate) drop() { g.count.dropped.Add(1) }

// keyLimiter returns requester's bucket, making it (full) if new and
// forgetting the least recently used key beyond MaxKeys. g.mu is held.
func (g *gate) keyLimiter(requester kez.PublicKey, now time.Time) *rate.Limiter {
	if e, ok := g.keys[requester]; ok {
		g.lru.MoveToFront(e)
		return e.Value.(*keyBucket).lim
	}
	for g.lru.Len() >= g.budget.MaxKeys {
		old := g.lru.Back()
		delete(g.keys, old.Value.(*keyBucket).key)
		g.lru.Remove(old)
	}
	lim := rate.NewLimiter(rate.Limit(g.budget.KeyRate), g.budget.KeyBurst)
	lim.SetBurstAt(now, g.budget.KeyBurst)
	g.keys[requester] = g.lru.PushFront(&keyBucket{key: requester, lim: lim})
	return lim
}

// admit applies the budget to a request of kind m that passed the checks
// of §3 (so m.Reply is under requester's inbox): it reports whether to
// answer it; if not, it has sent a cookie reply to m.Reply, or dropped it.
func (g *gate) admit(m *nats.Msg, kind byte, owner, requester kez.PublicKey, nonce [locateNonceLen]byte, cookie []byte, now time.Time, log *slog.Logger) bool {
	v, c := g.request(requester, nonce, kind, cookie, now)
	switch v {
	case verdictAnswer:
		return true
	case verdictCookie:
		cr := CookieReply{Owner: owner, Requester: requester, Nonce: nonce, Time: now, Kind: kind, Cookie: c}
		b, err := cr.Marshal()
		if err == nil {
			err = m.Respond(b)
		}
		if err != nil {
			log.Warn("files: sending a cookie reply", "requester", requester, "err", err)
		}
	default:
		log.Debug("files: dropping a request with a bad cookie or over its key's budget", "requester", requester)
	}
	return false
}
