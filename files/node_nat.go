package files

import (
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// natOptions are the libp2p options of a node's NAT traversal: the relay
// transport (dialling and accepting circuit connections), DCUtR hole
// punching when punched is not nil (its tracer, which records the
// connections hole punching makes, for [Node.RouteOf], and punchFilter)
// and AutoNAT v2 (which of the node's addresses others can reach). The
// reservations with the node's relays are kept by the node itself (see
// reservations).
func natOptions(punched *punchedConns) []libp2p.Option {
	opts := []libp2p.Option{
		libp2p.EnableRelay(),
		libp2p.EnableAutoNATv2(),
	}
	if punched != nil {
		opts = append(opts, libp2p.EnableHolePunching(holepunch.WithMetricsTracer(punched), holepunch.WithAddrFilter(punchFilter{})))
	}
	return opts
}

// maxPunchAddrs bounds the addresses of a peer's DCUtR CONNECT message a
// node dials (a peer's observed public addresses are a handful: TCP and
// QUIC, IPv4 and IPv6).
const maxPunchAddrs = 8

// punchFilter is the node's DCUtR address filter. The addresses a peer
// sends in its CONNECT message are its word alone (it reached the node
// through a relay, and anyone may): the node dials only the first
// maxPunchAddrs of them that are public IP addresses, never a name to
// resolve nor a loopback or private address (which no hole punch needs),
// so a stranger cannot point the node's dials at its network or at a
// third party in bulk.
type punchFilter struct{}

// FilterLocal keeps the node's own addresses (libp2p passes public ones).
func (punchFilter) FilterLocal(_ peer.ID, as []ma.Multiaddr) []ma.Multiaddr { return as }

// FilterRemote keeps at most maxPunchAddrs public IP addresses.
func (punchFilter) FilterRemote(_ peer.ID, as []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range as {
		if len(out) == maxPunchAddrs {
			break
		}
		if len(a) == 0 || (a[0].Code() != ma.P_IP4 && a[0].Code() != ma.P_IP6) || !manet.IsPublicAddr(a) || ma.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out
}
