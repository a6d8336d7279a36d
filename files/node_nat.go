package files

import (
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
)

// natOptions are the libp2p options of a node's NAT traversal: the relay
// transport (dialling and accepting circuit connections), DCUtR hole
// punching unless cfg.NoHolePunching (its tracer records the connections
// it makes, for [Node.RouteOf]) and AutoNAT v2 (which of the node's
// addresses others can reach).
func natOptions(cfg NodeConfig, punched *punchedConns) []libp2p.Option {
	opts := []libp2p.Option{
		libp2p.EnableRelay(),
		libp2p.EnableAutoNATv2(),
	}
	if !cfg.NoHolePunching {
		opts = append(opts, libp2p.EnableHolePunching(holepunch.WithMetricsTracer(punched)))
	}
	return opts
}
