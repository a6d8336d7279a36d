package ratelimit

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// FuzzClientIP feeds X-Forwarded-For values and peer addresses, as a
// client or a misconfigured proxy could send them: the key is always the
// peer's or that of an address in the header, never anything made up.
func FuzzClientIP(f *testing.F) {
	f.Add("10.0.0.1:5000", "198.51.100.1, 192.168.3.4")
	f.Add("10.0.0.1:5000", "1.2.3.4,,nonsense, [2001:db8::7]:443")
	f.Add("[::1]:1", "fe80::1%eth0, ::ffff:1.2.3.4")
	f.Add("203.0.113.7:5000", "198.51.100.1")
	f.Add("@", "")
	proxies, _ := ParsePrefixes("10.0.0.1, 192.168.0.0/16, ::1")
	c := ClientIP{TrustedProxies: proxies}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		a := c.Addr(r)
		key := c.KeyOf(a)
		if key == "" {
			t.Fatal("empty key")
		}
		peer, _ := parseHop(remote)
		if a == peer {
			return
		}
		if !peer.IsValid() || !c.trusted(peer) {
			t.Fatalf("an untrusted peer %q got the address %v from the header", remote, a)
		}
		found := false
		for _, h := range strings.Split(xff, ",") {
			if b, ok := parseHop(h); ok && b == a {
				found = true
			}
		}
		if !found {
			t.Fatalf("address %v is neither the peer nor in the header %q", a, xff)
		}
		if _, err := netip.ParsePrefix(key); err != nil && a.Is6() {
			t.Fatalf("IPv6 key %q is not a prefix", key)
		}
	})
}

// FuzzParseRetryAfter feeds Retry-After values a server could send: the
// wait is never negative nor over a week.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "Thu, 01 Jan 2026 12:05:00 GMT", "Monday, 02-Jan-06 15:04:05 MST", "Mon Jan  2 15:04:05 2006", "99999999999999999999", "-1", ""} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := ParseRetryAfter(v, now)
		if d < 0 || d > maxRetryAfter || !ok && d != 0 {
			t.Fatalf("ParseRetryAfter(%q) = %v, %v", v, d, ok)
		}
		resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {v}}}
		if e := FromResponse(resp, []byte(v), now); e == nil || e.RetryAfter < 0 || e.RetryAfter > maxRetryAfter {
			t.Fatalf("FromResponse: %+v", e)
		}
	})
}
