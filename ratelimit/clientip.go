package ratelimit

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ClientIP decides which address a request comes from, for per-address
// limits. By default it is the TCP peer (the request's RemoteAddr):
// X-Forwarded-For is read only when the peer is one of TrustedProxies,
// since anyone else can write any address there. The zero value trusts no
// proxy. It is safe for concurrent use.
type ClientIP struct {
	// TrustedProxies are the reverse proxies in front of the server. For
	// a request from one of them, the client is the right-most address
	// of X-Forwarded-For that is not itself a trusted proxy (each proxy
	// appends the address it received the request from). An entry that
	// is not an address ends the walk: the hop that wrote it is the
	// client.
	TrustedProxies []netip.Prefix
	// IPv6Prefix is how many leading bits of an IPv6 address make one
	// client (0: 64). One subscriber usually holds a whole /64, so keying
	// by the full address would let it take a fresh bucket per request.
	IPv6Prefix int
}

// maxForwardedHops bounds how far Addr walks X-Forwarded-For.
const maxForwardedHops = 32

// trusted reports whether a is one of the trusted proxies.
func (c *ClientIP) trusted(a netip.Addr) bool {
	for _, p := range c.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHop reads one X-Forwarded-For entry: an address, optionally with
// a port ("192.0.2.1:443", "[2001:db8::1]:443").
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().WithZone(""), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().WithZone(""), true
	}
	return netip.Addr{}, false
}

// Addr returns the client's address; invalid if the peer address cannot
// be read (then every such request shares one bucket).
func (c *ClientIP) Addr(r *http.Request) netip.Addr {
	peer, _ := parseHop(r.RemoteAddr)
	if !peer.IsValid() || !c.trusted(peer) {
		return peer
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0 && i >= len(hops)-maxForwardedHops; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			break
		}
		client = a
		if !c.trusted(a) {
			break
		}
	}
	return client
}

// Key returns the bucket key of r's client: the IPv4 address, or the
// IPv6 prefix (a /64 by default) in CIDR form.
func (c *ClientIP) Key(r *http.Request) string { return c.KeyOf(c.Addr(r)) }

// KeyOf returns the bucket key of address a (see [ClientIP.Key]).
func (c *ClientIP) KeyOf(a netip.Addr) string {
	if !a.IsValid() {
		return "unknown"
	}
	if a.Is4() {
		return a.String()
	}
	bits := c.IPv6Prefix
	if bits <= 0 || bits > 128 {
		bits = 64
	}
	p, _ := a.Prefix(bits)
	return p.String()
}

// ParsePrefixes reads a comma-separated list of addresses and CIDR
// prefixes ("10.0.0.1, 192.168.0.0/16, ::1"), e.g. a --trusted-proxies
// flag. An empty string is an empty list.
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if strings.Contains(f, "/") {
			p, err := netip.ParsePrefix(f)
			if err != nil {
				return nil, fmt.Errorf("ratelimit: %q is not an address or prefix: %w", f, err)
			}
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("ratelimit: %q is not an address or prefix: %w", f, err)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}
