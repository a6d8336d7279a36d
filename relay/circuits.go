package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/util"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"google.golang.org/protobuf/proto"
)

// maxHopMessage is the largest hop message read, as go-libp2p's relay.
const maxHopMessage = 4096

// hopTimeout bounds the wait for a hop stream's request, as go-libp2p's
// relay.StreamTimeout.
const hopTimeout = time.Minute

// circuitSlots counts the circuits open from each source address (an
// IPv4 address or an IPv6 /64), in all and to each target. go-libp2p's
// relay counts circuits per peer id only, which a stranger makes for
// free; these counts are what it cannot multiply.
type circuitSlots struct {
	perIP, perIPToPeer int
	m                  *metrics

	mu     sync.Mutex
	byIP   map[string]int
	toPeer map[ipPeer]int
}

type ipPeer struct {
	ip   string
	peer peer.ID
}

func newCircuitSlots(perIP, perIPToPeer int, m *metrics) *circuitSlots {
	return &circuitSlots{perIP: perIP, perIPToPeer: perIPToPeer, m: m, byIP: map[string]int{}, toPeer: map[ipPeer]int{}}
}

// take takes a slot for a circuit from ip to target; release gives it
// back (once). ok false: over a limit, counted.
func (c *circuitSlots) take(ip string, target peer.ID) (release func(), ok bool) {
	k := ipPeer{ip, target}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byIP[ip] >= c.perIP || c.toPeer[k] >= c.perIPToPeer {
		c.m.refused.WithLabelValues(ReasonCircuitIPLimit).Inc()
		return nil, false
	}
	c.byIP[ip]++
	c.toPeer[k]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			if c.byIP[ip]--; c.byIP[ip] <= 0 {
				delete(c.byIP, ip)
			}
			if c.toPeer[k]--; c.toPeer[k] <= 0 {
				delete(c.toPeer, k)
			}
		})
	}, true
}

// admit reads the hop request on s (the stream go-libp2p's relay
// service is about to handle). A CONNECT takes a slot for the stream's
// life; over a limit, the peer is answered RESOURCE_LIMIT_EXCEEDED and
// s is closed (nil returned). Otherwise the stream returned replays the
// request to the service.
func (c *circuitSlots) admit(s network.Stream) network.Stream {
	s.SetReadDeadline(time.Now().Add(hopTimeout))
	raw, err := readDelimited(s)
	s.SetReadDeadline(time.Time{})
	ps := &peekedStream{Stream: s, r: io.MultiReader(bytes.NewReader(raw), s)}
	if err != nil {
		// The service reads the same bytes and refuses them.
		return ps
	}
	_, k := binary.Uvarint(raw)
	var msg pbv2.HopMessage
	if proto.Unmarshal(raw[k:], &msg) != nil || msg.GetType() != pbv2.HopMessage_CONNECT {
		return ps
	}
	target, err := util.PeerToPeerInfoV2(msg.GetPeer())
	if err != nil {
		return ps
	}
	release, ok := c.take(ipKey(s.Conn().RemoteMultiaddr()), target.ID)
	if !ok {
		refuse(s, pbv2.Status_RESOURCE_LIMIT_EXCEEDED)
		return nil
	}
	ps.release = release
	return ps
}

// refuse answers a hop request with status and closes s, as go-libp2p's
// relay does.
func refuse(s network.Stream, status pbv2.Status) {
	s.SetWriteDeadline(time.Now().Add(hopTimeout))
	msg := &pbv2.HopMessage{Type: pbv2.HopMessage_STATUS.Enum(), Status: status.Enum()}
	if err := util.NewDelimitedWriter(s).WriteMsg(msg); err != nil {
		s.Reset()
		return
	}
	s.Close()
}

// peekedStream is a stream whose first bytes were read already: r
// replays them, then reads the stream. release, if set, runs once the
// stream is closed or reset.
type peekedStream struct {
	network.Stream
	r       io.Reader
	release func()
}

func (s *peekedStream) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *peekedStream) Close() error {
	err := s.Stream.Close()
	s.done()
	return err
}

func (s *peekedStream) Reset() error {
	err := s.Stream.Reset()
	s.done()
	return err
}

func (s *peekedStream) ResetWithError(code network.StreamErrorCode) error {
	err := s.Stream.ResetWithError(code)
	s.done()
	return err
}

func (s *peekedStream) done() {
	if s.release != nil {
		s.release()
	}
}

var errHopTooLarge = errors.New("relay: hop message too large")

// readDelimited reads one varint-delimited message from r and returns
// its bytes with the prefix, as read (so they can be replayed).
func readDelimited(r io.Reader) ([]byte, error) {
	var buf []byte
	b := make([]byte, 1)
	for {
		if _, err := io.ReadFull(r, b); err != nil {
			return buf, err
		}
		buf = append(buf, b[0])
		if b[0] < 0x80 {
			break
		}
		if len(buf) == binary.MaxVarintLen64 {
			return buf, errHopTooLarge
		}
	}
	n, k := binary.Uvarint(buf)
	if k <= 0 || n > maxHopMessage {
		return buf, errHopTooLarge
	}
	msg := make([]byte, n)
	k, err := io.ReadFull(r, msg)
	return append(buf, msg[:k]...), err
}

// ipKey is the source address of a peer's connection as the limits
// count it: the IPv4 address, or the IPv6 /64 (one subscriber usually
// holds a whole /64); the whole multiaddr if it has no IP.
func ipKey(a ma.Multiaddr) string {
	ip, err := manet.ToIP(a)
	if err != nil {
		return a.String()
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return a.String()
	}
	return (&ratelimit.ClientIP{}).KeyOf(addr.Unmap())
}
