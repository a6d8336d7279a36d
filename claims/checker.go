package claims

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nbd-wtf/go-nostr"
)

// Defaults of a [Checker].
const (
	// DefaultTTL is how long a verified result is reused.
	DefaultTTL = time.Hour
	// DefaultFailedTTL is how long a failed result is reused.
	DefaultFailedTTL = 10 * time.Minute
	// MaxCacheEntries bounds a Checker's cache; the oldest result goes
	// first.
	MaxCacheEntries = 10_000
	// MaxConcurrentChecks bounds the live checks one [Checker.Check] runs
	// at once.
	MaxConcurrentChecks = 4
	// DNSTimeout bounds a TXT lookup (UDP and, on truncation, TCP).
	DNSTimeout = 5 * time.Second
	// HTTPSTimeout bounds the request for a claim's file.
	HTTPSTimeout = 10 * time.Second
	// MaxHTTPSBody bounds the claim file read from an https site.
	MaxHTTPSBody = 64 << 10
	// WellKnownPath is where an https site publishes its statements.
	WellKnownPath = "/.well-known/kez-claim"
)

// Status is the outcome of checking a claim.
type Status int

const (
	// Unchecked: not checked (yet), or the check did not finish.
	Unchecked Status = iota
	// Verified: the statement is valid and published where the claim says.
	Verified
	// Failed: the claim does not check out; Result.Err says why.
	Failed
)

// String returns "unchecked", "verified" or "failed".
func (s Status) String() string {
	switch s {
	case Verified:
		return "verified"
	case Failed:
		return "failed"
	default:
		return "unchecked"
	}
}

// Result is the check of one claim.
type Result struct {
	Claim     sigchain.Claim
	Status    Status
	Err       error     // why it failed (wraps one of the package's errors); nil otherwise
	CheckedAt time.Time // zero when unchecked
}

// Checker checks the claims of verified chains (docs/spec/claims.md §5)
// and caches the results, keyed by chain key and claim ID. Set the fields
// before the first call and do not change them after; a Checker is then
// safe for concurrent use. Use it by pointer. The zero value works.
type Checker struct {
	// DNSServer is the resolver asked for TXT records, host:port; empty
	// means the first nameserver of /etc/resolv.conf.
	DNSServer string
	// HTTPClient, if set, fetches every https claim's file (its redirects
	// are refused whatever its CheckRedirect). It should refuse addresses
	// that are not public, as the default does. nil: a client that dials
	// only public addresses, except for the hosts of LocalDomains.
	HTTPClient *http.Client
	// LocalDomains are hosts (or host:port) the user or operator marks
	// local, as in handles.Resolver: an https identity may be an IP
	// address or carry a port, and may be at a private or loopback
	// address, only if it is one of them.
	LocalDomains []string
	// TTL is how long a verified result is reused (0: [DefaultTTL]),
	// FailedTTL a failed one (0: [DefaultFailedTTL]).
	TTL, FailedTTL time.Duration
	// Clock is the cache's clock; nil means time.Now.
	Clock func() time.Time
	// Logger receives a debug line per check; nil means slog.Default().
	Logger *slog.Logger

	// maxEntries bounds the cache (0: MaxCacheEntries); tests lower it.
	maxEntries int

	mu    sync.Mutex
	cache map[cacheKey]*list.Element // of *cacheEntry
	order list.List                  // oldest first

	dnsOnce   sync.Once
	dnsServer string
	dnsErr    error
	httpOnce  sync.Once
	local     *http.Client
	remote    *http.Client
}

type cacheKey struct {
	key kez.PublicKey
	id  cid.Cid
}

type cacheEntry struct {
	k       cacheKey
	r       Result
	expires time.Time
}

func (c *Checker) now() time.Time {
	if c.Clock != nil {
		return c.Clock()
	}
	return time.Now()
}

func (c *Checker) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

// Cached returns a result per active claim of st, oldest claim first,
// without contacting anything: the cached result if it has not expired,
// else Unchecked.
func (c *Checker) Cached(st *sigchain.State) []Result {
	cl := st.Claims()
	out := make([]Result, len(cl))
	now := c.now()
	for i, x := range cl {
		out[i] = Result{Claim: x}
		if r, ok := c.lookup(st.Key(), x, now); ok {
			out[i] = r
		}
	}
	return out
}

