package files

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/util"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	hpb "github.com/libp2p/go-libp2p/p2p/protocol/holepunch/pb"
	ma "github.com/multiformats/go-multiaddr"
)

// A hostile relay grants every reservation and then closes the
// connection it came on. The node must back off as from a failure, not
// make its next reservation at once: without that it reconnects in a
// tight loop (a handshake and a reservation per round trip, and kez serve
// printing "Reachable through…" / "Lost the slot…" each time).
func TestHostileRelayDropsAfterReserving(t *testing.T) {
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics(), libp2p.DisableRelay())
	must(t, err)
	t.Cleanup(func() { h.Close() })
	var granted atomic.Int64
	first := make(chan struct{})
	h.SetStreamHandler(proto.ProtoIDv2Hop, func(s network.Stream) {
		defer s.Conn().Close()
		rd := util.NewDelimitedReader(s, 4096)
		defer rd.Close()
		var msg pbv2.HopMessage
		if err := rd.ReadMsg(&msg); err != nil || msg.GetType() != pbv2.HopMessage_RESERVE {
			s.Reset()
			return
		}
		expire := uint64(time.Now().Add(time.Hour).Unix())
		resp := pbv2.HopMessage{Type: pbv2.HopMessage_STATUS.Enum(), Status: pbv2.Status_OK.Enum(),
			Reservation: &pbv2.Reservation{Expire: &expire}}
		if err := util.NewDelimitedWriter(s).WriteMsg(&resp); err != nil {
			s.Reset()
			return
		}
		if granted.Add(1) == 1 {
			close(first)
		}
		// The client closes its side once it read the answer; then the
		// connection goes.
		s.CloseWrite()
		io.Copy(io.Discard, s)
	})
	startNode(t, NodeConfig{Identity: testIdentity(t, 1), Relays: []peer.AddrInfo{{ID: h.ID(), Addrs: h.Addrs()}}}, "tcp")
	select {
	case <-first:
	case <-time.After(20 * time.Second):
		t.Fatal("no reservation with the relay")
	}
	const window = 3 * time.Second
	start := granted.Load()
	time.Sleep(window) // a measurement window, not synchronisation
	// Backing off from 1 s (each pause drawn from its upper half), at most
	// 3 more fit in the window: 0.5 s, then 1 s, then 2 s.
	if n := granted.Load() - start; n > 3 {
		t.Fatalf("the node made %d reservations in %s with a relay that drops each one", n, window)
	}
}

// A stranger who reaches an owner through its relay answers the owner's
// DCUtR CONNECT with addresses of its choice: without a filter the owner
// dials every one (up to a 4 KiB message's worth, three times over), on
// any host and port, private ones included: a reflector and a scanner of
// the owner's network. The owner must dial only public IP addresses, a
// few: here every address is on loopback, so it sends no SYNC and dials
// none of them.
func TestHostilePeerHolePunchAddrs(t *testing.T) {
	relay := startRelay(t, nil)
	// The owner believes it has a public address, so its DCUtR service
	// runs and it punches towards whoever reaches it through the relay.
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: NewFileSource(), Relays: []peer.AddrInfo{relay.info()},
		Libp2pOptions: []libp2p.Option{libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr {
			return []ma.Multiaddr{ma.StringCast("/ip4/1.2.3.4/tcp/4001")}
		})}}, "tcp")
	circuits := reserved(t, owner)

	// Victims: TCP listeners that count the connections made to them.
	var dialled atomic.Int64
	hit := make(chan struct{}, 1)
	var victims [][]byte
	for range 32 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		t.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				dialled.Add(1)
				select {
				case hit <- struct{}{}:
				default:
				}
				c.Close()
			}
		}()
		victims = append(victims, ma.StringCast(fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", l.Addr().(*net.TCPAddr).Port)).Bytes())
	}

	stranger, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	must(t, err)
	t.Cleanup(func() { stranger.Close() })
	synced := make(chan bool, 3)
	stranger.SetStreamHandler(holepunch.Protocol, func(s network.Stream) {
		rd := util.NewDelimitedReader(s, 4096)
		defer rd.Close()
		var msg hpb.HolePunch
		if err := rd.ReadMsg(&msg); err != nil || msg.GetType() != hpb.HolePunch_CONNECT {
			s.Reset()
			return
		}
		if err := util.NewDelimitedWriter(s).WriteMsg(&hpb.HolePunch{Type: hpb.HolePunch_CONNECT.Enum(), ObsAddrs: victims}); err != nil {
			s.Reset()
			return
		}
		msg.Reset()
		synced <- rd.ReadMsg(&msg) == nil && msg.GetType() == hpb.HolePunch_SYNC
		s.Close()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	must(t, stranger.Connect(ctx, peer.AddrInfo{ID: owner.ID(), Addrs: circuits}))

	select {
	case ok := <-synced:
		if ok {
			select {
			case <-hit:
			case <-ctx.Done():
			}
			t.Fatalf("the owner took the stranger's %d loopback addresses for a hole punch (%d connections made to them so far)", len(victims), dialled.Load())
		}
	case <-ctx.Done():
		t.Fatal("the owner never started a hole punch")
	}
	if n := dialled.Load(); n != 0 {
		t.Fatalf("%d connections to the stranger's addresses", n)
	}
}

// The DCUtR filter keeps a few public IP addresses of a peer's CONNECT:
// no names, no loopback, private or link-local addresses, no duplicates.
func TestPunchFilter(t *testing.T) {
	var in []ma.Multiaddr
	for _, s := range []string{"/ip4/127.0.0.1/tcp/1", "/ip4/10.0.0.1/tcp/1", "/ip4/192.168.1.1/udp/1/quic-v1",
		"/ip6/::1/tcp/1", "/ip6/fe80::1/tcp/1", "/dns4/example.com/tcp/1", "/dns/localhost/tcp/1",
		"/ip4/100.64.0.1/tcp/1", "/ip4/169.254.1.1/tcp/1", "/ip4/1.1.1.1/tcp/1", "/ip4/1.1.1.1/tcp/1"} {
		in = append(in, ma.StringCast(s))
	}
	for i := range 20 {
		in = append(in, ma.StringCast(fmt.Sprintf("/ip4/8.8.8.%d/tcp/4001", i)))
	}
	out := punchFilter{}.FilterRemote("", in)
	if len(out) != maxPunchAddrs || !out[0].Equal(ma.StringCast("/ip4/1.1.1.1/tcp/1")) || !out[1].Equal(ma.StringCast("/ip4/8.8.8.0/tcp/4001")) {
		t.Fatalf("kept %v", out)
	}
}
