package files

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/files/internal/addrs"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// connWatch tells waiters that the node's connections changed: a channel
// closed and replaced on every new connection and every successful hole
// punch.
type connWatch struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *connWatch) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *connWatch) fire() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// watchConns hooks the node's connection events: new connections wake
// connect's waiters, closed ones are forgotten by RouteOf.
func (n *Node) watchConns() {
	n.host.Network().Notify(&network.NotifyBundle{
		ConnectedF:    func(network.Network, network.Conn) { n.conns.fire() },
		DisconnectedF: func(_ network.Network, c network.Conn) { n.punched.forget(c) },
	})
}

// connect makes sure the node has a connection to the owner and returns
// its route: it dials every address of owner (libp2p's dial ranker tries
// direct addresses before circuit ones) within the node's DialTimeout, and
// when the connection it got is relayed and both sides speak DCUtR, waits
// up to HolePunchWait for hole punching to give a direct one. name names
// the owner in errors (their handle; "" for the PeerID). No connection is
// an *[UnreachableError]; ctx's end is ctx's error.
func (n *Node) connect(ctx context.Context, owner peer.AddrInfo, name string) (Route, error) {
	if len(owner.Addrs) > 0 {
		n.host.Peerstore().AddAddrs(owner.ID, owner.Addrs, peerstore.TempAddrTTL)
	}
	if c := n.bestConn(owner.ID); c != nil && n.RouteOf(c) != RouteRelayed {
		return n.RouteOf(c), nil
	}
	n.clearBackoff(owner)
	dctx, cancel := context.WithTimeout(ctx, n.dialTimeout)
	defer cancel()
	n.readyToPunch(dctx, owner)
	dctx = network.WithAllowLimitedConn(dctx, "kez blobs")
	if err := n.host.Connect(dctx, peer.AddrInfo{ID: owner.ID}); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", n.unreachable(owner, name, err)
	}
	c := n.bestConn(owner.ID)
	if c == nil {
		return "", n.unreachable(owner, name, network.ErrNoConn)
	}
	if n.RouteOf(c) == RouteRelayed && n.holePunchWait > 0 && n.canHolePunch(ctx, c) {
		c = n.waitDirect(ctx, owner.ID, c)
	}
	return n.RouteOf(c), ctx.Err()
}

// clearBackoff forgets the failed dials to the owner and to the relays of
// its circuit addresses: libp2p skips an address that failed lately (for
// up to minutes), and a fetch that asks again (or waits with --wait) must
// try them again, as a relay that was down may be back.
func (n *Node) clearBackoff(owner peer.AddrInfo) {
	sw, ok := n.host.Network().(interface{ Backoff() *swarm.DialBackoff })
	if !ok {
		return
	}
	sw.Backoff().Clear(owner.ID)
	for _, a := range owner.Addrs {
		if id, ok := circuitRelay(a); ok {
			sw.Backoff().Clear(id)
		}
	}
}

// readyToPunch prepares a dial to an owner that lists circuit addresses,
// so that DCUtR can upgrade the relayed connection: the owner starts the
// hole punch as soon as the connection is identified, and this node
// answers it only once its DCUtR handler is set, which go-libp2p does once
// the node knows a public address of its own (observed by a peer such as
// the relay). So it connects to the relays those addresses name first and
// waits, up to the hole punch wait, for that handler. It does nothing when
// the handler is set, hole punching is off, or no address is a circuit
// through a relay at a public address (only such a relay can tell this
// node a public address of its own).
func (n *Node) readyToPunch(ctx context.Context, owner peer.AddrInfo) {
	if n.punched == nil || n.holePunchWait <= 0 || n.speaksDCUtR() {
		return
	}
	var relays []peer.AddrInfo
	for _, a := range owner.Addrs {
		id, ok := circuitRelay(a)
		if !ok || !manet.IsPublicAddr(a[:len(a)-2]) {
			continue
		}
		if i := slices.IndexFunc(relays, func(r peer.AddrInfo) bool { return r.ID == id }); i >= 0 {
			relays[i].Addrs = append(relays[i].Addrs, a[:len(a)-2])
		} else {
			relays = append(relays, peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{a[:len(a)-2]}})
		}
	}
	if len(relays) == 0 {
		return
	}
	sub, err := n.host.EventBus().Subscribe(new(event.EvtLocalProtocolsUpdated))
	if err != nil {
		return
	}
	defer sub.Close()
	wctx, cancel := context.WithTimeout(ctx, n.holePunchWait)
	defer cancel()
	for _, r := range relays {
		go n.host.Connect(wctx, r) // the circuit dial uses this connection
	}
	for !n.speaksDCUtR() {
		select {
		case <-sub.Out():
		case <-wctx.Done():
			return
		}
	}
}

