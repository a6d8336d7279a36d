package chatserver

import (
	"math"
	"sync"
	"time"
)

// MailLimits are what the gate lets one user do with the shared inbox
// stream. Each rate is a token bucket: Rate per second on average, up to
// Burst at once. Zero fields take the defaults below; a negative Rate
// turns that bucket off (benchmarks; never in production).
//
// The stream adds one limit of its own: one sender holds at most
// callout.InboxConfig.MaxMsgsPerSubject stored messages in one
// recipient's inbox. What a recipient has read counts until the gate
// removes it (the RemoveRead fields).
type MailLimits struct {
	// SenderRate and SenderBurst bound the messages one user sends, to
	// anyone, refused or not. Defaults 50/s and 500.
	SenderRate  float64
	SenderBurst float64
	// SenderCopyRate and SenderCopyBurst bound the copies one user has
	// stored: a send is one copy, a multi-recipient send one per
	// recipient device (and one message of the bucket above). Defaults
	// 2,000/s and 20,000.
	SenderCopyRate  float64
	SenderCopyBurst float64
	// SenderBytesRate and SenderBytesBurst bound the bytes one user sends,
	// a multi-recipient send counting its payload once per recipient.
	// Defaults 2 MiB/s and 32 MiB.
	SenderBytesRate  float64
	SenderBytesBurst float64
	// RecipientRate and RecipientBurst bound the messages one sender
	// stores for one recipient. Each sender has its own bucket per
	// recipient, so that senders flooding someone cannot use up what
	// others may send them. Defaults 20/s and 200.
	RecipientRate  float64
	RecipientBurst float64
	// RecipientBytesRate and RecipientBytesBurst bound their bytes.
	// Defaults 1 MiB/s and 16 MiB.
	RecipientBytesRate  float64
	RecipientBytesBurst float64
	// SenderUnread bounds the messages one sender has waiting unread in
	// all inboxes together; the gate counts them in the stream when a
	// sender comes near it (and at most once a second while over it).
	// Default 2,000; -1 turns it off.
	SenderUnread int
	// APIRate and APIBurst bound one user's consumer calls (pulls and
	// consumer inspections). Defaults 100/s and 1,000.
	APIRate  float64
	APIBurst float64
	// AckRate and AckBurst bound one user's acknowledgements (lines of
	// its batches to the gate, kez.v1.ack.<key>, valid or not): the lines
	// over the bucket are dropped, and JetStream delivers those messages
	// again after the consumer's AckWait. A user acknowledges at most what
	// was delivered to it, so the defaults are generous: 2,000/s and
	// 10,000.
	AckRate  float64
	AckBurst float64
	// CopiesInFlight bounds the copies of multi-recipient sends the gate
	// has sent to the stream without its answer yet, for all users
	// together: past it the gate takes no more multi-recipient sends
	// until answers come (each of them waits; one-to-one sends are not
	// held up). Default 4,096.
	CopiesInFlight int
	// MaxTracked bounds how many users' buckets and recipient look-ups
	// the gate keeps; the oldest are forgotten first. Default 100,000.
	MaxTracked int
	// KnownTTL is how long the gate trusts a look-up of a recipient in the
	// registry (a refusal is trusted for a tenth of it). Default 1 minute.
	KnownTTL time.Duration

	// The gate removes read mail from the stream: once a user has
	// acknowledged RemoveReadAfter messages (default 256), or at the
	// latest RemoveReadEvery after an acknowledgement (default 10 s), it
	// purges that user's inbox up to its consumer's acknowledgement floor.
	// RemoveReadRate bounds these removals for all users together (each
	// costs two JetStream API requests); default 200/s, -1 no bound.
	RemoveReadAfter int
	RemoveReadEvery time.Duration
	RemoveReadRate  float64
}

// DefaultMailLimits are the limits a zero [MailLimits] gets.
var DefaultMailLimits = MailLimits{
	SenderRate: 50, SenderBurst: 500,
	SenderCopyRate: 2000, SenderCopyBurst: 20_000,
	SenderBytesRate: 2 << 20, SenderBytesBurst: 32 << 20,
	RecipientRate: 20, RecipientBurst: 200,
	RecipientBytesRate: 1 << 20, RecipientBytesBurst: 16 << 20,
	APIRate: 100, APIBurst: 1000,
	AckRate: 2000, AckBurst: 10_000,
	SenderUnread:   2000,
	CopiesInFlight: 4096,
	MaxTracked:     100_000,
	KnownTTL:       time.Minute,

	RemoveReadAfter: 256,
	RemoveReadEvery: 10 * time.Second,
	RemoveReadRate:  200,
}

// NoMailLimits turns every rate limit of the gate off (benchmarks only).
var NoMailLimits = MailLimits{
	SenderRate: -1, SenderCopyRate: -1, SenderBytesRate: -1, RecipientRate: -1, RecipientBytesRate: -1, APIRate: -1, AckRate: -1, SenderUnread: -1,
	RemoveReadRate: -1,
}

