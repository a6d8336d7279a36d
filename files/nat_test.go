package files

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// testRelay is a real circuit relay v2 service on loopback TCP.
type testRelay struct {
	host  host.Host
	relay *relayv2.Relay
}

// startRelay starts a relay with go-libp2p's defaults changed by res (nil:
// defaults with room for a test's bytes).
func startRelay(t testing.TB, res func(*relayv2.Resources), opts ...libp2p.Option) *testRelay {
	t.Helper()
	opts = append([]libp2p.Option{libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.DisableRelay()}, opts...)
	h, err := libp2p.New(opts...)
	if err != nil {
		t.Fatal(err)
	}
	rc := relayv2.DefaultResources()
	rc.Limit = &relayv2.RelayLimit{Duration: time.Minute, Data: 64 << 20}
	if res != nil {
		res(&rc)
	}
	r, err := relayv2.New(h, relayv2.WithResources(rc))
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	tr := &testRelay{host: h, relay: r}
	t.Cleanup(tr.close)
	return tr
}

func (r *testRelay) close() {
	r.relay.Close()
	r.host.Close()
}

func (r *testRelay) info() peer.AddrInfo {
	return peer.AddrInfo{ID: r.host.ID(), Addrs: r.host.Addrs()}
}

// noDirectAddrs makes a node announce none of its own addresses (to
// identify and in Addrs), as a node behind NAT has none worth telling:
// only its circuit addresses remain.
var noDirectAddrs = libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return nil })

// reserved waits until n holds a reservation with a relay and returns its
// circuit addresses.
func reserved(t testing.TB, n *Node) []ma.Multiaddr {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		as, changed := n.RelayAddrs()
		if len(as) > 0 {
			return as
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("no reservation with the relay")
		}
	}
}

// A node behind a relay: its only addresses are circuit addresses, the
// fetcher reaches it through the relay (a limited connection, as kez-relay
// grants), the route says relayed and the bytes arrive verified.
func TestFetchThroughRelay(t *testing.T) {
	relay := startRelay(t, nil)
	src := NewFileSource()
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: src, Relays: []peer.AddrInfo{relay.info()},
		Libp2pOptions: []libp2p.Option{noDirectAddrs}}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2)}, "tcp")

	circuits := reserved(t, owner)
	for _, a := range circuits {
		if !strings.HasSuffix(a.String(), "/p2p/"+relay.host.ID().String()+"/p2p-circuit") {
			t.Fatalf("circuit address %s", a)
		}
	}
	if got := owner.Addrs(); len(got) != len(circuits) {
		t.Fatalf("the owner's addresses are %v, want only its circuit addresses %v", got, circuits)
	}

	dir := t.TempDir()
	path := writePattern(t, dir, "src", 3*1<<20+5)
	tree, err := src.AddFile(path)
	must(t, err)
	ctx := context.Background()
	info := peer.AddrInfo{ID: owner.ID(), Addrs: owner.Addrs()}
	route, err := fetcher.connect(ctx, info, "alice@kez.test")
	if err != nil || route != RouteRelayed {
		t.Fatalf("connect: %v, %q", err, route)
	}
	var mu sync.Mutex
	routes := map[Route]int64{}
	dst := filepath.Join(dir, "dst")
	must(t, fetcher.Fetch(ctx, info, tree.CID(), dst, WithRoutes(func(_ peer.ID, r Route, n int64) {
		mu.Lock()
		defer mu.Unlock()
		routes[r] += n
	})))
	sameFile(t, path, dst)
	if r := fetcher.RouteOf(fetcher.bestConn(owner.ID())); r != RouteRelayed {
		t.Errorf("the connection's route is %q", r)
	}
	if len(routes) > 0 && routes[RouteRelayed] != 3*1<<20+5 {
		t.Errorf("bytes per route %v", routes)
	}
	if s := owner.Stats(); s.BytesServed != 3*1<<20+5 {
		t.Errorf("owner stats %+v", s)
	}
}

// A fetcher with direct addresses connects directly.
func TestConnectDirect(t *testing.T) {
	p := newPair(t, "tcp", nil)
	route, err := p.fetcher.connect(context.Background(), p.owner.AddrInfo(), "")
	if err != nil || route != RouteDirect {
		t.Fatalf("connect: %v, %q", err, route)
	}
	if r := p.fetcher.RouteOf(nil); r != "" {
		t.Errorf("RouteOf(nil) = %q", r)
	}
}

// unreachableTo connects fetcher to info and returns the error, which must
// be an *UnreachableError matching ErrUnreachable.
func unreachableTo(t *testing.T, fetcher *Node, info peer.AddrInfo) *UnreachableError {
	t.Helper()
	_, err := fetcher.connect(context.Background(), info, "alice@kez.test")
	var ue *UnreachableError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("connect: %v, want an UnreachableError", err)
	}
	return ue
}

