package files

import (
	"testing"

	ma "github.com/multiformats/go-multiaddr"
)

// A holder's have record names addresses of its choice; the fetcher
// dials only IP addresses of the public internet, or of the private or
// loopback range the owner's own answer used, and at most maxHolderAddrs.
func TestHolderAddrsFiltered(t *testing.T) {
	m := func(ss ...string) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, s := range ss {
			out = append(out, ma.StringCast(s))
		}
		return out
	}
	hostile := m(
		"/dns4/intranet.example/tcp/80",
		"/ip4/127.0.0.1/tcp/22",
		"/ip4/192.168.1.1/tcp/80",
		"/ip4/10.0.0.1/tcp/443",
		"/ip4/8.8.8.8/tcp/4001",
		"/ip4/8.8.8.8/tcp/4001",
		"/ip4/8.8.4.4/udp/4001/quic-v1",
		"/ip4/1.1.1.1/tcp/4001",
		"/ip4/1.0.0.1/tcp/4001",
		"/ip4/9.9.9.9/tcp/4001",
	)
	cases := []struct {
		name  string
		owner []ma.Multiaddr
		want  []ma.Multiaddr
	}{
		{"public owner", m("/ip4/5.6.7.8/tcp/4001"), m("/ip4/8.8.8.8/tcp/4001", "/ip4/8.8.4.4/udp/4001/quic-v1", "/ip4/1.1.1.1/tcp/4001", "/ip4/1.0.0.1/tcp/4001")},
		{"owner on this machine", m("/ip4/127.0.0.1/tcp/4001"), m("/ip4/127.0.0.1/tcp/22", "/ip4/8.8.8.8/tcp/4001", "/ip4/8.8.4.4/udp/4001/quic-v1", "/ip4/1.1.1.1/tcp/4001")},
		{"owner on the LAN", m("/ip4/192.168.1.7/tcp/4001"), m("/ip4/192.168.1.1/tcp/80", "/ip4/10.0.0.1/tcp/443", "/ip4/8.8.8.8/tcp/4001", "/ip4/8.8.4.4/udp/4001/quic-v1")},
		{"owner by name only", m("/dns4/alice.example/tcp/4001"), m("/ip4/8.8.8.8/tcp/4001", "/ip4/8.8.4.4/udp/4001/quic-v1", "/ip4/1.1.1.1/tcp/4001", "/ip4/1.0.0.1/tcp/4001")},
	}
	for _, c := range cases {
		got := holderAddrs(hostile, c.owner)
		if len(got) != len(c.want) {
			t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
			continue
		}
		for i := range got {
			if !got[i].Equal(c.want[i]) {
				t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
				break
			}
		}
	}
	circuit := m("/ip4/127.0.0.1/tcp/4002/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit")
	if got := holderAddrs(circuit, m("/ip4/5.6.7.8/tcp/4001")); len(got) != 0 {
		t.Errorf("a circuit address through a loopback relay was kept for a public owner: %v", got)
	}
	if got := holderAddrs(circuit, m("/ip4/127.0.0.1/tcp/4001")); len(got) != 1 {
		t.Errorf("a circuit address through a loopback relay was dropped for an owner on this machine: %v", got)
	}
}
