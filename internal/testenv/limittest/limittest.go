// Package limittest helps the tests of the HTTP servers' rate limits: a
// fake clock to hand the limiters, and HTTP clients that speak for a
// given client address through X-Forwarded-For (to a server that trusts
// loopback as its proxy, see [Loopback]). For tests only.
package limittest

import (
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// Clock is a fake clock; the zero value starts at the current time on
// first use. It is safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.t.IsZero() {
		c.t = time.Now()
	}
	return c.t
}

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) {
	c.Now()
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Loopback is the trusted proxies of a server that tests reach through
// [From]: 127.0.0.0/8 and ::1.
func Loopback() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
}

// forwarded adds X-Forwarded-For: ip to every request.
type forwarded struct{ ip string }

func (f forwarded) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("X-Forwarded-For", f.ip)
	return http.DefaultTransport.RoundTrip(r)
}

// From returns an HTTP client whose requests say, in X-Forwarded-For,
// that they come from ip.
func From(ip string) *http.Client { return &http.Client{Transport: forwarded{ip}} }