// A relay that refuses circuits (its per-peer limit is 0) leaves the
// fetcher with a clear error naming what it tried.
func TestRelayRefusesCircuit(t *testing.T) {
	relay := startRelay(t, func(rc *relayv2.Resources) { rc.MaxCircuits = 0 })
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: NewFileSource(), Relays: []peer.AddrInfo{relay.info()},
		Libp2pOptions: []libp2p.Option{noDirectAddrs}}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2), DialTimeout: 5 * time.Second}, "tcp")
	circuits := reserved(t, owner)
	ue := unreachableTo(t, fetcher, peer.AddrInfo{ID: owner.ID(), Addrs: circuits})
	if ue.Addrs != len(circuits) || ue.Relays != 1 || ue.Err == nil {
		t.Fatalf("error %+v", ue)
	}
	want := "files: cannot reach alice@kez.test's device: no address answered (tried 1, through 1 relay)"
	if ue.Error() != want {
		t.Errorf("error %q, want %q", ue, want)
	}
	if owner.Stats().Requests != 0 {
		t.Error("the owner served a request")
	}
}

// A hostile answer cannot redirect a fetch: circuit addresses through a
// relay the owner holds no reservation with, or naming the owner's relay
// at another key (mallory's), only make the dial fail.
func TestHostileCircuitAddrs(t *testing.T) {
	relay := startRelay(t, nil)
	mallorys := startRelay(t, nil)
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: NewFileSource(), Relays: []peer.AddrInfo{relay.info()},
		Libp2pOptions: []libp2p.Option{noDirectAddrs}}, "tcp")
	mallory := startNode(t, NodeConfig{Identity: testIdentity(t, 4), Source: NewFileSource(), Relays: []peer.AddrInfo{mallorys.info()}}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2), DialTimeout: 5 * time.Second}, "tcp")
	reserved(t, owner)
	reserved(t, mallory)

	circuit := func(relayAddr ma.Multiaddr, relayID peer.ID) ma.Multiaddr {
		return relayAddr.Encapsulate(ma.StringCast("/p2p/" + relayID.String() + "/p2p-circuit"))
	}
	cases := map[string][]ma.Multiaddr{
		// Mallory's relay, where Mallory holds a reservation (as herself).
		"another relay": {circuit(mallorys.host.Addrs()[0], mallorys.host.ID())},
		// The owner's relay's address under Mallory's relay's key.
		"relay key swapped": {circuit(relay.host.Addrs()[0], mallorys.host.ID())},
		// Mallory's node's own address, as a plain address.
		"mallory's node": mallory.host.Addrs(),
	}
	for name, as := range cases {
		t.Run(name, func(t *testing.T) {
			ue := unreachableTo(t, fetcher, peer.AddrInfo{ID: owner.ID(), Addrs: as})
			if ue.Addrs != len(as) {
				t.Errorf("error %+v", ue)
			}
		})
	}
	if mallory.Stats().Requests != 0 || owner.Stats().Requests != 0 {
		t.Error("a request was served")
	}
}

// The owner's relay is down: the circuit address through it fails at once
// with the clear error. When the relay is back (same key, same address),
// the owner reserves again and the fetcher, asking again, gets through
// (its earlier failed dial does not hold it back).
func TestRelayDown(t *testing.T) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	must(t, err)
	relay := startRelay(t, nil, libp2p.Identity(key))
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: NewFileSource(), Relays: []peer.AddrInfo{relay.info()},
		Libp2pOptions: []libp2p.Option{noDirectAddrs}}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2), DialTimeout: 5 * time.Second}, "tcp")
	circuits := reserved(t, owner)
	relayAddrs := relay.host.Addrs()
	relay.close()
	// The owner notices: its circuit addresses go.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		as, changed := owner.RelayAddrs()
		if len(as) == 0 {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("the owner still lists its circuit addresses")
		}
	}
	ue := unreachableTo(t, fetcher, peer.AddrInfo{ID: owner.ID(), Addrs: circuits})
	if ue.Relays != 1 || !strings.Contains(ue.Error(), "through 1 relay") {
		t.Fatalf("error %v", ue)
	}

	startRelay(t, nil, libp2p.Identity(key), libp2p.ListenAddrs(relayAddrs...))
	if again := reserved(t, owner); !sameAddrs(again, circuits) {
		t.Fatalf("circuit addresses %v after the relay came back, were %v", again, circuits)
	}
	if r, err := fetcher.connect(context.Background(), peer.AddrInfo{ID: owner.ID(), Addrs: circuits}, ""); err != nil || r != RouteRelayed {
		t.Fatalf("connect after the relay came back: %v, %q", err, r)
	}
}