// speaksDCUtR reports whether the node's DCUtR handler is set.
func (n *Node) speaksDCUtR() bool {
	return slices.Contains(n.host.Mux().Protocols(), protocol.ID(holepunch.Protocol))
}

// canHolePunch reports whether DCUtR may upgrade the relayed connection c:
// this node runs it (its handler is set once the node knows a public
// address of its own) and the far end speaks it (known after identify,
// which this waits for, within the hole punch wait).
func (n *Node) canHolePunch(ctx context.Context, c network.Conn) bool {
	if n.punched == nil || !n.speaksDCUtR() {
		return false
	}
	if ids, ok := n.host.(interface{ IDService() identify.IDService }); ok {
		t := time.NewTimer(n.holePunchWait)
		defer t.Stop()
		select {
		case <-ids.IDService().IdentifyWait(c):
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
	p, err := n.host.Peerstore().SupportsProtocols(c.RemotePeer(), holepunch.Protocol)
	return err == nil && len(p) > 0
}

// punchRecordWait bounds how long waitDirect waits for DCUtR to record a
// direct connection that appeared while it punched.
const punchRecordWait = time.Second

// waitDirect waits up to the hole punch wait for a direct connection to p
// (hole-punched, or dialled by the far end), woken by the node's
// connection events; it returns the best connection then.
func (n *Node) waitDirect(ctx context.Context, p peer.ID, relayed network.Conn) network.Conn {
	t := time.NewTimer(n.holePunchWait)
	defer t.Stop()
	for {
		changed, punched := n.conns.wait(), n.punched.wait()
		if c := n.bestConn(p); c != nil && n.RouteOf(c) != RouteRelayed {
			if n.RouteOf(c) == RouteDirect {
				// The swarm announces a hole-punched connection before DCUtR
				// returns and records it: give the record a moment, so that
				// the route says hole-punched.
				g := time.NewTimer(punchRecordWait)
				select {
				case <-punched:
				case <-g.C:
				case <-ctx.Done():
				}
				g.Stop()
			}
			return c
		}
		select {
		case <-changed:
		case <-punched:
		case <-t.C:
			if c := n.bestConn(p); c != nil {
				return c
			}
			return relayed
		case <-ctx.Done():
			return relayed
		}
	}
}

// unreachable is the error of a connect that found no path.
func (n *Node) unreachable(owner peer.AddrInfo, name string, err error) error {
	relays := map[peer.ID]bool{}
	for _, a := range owner.Addrs {
		if id, ok := circuitRelay(a); ok {
			relays[id] = true
		}
	}
	if name == "" {
		name = owner.ID.String()
	}
	var dialErr error = err
	if errors.Is(err, context.DeadlineExceeded) {
		dialErr = fmt.Errorf("no connection within %s: %w", n.dialTimeout, err)
	}
	return &UnreachableError{Owner: name, Addrs: len(owner.Addrs), Relays: len(relays), Err: dialErr}
}

// newStream opens a stream of the blob exchange protocol to p on the best
// connection the node has (direct before relayed; a relayed connection is
// used when it is the only one), dialling p's known addresses if there is
// none.
func (n *Node) newStream(ctx context.Context, p peer.ID) (network.Stream, error) {
	return n.host.NewStream(network.WithAllowLimitedConn(ctx, "kez blobs"), p, protocol.ID(protocolID))
}

// circuitRelay returns the relay's PeerID of a circuit address.
func circuitRelay(a ma.Multiaddr) (peer.ID, bool) {
	if !addrs.IsCircuit(a) || len(a) < 2 || a[len(a)-2].Code() != ma.P_P2P {
		return "", false
	}
	id, err := peer.IDFromBytes(a[len(a)-2].RawValue())
	return id, err == nil
}

// relayOf returns the relay of a relayed connection to p
// (<relay address>/p2p/<relay>), nil if there is none.
func (n *Node) relayOf(p peer.ID) ma.Multiaddr {
	for _, c := range n.host.Network().ConnsToPeer(p) {
		a := c.RemoteMultiaddr()
		if i := slices.IndexFunc(a, func(c ma.Component) bool { return c.Code() == ma.P_CIRCUIT }); i > 0 {
			return slices.Clone(a[:i])
		}
	}
	return nil
}
