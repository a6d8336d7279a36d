package callout

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// lru is a map bounded to max entries that forgets the least recently used
// one to make room. Not safe for concurrent use.
type lru[K comparable, V any] struct {
	max   int
	items map[K]*list.Element
	order list.List // of *lruItem[K, V]; the front is the most recently used
}

type lruItem[K comparable, V any] struct {
	key K
	val V
}

func newLRU[K comparable, V any](max int) *lru[K, V] {
	return &lru[K, V]{max: max, items: make(map[K]*list.Element)}
}

// get returns k's value (marking it used), or nil.
func (c *lru[K, V]) get(k K) *V {
	e := c.items[k]
	if e == nil {
		return nil
	}
	c.order.MoveToFront(e)
	return &e.Value.(*lruItem[K, V]).val
}

// add returns k's value, adding a zero one (and forgetting the least
// recently used entry if full) when k is new; fresh reports which.
func (c *lru[K, V]) add(k K) (v *V, fresh bool) {
	if v := c.get(k); v != nil {
		return v, false
	}
	if c.order.Len() >= c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.items, old.Value.(*lruItem[K, V]).key)
	}
	it := &lruItem[K, V]{key: k}
	c.items[k] = c.order.PushFront(it)
	return &it.val, true
}

func (c *lru[K, V]) remove(k K) {
	if e := c.items[k]; e != nil {
		c.order.Remove(e)
		delete(c.items, k)
	}
}

func (c *lru[K, V]) len() int { return c.order.Len() }

// addrOf returns the address a client is tracked under: its IPv4 address,
// or the /64 prefix of its IPv6 address (one subscriber's usual share).
// Hosts that do not parse share the zero address.
func addrOf(host string) netip.Addr {
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.Addr()
	}
	return a
}

// addrState is what the tracker knows of one address.
type addrState struct {
	n    int       // failures within the window
	last time.Time // the latest failure

	period  uint64 // the summary period periodN counts in
	periodN int    // failures in that period
}

// knownKey is a key that logged in from an address.
type knownKey struct {
	key  kez.PublicKey
	addr netip.Addr
}

// budget is a token bucket: the known-lane logins a pair may still take.
type budget struct {
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

// tracker keeps the per-address failures (backoff, the suspect lane) and
// the key and address pairs that logged in before (the known lane), each
// bounded. It is safe for concurrent use.
type tracker struct {
	lim LoginLimits

	mu    sync.Mutex
	addrs *lru[netip.Addr, addrState]
	known *lru[knownKey, budget]

	// The current summary period.
	period      uint64
	periodAddrs int        // addresses that failed in it
	top         netip.Addr // the address that failed most in it
	topN        int
}

func newTracker(lim LoginLimits) *tracker {
	return &tracker{lim: lim, addrs: newLRU[netip.Addr, addrState](lim.MaxAddresses), known: newLRU[knownKey, budget](lim.MaxKnown)}
}

// suspect reports whether addr failed BackoffAfter times or more within
// the window.
func (t *tracker) suspect(addr netip.Addr, now time.Time) bool {
	if !t.lim.tracking() || !addr.IsValid() {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.addrs.get(addr)
	return st != nil && st.n >= t.lim.BackoffAfter && now.Sub(st.last) <= t.lim.BackoffWindow
}

// fail records a failure of addr and returns its failures within the
// window, this one included. A request without a client address (never
// one from nats-server for a client) is not tracked.
func (t *tracker) fail(addr netip.Addr, now time.Time) int {
	if !t.lim.tracking() || !addr.IsValid() {
		return 1
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st, _ := t.addrs.add(addr)
	if now.Sub(st.last) > t.lim.BackoffWindow {
		st.n = 0
	}
	st.n++
	st.last = now
	if st.period != t.period || st.periodN == 0 {
		st.period, st.periodN = t.period, 0
		t.periodAddrs++
	}
	st.periodN++
	if st.periodN > t.topN {
		t.top, t.topN = addr, st.periodN
	}
	return st.n
}

// takeKnown reports whether key logged in from addr before and may take
// the known lane now, spending one login of its budget if so.
func (t *tracker) takeKnown(key kez.PublicKey, addr netip.Addr, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	b := t.known.get(knownKey{key, addr})
	if b == nil {
		return false
	}
	b.refill(t.lim, now)
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// granted remembers that key logged in from addr.
func (t *tracker) granted(key kez.PublicKey, addr netip.Addr, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if b, fresh := t.known.add(knownKey{key, addr}); fresh {
		*b = budget{tokens: float64(t.lim.KnownBurst), at: now}
	}
}

// denied forgets that key logged in from addr: it may not any more.
func (t *tracker) denied(key kez.PublicKey, addr netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.known.remove(knownKey{key, addr})
}

func (b *budget) refill(lim LoginLimits, now time.Time) {
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(float64(lim.KnownBurst), b.tokens+float64(d)/float64(lim.KnownEvery))
	}
	b.at = now
}

// addresses returns how many addresses and pairs are tracked.
func (t *tracker) sizes() (addrs, known int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addrs.len(), t.known.len()
}

// endPeriod returns the failing addresses of the summary period that ends
// and the one that failed most (with its count), and starts the next.
func (t *tracker) endPeriod() (addrs int, top netip.Addr, topN int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	addrs, top, topN = t.periodAddrs, t.top, t.topN
	t.period++
	t.periodAddrs, t.top, t.topN = 0, netip.Addr{}, 0
	return addrs, top, topN
}