func TestParseRelays(t *testing.T) {
	id := testIdentity(t, 5).PublicKey().PeerID().String()
	id2 := testIdentity(t, 6).PublicKey().PeerID().String()
	got, err := ParseRelays([]string{"/ip4/192.0.2.1/tcp/4002/p2p/" + id, "/ip4/192.0.2.1/udp/4002/quic-v1/p2p/" + id, "/dns4/relay.example/tcp/4002/p2p/" + id2})
	if err != nil || len(got) != 2 || len(got[0].Addrs) != 2 || len(got[1].Addrs) != 1 || got[1].ID.String() != id2 {
		t.Fatalf("ParseRelays: %v, %v", got, err)
	}
	if got, err := ParseRelays([]string{"none"}); got != nil || err != nil {
		t.Errorf("none: %v, %v", got, err)
	}
	for _, bad := range []string{
		"",
		"/ip4/192.0.2.1/tcp/4002",
		"/p2p/" + id,
		"/ip4/192.0.2.1/tcp/4002/p2p/" + id + "/p2p-circuit",
		"/ip4/192.0.2.1/tcp/4002/p2p/" + id2 + "/p2p-circuit/p2p/" + id,
		"/ip4/192.0.2.1/tcp/4002/p2p/" + id2 + "/p2p/" + id,
		"none-of-this",
	} {
		if _, err := ParseRelays([]string{bad}); !errors.Is(err, ErrBadRelay) {
			t.Errorf("ParseRelays(%q) = %v, want ErrBadRelay", bad, err)
		}
	}
}

func TestUnreachableErrorText(t *testing.T) {
	cases := []struct {
		e    UnreachableError
		want string
	}{
		{UnreachableError{Owner: "alice@kez.lat", Addrs: 3, Relays: 1}, `files: cannot reach alice@kez.lat's device: no address answered (tried 3, through 1 relay)`},
		{UnreachableError{Owner: "alice@kez.lat", Device: "laptop", Addrs: 4, Relays: 2}, `files: cannot reach alice@kez.lat's device "laptop": no address answered (tried 4, through 2 relays)`},
		{UnreachableError{Owner: "alice@kez.lat", Addrs: 2}, `files: cannot reach alice@kez.lat's device: no address answered (tried 2)`},
	}
	for _, c := range cases {
		if got := c.e.Error(); got != c.want {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
	cause := errors.New("dial failed")
	var err error = &UnreachableError{Owner: "a", Err: cause}
	if !errors.Is(err, ErrUnreachable) || !errors.Is(err, cause) {
		t.Error("UnreachableError does not match ErrUnreachable and its cause")
	}
}

// A fetch whose only connection is relayed waits for a direct one, woken
// by the connection itself (no polling); the tracer's record of a hole
// punch makes that connection's route hole-punched.
func TestWaitDirectAndHolePunchedRoute(t *testing.T) {
	relay := startRelay(t, nil)
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: NewFileSource(), Relays: []peer.AddrInfo{relay.info()},
		Libp2pOptions: []libp2p.Option{noDirectAddrs}}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2), HolePunchWait: time.Minute}, "tcp")
	circuits := reserved(t, owner)
	ctx := context.Background()
	if r, err := fetcher.connect(ctx, peer.AddrInfo{ID: owner.ID(), Addrs: circuits}, ""); err != nil || r != RouteRelayed {
		t.Fatalf("connect: %v, %q", err, r)
	}
	relayed := fetcher.bestConn(owner.ID())

	got := make(chan network.Conn, 1)
	go func() { got <- fetcher.waitDirect(ctx, owner.ID(), relayed) }()
	// The owner dials the fetcher directly, as a hole punch ends.
	must(t, owner.host.Connect(network.WithForceDirectDial(ctx, "test"), peer.AddrInfo{ID: fetcher.ID(), Addrs: fetcher.host.Addrs()}))
	c := <-got
	if fetcher.RouteOf(c) != RouteDirect {
		t.Fatalf("waitDirect returned a %q connection", fetcher.RouteOf(c))
	}
	fetcher.punched.HolePunchFinished("receiver", 1, nil, nil, c)
	if fetcher.RouteOf(c) != RouteHolePunched || fetcher.RouteOf(relayed) != RouteRelayed {
		t.Fatalf("routes %q and %q", fetcher.RouteOf(c), fetcher.RouteOf(relayed))
	}
	if fetcher.bestConn(owner.ID()) == relayed {
		t.Error("the relayed connection is preferred to the direct one")
	}
}
