package ratelimit

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestClientIP(t *testing.T) {
	proxies, err := ParsePrefixes("10.0.0.1, 192.168.0.0/16, ::1")
	if err != nil {
		t.Fatal(err)
	}
	behind := ClientIP{TrustedProxies: proxies}
	for _, tc := range []struct {
		name   string
		c      ClientIP
		remote string
		xff    []string
		want   string
	}{
		{"no proxy: the peer", ClientIP{}, "203.0.113.7:5000", nil, "203.0.113.7"},
		{"no proxy trusted: a forged header is ignored", ClientIP{}, "203.0.113.7:5000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"untrusted peer with a proxy list: ignored", behind, "203.0.113.7:5000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"trusted proxy: its entry", behind, "10.0.0.1:5000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client forges the left part: the right-most untrusted wins", behind, "10.0.0.1:5000", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"two proxies", behind, "10.0.0.1:5000", []string{"198.51.100.1, 192.168.3.4"}, "198.51.100.1"},
		{"several headers", behind, "10.0.0.1:5000", []string{"1.2.3.4", "198.51.100.1, 192.168.3.4"}, "198.51.100.1"},
		{"garbage ends the walk at the hop that wrote it", behind, "10.0.0.1:5000", []string{"198.51.100.1, nonsense, 192.168.3.4"}, "192.168.3.4"},
		{"empty header", behind, "10.0.0.1:5000", []string{""}, "10.0.0.1"},
		{"all proxies: the left-most", behind, "10.0.0.1:5000", []string{"192.168.1.1, 192.168.3.4"}, "192.168.1.1"},
		{"entry with a port", behind, "10.0.0.1:5000", []string{"[2001:db8::7]:443"}, "2001:db8::/64"},
		{"IPv6 peer keyed by /64", ClientIP{}, "[2001:db8:1:2:3:4:5:6]:5000", nil, "2001:db8:1:2::/64"},
		{"IPv6 /48", ClientIP{IPv6Prefix: 48}, "[2001:db8:1:2:3:4:5:6]:5000", nil, "2001:db8:1::/48"},
		{"IPv4-mapped IPv6 is IPv4", ClientIP{}, "[::ffff:203.0.113.7]:5000", nil, "203.0.113.7"},
		{"trusted IPv6 loopback proxy", behind, "[::1]:5000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"unreadable peer", ClientIP{}, "@", nil, "unknown"},
	} {
		r := &http.Request{RemoteAddr: tc.remote, Header: http.Header{}}
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		if got := tc.c.Key(r); got != tc.want {
			t.Errorf("%s: Key = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestParsePrefixes(t *testing.T) {
	got, err := ParsePrefixes(" 10.0.0.1 ,fd00::/8,,192.168.1.7/16")
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.168.0.0/16")}
	if err != nil || len(got) != len(want) {
		t.Fatalf("%v %v", got, err)
	}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("%d: %v, want %v", i, got[i], want[i])
		}
	}
	if p, err := ParsePrefixes(""); err != nil || len(p) != 0 {
		t.Errorf("empty: %v %v", p, err)
	}
	for _, bad := range []string{"10.0.0", "proxy.example.org", "10.0.0.0/33"} {
		if _, err := ParsePrefixes(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
