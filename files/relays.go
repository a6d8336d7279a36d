package files

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	circuit "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrBadRelay reports a relay address that is not a multiaddr ending in
// /p2p/<the relay's PeerID> after a transport address.
var ErrBadRelay = errors.New("files: bad relay address")

// ParseRelays turns relay addresses (client.Config.Relays: multiaddrs
// ending in /p2p/<relay's PeerID>) into the form [NodeConfig.Relays]
// takes, one entry per relay with all its addresses, in the order first
// named. A lone "none" ([client.NoRelays]) or no address gives nil.
// Errors wrap [ErrBadRelay].
func ParseRelays(list []string) ([]peer.AddrInfo, error) {
	if len(list) == 1 && list[0] == client.NoRelays {
		return nil, nil
	}
	var out []peer.AddrInfo
	for _, s := range list {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrBadRelay, s, err)
		}
		transport, id := peer.SplitAddr(a)
		if id == "" || len(transport) == 0 || hasCircuit(transport) {
			return nil, fmt.Errorf("%w: %q does not end in /p2p/<peer id> after a transport address", ErrBadRelay, s)
		}
		for _, c := range transport {
			if c.Code() == ma.P_P2P {
				return nil, fmt.Errorf("%w: %q names more than the relay", ErrBadRelay, s)
			}
		}
		i := slices.IndexFunc(out, func(ai peer.AddrInfo) bool { return ai.ID == id })
		if i < 0 {
			out = append(out, peer.AddrInfo{ID: id})
			i = len(out) - 1
		}
		if !ma.Contains(out[i].Addrs, transport) {
			out[i].Addrs = append(out[i].Addrs, transport)
		}
	}
	return out, nil
}

// Reservation timing: how long before it expires a reservation is
// renewed, and the pauses between attempts at a relay that failed (a
// relay that refused gets the longer one).
const (
	reservationRenew   = 2 * time.Minute
	reserveTimeout     = 30 * time.Second
	firstRelayRetry    = time.Second
	maxRelayRetry      = 30 * time.Second
	refusedRelayRetry  = time.Minute
	relayProtectionTag = "kez-relay"
)

// reservations keeps a circuit relay v2 reservation with each of the
// node's relays (go-libp2p's circuit relay client), renewing it before it
// expires and making it again when the relay's connection closes; the
// node's circuit addresses are the relays' addresses it holds one with.
//
// This is what AutoRelay with static relays does, without waiting for
// AutoNAT's verdict (a node behind NAT reserves at once) and keeping the
// relay addresses its operator gave, which AutoRelay drops when they are
// private (a relay on a private network or this machine).
type reservations struct {
	n      *Node
	relays []peer.AddrInfo

	lost map[peer.ID]chan struct{} // a relay's last connection closed

	mu      sync.Mutex
	active  map[peer.ID]bool
	changed chan struct{} // closed and replaced when active changes
	done    sync.WaitGroup
}

func newReservations(n *Node, relays []peer.AddrInfo) *reservations {
	r := &reservations{n: n, relays: relays, lost: map[peer.ID]chan struct{}{}, active: map[peer.ID]bool{}, changed: make(chan struct{})}
	for _, ai := range relays {
		r.lost[ai.ID] = make(chan struct{}, 1)
	}
	return r
}

// start keeps a reservation with each relay until ctx ends; wait for the
// keepers with r.done.
func (r *reservations) start(ctx context.Context) {
	r.n.host.Network().Notify(&network.NotifyBundle{DisconnectedF: r.disconnected})
	for _, ai := range r.relays {
		r.n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.PermanentAddrTTL)
		r.n.host.ConnManager().Protect(ai.ID, relayProtectionTag)
		r.done.Go(func() { r.keep(ctx, ai) })
	}
}

// disconnected tells a relay's keeper that its last connection closed.
func (r *reservations) disconnected(nw network.Network, c network.Conn) {
	ch, ok := r.lost[c.RemotePeer()]
	if !ok || nw.Connectedness(c.RemotePeer()) == network.Connected {
		return
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// keep holds a reservation with one relay until ctx ends. A reservation
// whose connection closes counts as a failure unless it lasted
// maxRelayRetry: a relay that grants slots and drops them at once is
// retried with the same growing pauses as one that is down, never in a
// loop (TestHostileRelayDropsAfterReserving).
func (r *reservations) keep(ctx context.Context, ai peer.AddrInfo) {
	retry := firstRelayRetry
	backoff := func() time.Duration {
		d := retry
		retry = min(2*retry, maxRelayRetry)
		return spread(d)
	}
	for ctx.Err() == nil {
		select {
		case <-r.lost[ai.ID]: // news of an older connection
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, reserveTimeout)
		rsvp, err := circuit.Reserve(rctx, r.n.host, ai)
		cancel()
		if err != nil {
			r.set(ai.ID, false)
			if ctx.Err() != nil {
				return
			}
			wait := backoff()
			var re circuit.ReservationError
			if errors.As(err, &re) && re.Status == pbv2.Status_RESERVATION_REFUSED {
				r.n.log.Warn("files: the relay refused a reservation", "relay", ai.ID, "reason", re.Reason)
				wait = spread(refusedRelayRetry)
			} else {
				r.n.log.Debug("files: no reservation with the relay", "relay", ai.ID, "err", err)
			}
			r.sleep(ctx, nil, wait)
			continue
		}
		r.set(ai.ID, true)
		got := time.Now()
		held := r.sleep(ctx, r.lost[ai.ID], max(time.Until(rsvp.Expiration)-reservationRenew, time.Second))
		if time.Since(got) >= maxRelayRetry {
			retry = firstRelayRetry
		}
		if !held {
			// The relay's connection closed: the reservation went with it.
			r.set(ai.ID, false)
			r.sleep(ctx, nil, backoff())
		}
	}
	r.set(ai.ID, false)
}

// spread draws a pause from the upper half of d, so that many nodes'
// retries spread out.
func spread(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// sleep waits d, ctx's end, or the relay's connection closing (false).
func (r *reservations) sleep(ctx context.Context, lost <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return true
	case <-t.C:
		return true
	case <-lost:
		return false
	}
}

func (r *reservations) set(relay peer.ID, on bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.active[relay] == on {
		return
	}
	r.active[relay] = on
	close(r.changed)
	r.changed = make(chan struct{})
}

// addrs returns the circuit addresses through the relays the node holds
// a reservation with, in the relays' order, and a channel closed when
// that set next changes.
func (r *reservations) addrs() ([]ma.Multiaddr, <-chan struct{}) {
	if r == nil {
		return nil, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []ma.Multiaddr
	for _, ai := range r.relays {
		if !r.active[ai.ID] {
			continue
		}
		suffix, err := ma.NewMultiaddr("/p2p/" + ai.ID.String() + "/p2p-circuit")
		if err != nil {
			continue
		}
		for _, a := range ai.Addrs {
			out = append(out, a.Encapsulate(suffix))
		}
	}
	return out, r.changed
}