// Check returns a result per active claim of st (a verified chain),
// oldest claim first: cached results that have not expired, and fresh
// checks of the others, at most [MaxConcurrentChecks] at once. A check
// that ctx ends before it finishes gives Unchecked (and is not cached).
// A revoked claim is not in st, so it has no result.
func (c *Checker) Check(ctx context.Context, st *sigchain.State) []Result {
	cl := st.Claims()
	out := make([]Result, len(cl))
	now := c.now()
	sem := make(chan struct{}, MaxConcurrentChecks)
	var wg sync.WaitGroup
loop:
	for i, x := range cl {
		out[i] = Result{Claim: x}
		if r, ok := c.lookup(st.Key(), x, now); ok {
			out[i] = r
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			err := c.check(ctx, st.Key(), x)
			if err != nil && ctx.Err() != nil {
				return // unfinished: Unchecked
			}
			r := Result{Claim: x, Status: Verified, Err: err, CheckedAt: c.now()}
			if err != nil {
				r.Status = Failed
			}
			c.logger().Debug("claims: checked", "key", st.Key(), "service", x.Service, "identity", x.Identity,
				"status", r.Status.String(), "err", err)
			c.store(st.Key(), r)
			out[i] = r
		}()
	}
	wg.Wait()
	return out
}

// CheckClaim checks one claim of the chain of key now, without the cache:
// nil if it is verified, else why not.
func (c *Checker) CheckClaim(ctx context.Context, key kez.PublicKey, cl sigchain.Claim) error {
	return c.check(ctx, key, cl)
}

// check checks one claim: the statement, then where it is published.
func (c *Checker) check(ctx context.Context, key kez.PublicKey, cl sigchain.Claim) error {
	var (
		st  Statement
		ev  *nostr.Event
		err error
	)
	switch cl.Service {
	case ServiceDNS, ServiceHTTPS:
		st, err = ParseStatement(cl.Proof, cl.Service, cl.Identity)
	case ServiceNostr:
		if ev, err = ParseNostrEvent(cl.Proof); err == nil {
			st, err = ParseStatement(ev.Content, cl.Service, cl.Identity)
		}
	default:
		err = fmt.Errorf("%w: %q", ErrUnsupported, truncate(cl.Service, 64))
	}
	if err != nil {
		return err
	}
	if err := CheckPosition(st, key, cl); err != nil {
		return err
	}
	switch cl.Service {
	case ServiceDNS:
		return c.checkDNS(ctx, cl.Identity, st.Text())
	case ServiceHTTPS:
		return c.checkHTTPS(ctx, cl.Identity, st.Text())
	default:
		return CheckNostrEvent(ev, cl.Identity, st)
	}
}

// CheckPosition checks that st is the statement of claim cl of the chain
// of key, without looking where it is published: it names key (else
// [ErrWrongKey]) and cl's seqno and prev (else [ErrStale]), and its
// signature verifies over cl's service and identity (else
// [ErrBadSignature]).
func CheckPosition(st Statement, key kez.PublicKey, cl sigchain.Claim) error {
	switch {
	case st.Key != key:
		return fmt.Errorf("%w: it names %s, the chain is %s's", ErrWrongKey, st.Key, key)
	case st.Seqno != cl.Seqno || st.Prev != cl.Prev:
		return fmt.Errorf("%w: it is for seqno %d after %s, the claim is at seqno %d after %s",
			ErrStale, st.Seqno, st.Prev, cl.Seqno, cl.Prev)
	}
	st.Service, st.Identity = cl.Service, cl.Identity
	return st.Verify()
}

// lookup returns the cached result of claim cl of key if it has not
// expired at now.
func (c *Checker) lookup(key kez.PublicKey, cl sigchain.Claim, now time.Time) (Result, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.cache[cacheKey{key, cl.ID}]
	if !ok {
		return Result{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		return Result{}, false
	}
	return e.r, true
}

// store caches r, dropping the oldest entries past the bound.
func (c *Checker) store(key kez.PublicKey, r Result) {
	ttl := c.TTL
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if r.Status == Failed {
		if ttl = c.FailedTTL; ttl <= 0 {
			ttl = DefaultFailedTTL
		}
	}
	max := c.maxEntries
	if max <= 0 {
		max = MaxCacheEntries
	}
	k := cacheKey{key, r.Claim.ID}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cache == nil {
		c.cache = make(map[cacheKey]*list.Element)
	}
	if el, ok := c.cache[k]; ok {
		c.order.Remove(el)
	}
	c.cache[k] = c.order.PushBack(&cacheEntry{k: k, r: r, expires: r.CheckedAt.Add(ttl)})
	for c.order.Len() > max {
		el := c.order.Front()
		c.order.Remove(el)
		delete(c.cache, el.Value.(*cacheEntry).k)
	}
}