func (l MailLimits) withDefaults() MailLimits {
	d := DefaultMailLimits
	pick := func(v *float64, def float64) {
		if *v == 0 {
			*v = def
		}
	}
	pick(&l.SenderRate, d.SenderRate)
	pick(&l.SenderBurst, d.SenderBurst)
	pick(&l.SenderCopyRate, d.SenderCopyRate)
	pick(&l.SenderCopyBurst, d.SenderCopyBurst)
	pick(&l.SenderBytesRate, d.SenderBytesRate)
	pick(&l.SenderBytesBurst, d.SenderBytesBurst)
	pick(&l.RecipientRate, d.RecipientRate)
	pick(&l.RecipientBurst, d.RecipientBurst)
	pick(&l.RecipientBytesRate, d.RecipientBytesRate)
	pick(&l.RecipientBytesBurst, d.RecipientBytesBurst)
	pick(&l.APIRate, d.APIRate)
	pick(&l.APIBurst, d.APIBurst)
	pick(&l.AckRate, d.AckRate)
	pick(&l.AckBurst, d.AckBurst)
	if l.SenderUnread == 0 {
		l.SenderUnread = d.SenderUnread
	}
	if l.CopiesInFlight <= 0 {
		l.CopiesInFlight = d.CopiesInFlight
	}
	if l.MaxTracked <= 0 {
		l.MaxTracked = d.MaxTracked
	}
	if l.KnownTTL <= 0 {
		l.KnownTTL = d.KnownTTL
	}
	if l.RemoveReadAfter <= 0 {
		l.RemoveReadAfter = d.RemoveReadAfter
	}
	if l.RemoveReadEvery <= 0 {
		l.RemoveReadEvery = d.RemoveReadEvery
	}
	pick(&l.RemoveReadRate, d.RemoveReadRate)
	return l
}

// bucket is a token bucket; rate < 0 means unlimited.
type bucket struct {
	tokens float64
	last   time.Time
}

// take removes n tokens from b if it holds them, refilling it at rate per
// second up to burst first.
func (b *bucket) take(now time.Time, rate, burst, n float64) bool {
	if rate < 0 {
		return true
	}
	if b.last.IsZero() {
		b.tokens = burst
	} else if dt := now.Sub(b.last).Seconds(); dt > 0 {
		b.tokens = math.Min(burst, b.tokens+dt*rate)
	}
	b.last = now
	if b.tokens < n {
		return false
	}
	b.tokens -= n
	return true
}

// takeUpTo removes up to n tokens from b, refilling it first as take
// does, and returns how many whole tokens it removed (n when rate < 0).
func (b *bucket) takeUpTo(now time.Time, rate, burst float64, n int) int {
	if rate < 0 {
		return n
	}
	if b.take(now, rate, burst, float64(n)) {
		return n
	}
	k := int(b.tokens) // take refilled b and found fewer than n
	b.tokens -= float64(k)
	return k
}

// userBuckets are one user's buckets, as sender, API caller and
// acknowledger, and the count of its unread messages.
type userBuckets struct {
	sendMsgs, sendCopies, sendBytes, api, acks bucket
	unread                                     int       // as last counted, plus what was stored since
	unreadAt                                   time.Time // when last counted; zero: never
	checked                                    bool      // the key's text form was checked
	pulledAt                                   time.Time // the last pull or consumer request of this device forwarded; zero: none
}

// pairBuckets are one sender's buckets for one recipient.
type pairBuckets struct {
	msgs, bytes bucket
}

// tracker holds per-user state, at most max entries (the least recently
// seen are forgotten first, in batches).
type tracker[V any] struct {
	mu  sync.Mutex
	max int
	m   map[string]*tracked[V]
}

type tracked[V any] struct {
	v    V
	seen time.Time
}

func newTracker[V any](max int) *tracker[V] {
	return &tracker[V]{max: max, m: make(map[string]*tracked[V])}
}

// with calls f with the entry of key (made if missing) under the lock.
func (t *tracker[V]) with(key string, now time.Time, f func(v *V)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[key]
	if e == nil {
		if len(t.m) >= t.max {
			t.evict()
		}
		e = &tracked[V]{}
		t.m[key] = e
	}
	e.seen = now
	f(&e.v)
}

// peek calls f with the entry of key, if there is one, under the lock,
// without making it or counting it as seen.
func (t *tracker[V]) peek(key string, f func(v *V)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.m[key]; e != nil {
		f(&e.v)
	}
}

// evict forgets the least recently seen tenth of the entries. Called
// with t.mu held.
func (t *tracker[V]) evict() {
	n := max(1, len(t.m)/10)
	times := make([]time.Time, 0, len(t.m))
	for _, e := range t.m {
		times = append(times, e.seen)
	}
	cut := nthSmallest(times, n)
	for k, e := range t.m {
		if n == 0 {
			break
		}
		if !e.seen.After(cut) {
			delete(t.m, k)
			n--
		}
	}
}

// nthSmallest returns the n-th smallest time of ts (1-based), reordering ts.
func nthSmallest(ts []time.Time, n int) time.Time {
	lo, hi := 0, len(ts)-1
	k := n - 1
	for lo < hi {
		p := ts[(lo+hi)/2]
		i, j := lo, hi
		for i <= j {
			for ts[i].Before(p) {
				i++
			}
			for ts[j].After(p) {
				j--
			}
			if i <= j {
				ts[i], ts[j] = ts[j], ts[i]
				i++
				j--
			}
		}
		switch {
		case k <= j:
			hi = j
		case k >= i:
			lo = i
		default:
			return ts[k]
		}
	}
	return ts[k]
}

// len returns how many entries t holds.
func (t *tracker[V]) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// clear forgets every entry.
func (t *tracker[V]) clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.m)
}
