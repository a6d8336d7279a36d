package handles

import (
	"errors"
	"net/http"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
)

// Limits are the registry's abuse limits (docs/operators.md, "Limits").
// Zero fields take the value of [DefaultLimits]; [ratelimit.Unlimited]
// turns one off ([NoLimits] turns all off, for tests and benchmarks).
type Limits struct {
	// ClaimsPerIP bounds the claims (POST /v1/handles) one client
	// address sends, whatever becomes of them.
	ClaimsPerIP ratelimit.Limit
	// ClaimsPerKey bounds the claims signed by one key. A claim counts
	// once its signature verifies, so no one but the key's holder can
	// use up its bucket.
	ClaimsPerKey ratelimit.Limit
	// ReadsPerIP bounds the lookups and WebFinger queries of one client
	// address (and the chat-server's /v1/info, and device lookups).
	ReadsPerIP ratelimit.Limit
	// DevicesPerIP bounds the device links (POST /v1/devices) one client
	// address sends, whatever becomes of them.
	DevicesPerIP ratelimit.Limit
	// DevicesPerKey bounds the device links signed by one person's key,
	// counted once the signature verifies.
	DevicesPerKey ratelimit.Limit
	// ClientIP says how a request's client address is known: the TCP
	// peer, or X-Forwarded-For from trusted proxies only.
	ClientIP ratelimit.ClientIP
	// MaxTracked bounds the keys each limiter tracks (0:
	// [ratelimit.DefaultMaxKeys]).
	MaxTracked int
	// Now is the limiters' clock; nil means ServerConfig.Now.
	Now func() time.Time
}

// DefaultLimits are the limits of a server whose ServerConfig.Limits is
// zero: a handful of registrations per address and key per hour, and
// generous reads.
var DefaultLimits = Limits{
	ClaimsPerIP:  ratelimit.Limit{N: 10, Per: time.Hour},
	ClaimsPerKey: ratelimit.Limit{N: 10, Per: time.Hour},
	ReadsPerIP:   ratelimit.Limit{N: 1200, Per: time.Minute},
	// A person links a handful of devices in a lifetime; a retry loop
	// gets a few dozen tries.
	DevicesPerIP:  ratelimit.Limit{N: 30, Per: time.Hour},
	DevicesPerKey: ratelimit.Limit{N: 30, Per: time.Hour},
}

// NoLimits returns Limits with every rate off.
func NoLimits() Limits {
	u := ratelimit.Unlimited
	return Limits{ClaimsPerIP: u, ClaimsPerKey: u, ReadsPerIP: u, DevicesPerIP: u, DevicesPerKey: u}
}

// ErrRateLimited reports a request a chat-server or sig-server refused
// with 429 because the client's address or key sent too many. Errors
// matching it are a *[RateLimitedError] with the server's Retry-After.
var ErrRateLimited = ratelimit.ErrLimited

// RateLimitedError is a 429 answer: wait RetryAfter, then try again.
type RateLimitedError = ratelimit.Error

// limiters are a Server's rate limits.
type limiters struct {
	ip                          ratelimit.ClientIP
	claimsPerIP, claimsPerKey   *ratelimit.Limiter
	readsPerIP                  *ratelimit.Limiter
	devicesPerIP, devicesPerKey *ratelimit.Limiter
}

func newLimiters(l Limits, now func() time.Time) *limiters {
	d := DefaultLimits
	if l.Now != nil {
		now = l.Now
	}
	limiter := func(lim, def ratelimit.Limit, endpoint, reason string) *ratelimit.Limiter {
		return ratelimit.New(lim.Or(def), ratelimit.Options{Endpoint: endpoint, Reason: reason, MaxKeys: l.MaxTracked, Now: now})
	}
	return &limiters{
		ip:            l.ClientIP,
		claimsPerIP:   limiter(l.ClaimsPerIP, d.ClaimsPerIP, "claim", "ip"),
		claimsPerKey:  limiter(l.ClaimsPerKey, d.ClaimsPerKey, "claim", "key"),
		readsPerIP:    limiter(l.ReadsPerIP, d.ReadsPerIP, "read", "ip"),
		devicesPerIP:  limiter(l.DevicesPerIP, d.DevicesPerIP, "device", "ip"),
		devicesPerKey: limiter(l.DevicesPerKey, d.DevicesPerKey, "device", "key"),
	}
}

// limitedError is what a limiter's refusal becomes inside the server.
func limitedError(l *ratelimit.Limiter, key, msg string) error {
	if ok, wait := l.Allow(key); !ok {
		return &ratelimit.Error{RetryAfter: wait, Message: msg}
	}
	return nil
}

// readLimited answers 429 when r's address has used up its reads.
func (s *Server) readLimited(w http.ResponseWriter, r *http.Request) bool {
	if err := limitedError(s.limits.readsPerIP, s.limits.ip.Key(r), "too many lookups from your address; wait and try again"); err != nil {
		refuse(w, err)
		return true
	}
	return false
}

// refuse answers a *ratelimit.Error with 429 and Retry-After.
func refuse(w http.ResponseWriter, err error) {
	var e *ratelimit.Error
	errors.As(err, &e)
	ratelimit.Refuse(w, e.RetryAfter, e.Message)
}

// LimitReads wraps h in the server's per-address read limit (Limits.
// ReadsPerIP), for other read-only routes served next to the registry
// (the chat-server's /v1/info).
func (s *Server) LimitReads(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.readLimited(w, r) {
			h.ServeHTTP(w, r)
		}
	})
}

// Limits returns the rate limits in force, defaults filled in.
func (s *Server) Limits() Limits {
	return Limits{
		ClaimsPerIP:   s.limits.claimsPerIP.Limit(),
		ClaimsPerKey:  s.limits.claimsPerKey.Limit(),
		ReadsPerIP:    s.limits.readsPerIP.Limit(),
		DevicesPerIP:  s.limits.devicesPerIP.Limit(),
		DevicesPerKey: s.limits.devicesPerKey.Limit(),
		ClientIP:      s.limits.ip,
		MaxTracked:    s.cfg.Limits.MaxTracked,
		Now:           s.cfg.Limits.Now,
	}
}

// LimitStats returns the counters of the server's rate limits, for
// metrics: endpoints "claim" and "device" with reason "ip" and "key",
// endpoint "read" with reason "ip".
func (s *Server) LimitStats() []ratelimit.Stats {
	return []ratelimit.Stats{s.limits.claimsPerIP.Stats(), s.limits.claimsPerKey.Stats(), s.limits.readsPerIP.Stats(),
		s.limits.devicesPerIP.Stats(), s.limits.devicesPerKey.Stats()}
}
