package files

import (
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/util"
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
