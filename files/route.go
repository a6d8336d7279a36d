package files

import (
	"sync"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// Route is the path a connection to a peer takes.
type Route string

// The routes, best first: libp2p dials direct addresses before circuit
// ones, and a relayed connection gives way to a hole-punched one when
// DCUtR (docs/spec/blobs.md) makes it.
const (
	// RouteDirect: a connection one peer dialled at the other's address.
	RouteDirect Route = "direct"
	// RouteHolePunched: a direct connection DCUtR hole punching made
	// through both peers' NATs, coordinated over a relayed connection.
	RouteHolePunched Route = "hole-punched"
	// RouteRelayed: a connection through a relay (circuit relay v2); the
	// relay forwards the bytes, end-to-end encrypted between the peers.
	RouteRelayed Route = "relayed"
)

// RouteOf tells which route the connection c takes: relayed for a
// connection through a relay, hole-punched for a direct connection this
// node's DCUtR service made, direct otherwise. A nil c is "".
func (n *Node) RouteOf(c network.Conn) Route {
	if c == nil {
		return ""
	}
	if hasCircuit(c.RemoteMultiaddr()) {
		return RouteRelayed
	}
	if n.punched.has(c) {
		return RouteHolePunched
	}
	return RouteDirect
}

// hasCircuit reports whether a contains a /p2p-circuit component anywhere
// (a relayed connection's remote address may end in the peer's /p2p).
func hasCircuit(a ma.Multiaddr) bool {
	for _, c := range a {
		if c.Code() == ma.P_CIRCUIT {
			return true
		}
	}
	return false
}

// maxPunched bounds the hole-punched connections remembered; closed ones
// are forgotten as they close.
const maxPunched = 4096

// punchedConns records the connections hole punching made: it is the
// holepunch service's metrics tracer (holepunch.WithMetricsTracer), whose
// HolePunchFinished names the direct connection a successful punch left,
// on both sides. Waiters learn of each success on a channel.
type punchedConns struct {
	mu      sync.Mutex
	conns   map[network.Conn]struct{}
	changed chan struct{} // closed and replaced on every success
}

func newPunchedConns() *punchedConns {
	return &punchedConns{conns: map[network.Conn]struct{}{}, changed: make(chan struct{})}
}

// HolePunchFinished implements holepunch.MetricsTracer.
func (p *punchedConns) HolePunchFinished(_ string, _ int, _, _ []ma.Multiaddr, direct network.ConnMultiaddrs) {
	c, ok := direct.(network.Conn)
	if !ok || c == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.conns) >= maxPunched {
		clear(p.conns)
	}
	p.conns[c] = struct{}{}
	close(p.changed)
	p.changed = make(chan struct{})
}

// DirectDialFinished implements holepunch.MetricsTracer.
func (p *punchedConns) DirectDialFinished(bool) {}

func (p *punchedConns) has(c network.Conn) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	_, ok := p.conns[c]
	return ok
}

// forget drops a closed connection.
func (p *punchedConns) forget(c network.Conn) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, c)
}

// wait returns a channel closed at the next successful hole punch.
func (p *punchedConns) wait() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// bestConn returns the connection to p a new stream would best use: a
// direct one (hole-punched or not) before a relayed one; nil if none.
func (n *Node) bestConn(p peer.ID) network.Conn {
	var relayed network.Conn
	for _, c := range n.host.Network().ConnsToPeer(p) {
		if n.RouteOf(c) != RouteRelayed {
			return c
		}
		relayed = c
	}
	return relayed
}
