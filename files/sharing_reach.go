package files

import (
	"cmp"
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/nats-io/nats.go"
)

// relocateDelay is how long a fetch whose owner answered with addresses
// none of which connected waits before asking once more: an owner that
// has just started may not hold its relay reservation yet, and its next
// answer then carries circuit addresses.
const relocateDelay = 2 * time.Second

// reach locates the owner's serving device dev and connects to it: an
// answer none of whose addresses connects is asked again once after
// relocateDelay (dialled again only if the new answer differs), and with
// [WithWait] again and again like an offline owner, until the wait ends.
// It returns the answer and the route of the connection.
func (s *Sharing) reach(ctx context.Context, node *Node, nc *nats.Conn, ow *owner, dev kez.PublicKey, o fetchConfig) (peer.AddrInfo, Route, error) {
	lctx := ctx
	if o.wait && o.waitTimeout > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, o.waitTimeout)
		defer cancel()
	}
	// One count of waits, whether the owner was offline or unreachable.
	waits := 0
	onWait := func(int) {
		waits++
		if o.onWait != nil {
			o.onWait(waits)
		}
	}
	lo := LocateOptions{
		OwnerName: ow.deviceName(dev), Timeout: s.cfg.LocateTimeout, Wait: o.wait,
		MaxWaitInterval: s.cfg.MaxWaitInterval, OnWait: onWait, Now: s.now,
	}
	var last *UnreachableError
	var tried []ma.Multiaddr
	maxWait := cmp.Or(s.cfg.MaxWaitInterval, signal.DefaultMaxWaitInterval)
	pause := min(time.Second, maxWait)
	for attempt := 1; ; attempt++ {
		info, err := signal.Locate(lctx, nc, s.devKey, dev, lo)
		if err != nil {
			if last != nil && errors.Is(err, ErrOwnerOffline) && lctx.Err() != nil && ctx.Err() == nil {
				return peer.AddrInfo{}, "", last // the wait ended while the owner was unreachable
			}
			return peer.AddrInfo{}, "", err
		}
		if last != nil && !o.wait && sameAddrs(tried, info.Addrs) {
			return peer.AddrInfo{}, "", last
		}
		tried = info.Addrs
		route, err := node.connect(lctx, info, ow.handle)
		if err == nil {
			return info, route, nil
		}
		var ue *UnreachableError
		switch {
		case errors.As(err, &ue):
			ue.Owner, ue.Device = ow.handle, deviceLabel(ow, dev)
			last = ue
		case last != nil && ctx.Err() == nil && lctx.Err() != nil:
			return peer.AddrInfo{}, "", last
		default:
			return peer.AddrInfo{}, "", err
		}
		var d time.Duration
		switch {
		case o.wait:
			onWait(attempt)
			d = pause
			pause = min(2*pause, maxWait)
		case attempt == 1:
			d = relocateDelay
		default:
			return peer.AddrInfo{}, "", last
		}
		if !lifecycle.Sleep(lctx, d) {
			if ctx.Err() != nil {
				return peer.AddrInfo{}, "", ctx.Err()
			}
			return peer.AddrInfo{}, "", last
		}
	}
}

// deviceLabel is the name of dev among the owner's devices, "" for the
// primary key.
func deviceLabel(ow *owner, dev kez.PublicKey) string {
	if d, ok := ow.state.DeviceOf(dev); ok && !d.Primary {
		return d.Name
	}
	return ""
}

// sameAddrs reports whether a and b hold the same addresses.
func sameAddrs(a, b []ma.Multiaddr) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !slices.ContainsFunc(b, x.Equal) {
			return false
		}
	}
	return true
}

// routeTally adds up the bytes a fetch received per route.
type routeTally struct {
	mu     sync.Mutex
	routes map[Route]int64
}

// option returns the [WithRoutes] option that counts into t, calling the
// caller's own WithRoutes function too.
func (t *routeTally) option(next func(peer.ID, Route, int64)) FetchOption {
	return WithRoutes(func(p peer.ID, r Route, n int64) {
		t.mu.Lock()
		if t.routes == nil {
			t.routes = map[Route]int64{}
		}
		t.routes[r] += n
		t.mu.Unlock()
		if next != nil {
			next(p, r, n)
		}
	})
}

// result returns the bytes per route and the route that carried the most
// (ties: the better route); fallback when no bytes were counted.
func (t *routeTally) result(fallback Route) (Route, map[Route]int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	best, most := fallback, int64(-1)
	for _, r := range []Route{RouteDirect, RouteHolePunched, RouteRelayed} {
		if n, ok := t.routes[r]; ok && n > most {
			best, most = r, n
		}
	}
	if len(t.routes) == 0 {
		return best, nil
	}
	return best, maps.Clone(t.routes)
}

// fill sets f's Route and Routes from the tally (route, the connection's,
// when no bytes were counted) and, when a relay carried bytes or the
// connection, f.Relay: the relay of node's connection to p now, else
// relay (the one it had before the fetch).
func (t *routeTally) fill(f *Fetched, route Route, node *Node, p peer.ID, relay ma.Multiaddr) {
	f.Route, f.Routes = t.result(route)
	if f.Route == RouteRelayed || f.Routes[RouteRelayed] > 0 {
		if f.Relay = node.relayOf(p); f.Relay == nil {
			f.Relay = relay
		}
	}
}
