package files

import (
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
)

// natOptions are the libp2p options of a node's NAT traversal: the relay
// transport (dialling and accepting circuit connections), DCUtR hole
// punching when punched is not nil (its tracer, which records the
// connections hole punching makes, for [Node.RouteOf]) and AutoNAT v2
// (which of the node's addresses others can reach). The reservations with
// the node's relays are kept by the node itself (see reservations).
func natOptions(punched *punchedConns) []libp2p.Option {
	opts := []libp2p.Option{
		libp2p.EnableRelay(),
		libp2p.EnableAutoNATv2(),
	}
	if punched != nil {
		opts = append(opts, libp2p.EnableHolePunching(holepunch.WithMetricsTracer(punched)))
	}
	return opts
}
