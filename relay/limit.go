package relay

import (
	"context"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/proto"
	"golang.org/x/time/rate"
)

// Directions of kez_relay_bytes_total: from the peer that connects
// through the relay to the peer that holds the reservation, and back.
const (
	dirToTarget   = "to_target"
	dirFromTarget = "from_target"
)

// limitedHost is the host handed to go-libp2p's relay service: the
// streams it relays (the connecting peer's hop stream, which it gets
// through SetStreamHandler, and the stop stream to the target, which it
// opens with NewStream) are read through the limiter, which counts their
// bytes and holds each direction of a circuit, and all of them together,
// to the configured rates. go-libp2p copies a circuit by reading one
// stream and writing the other, so limiting reads limits the circuit.
type limitedHost struct {
	host.Host
	lim   *limiter
	slots *circuitSlots // the hop protocol's requests to connect
}

// SetStreamHandler wraps each incoming stream before handler sees it,
// and holds a request to connect from an address over its circuit
// limits ([circuitSlots]).
func (h limitedHost) SetStreamHandler(pid protocol.ID, handler network.StreamHandler) {
	h.Host.SetStreamHandler(pid, func(s network.Stream) {
		s = h.lim.wrap(s, dirToTarget)
		if pid == proto.ProtoIDv2Hop {
			if s = h.slots.admit(s); s == nil {
				return
			}
		}
		handler(s)
	})
}

// NewStream wraps the stream it opens.
func (h limitedHost) NewStream(ctx context.Context, p peer.ID, pids ...protocol.ID) (network.Stream, error) {
	s, err := h.Host.NewStream(ctx, p, pids...)
	if err != nil {
		return nil, err
	}
	return h.lim.wrap(s, dirFromTarget), nil
}

// limiter holds the rates: per circuit direction (each wrapped stream
// gets its own bucket) and in total (one bucket shared by all).
type limiter struct {
	ctx         context.Context // ends when the relay closes, ending waits
	circuitRate rate.Limit
	total       *rate.Limiter // nil: no total limit
	metrics     *metrics
}

func newLimiter(ctx context.Context, circuitRate, totalRate int64, m *metrics) *limiter {
	l := &limiter{ctx: ctx, circuitRate: rate.Inf, metrics: m}
	if circuitRate > 0 {
		l.circuitRate = rate.Limit(circuitRate)
	}
	if totalRate > 0 {
		l.total = rate.NewLimiter(rate.Limit(totalRate), burst(totalRate))
	}
	return l
}

// burst is a bucket's size for rate r: a copy buffer's worth, so every
// read fits, or a tenth of a second at r if more.
func burst(r int64) int { return int(max(bufferSize, r/10)) }

// wrap returns s read through the limits.
func (l *limiter) wrap(s network.Stream, dir string) network.Stream {
	ls := &limitedStream{Stream: s, lim: l, bytes: l.metrics.bytes.WithLabelValues(dir)}
	if l.circuitRate != rate.Inf {
		ls.circuit = rate.NewLimiter(l.circuitRate, burst(int64(l.circuitRate)))
	}
	return ls
}

// limitedStream is a stream whose reads are counted and held to the
// rates.
type limitedStream struct {
	network.Stream
	lim     *limiter
	circuit *rate.Limiter // nil: no per-circuit limit
	bytes   interface{ Add(float64) }
}

// Read reads at most a bucket's worth, then waits until both buckets
// allow what was read.
func (s *limitedStream) Read(p []byte) (int, error) {
	if s.circuit != nil && len(p) > s.circuit.Burst() {
		p = p[:s.circuit.Burst()]
	}
	if s.lim.total != nil && len(p) > s.lim.total.Burst() {
		p = p[:s.lim.total.Burst()]
	}
	n, err := s.Stream.Read(p)
	if n > 0 {
		s.bytes.Add(float64(n))
		s.wait(n)
	}
	return n, err
}

// wait holds the reader until n bytes fit both buckets, or the relay
// closes.
func (s *limitedStream) wait(n int) {
	now := time.Now()
	var d time.Duration
	for _, b := range []*rate.Limiter{s.circuit, s.lim.total} {
		if b == nil {
			continue
		}
		d = max(d, b.ReserveN(now, n).DelayFrom(now))
	}
	if d <= 0 {
		return
	}
	s.lim.metrics.rateLimited.Add(d.Seconds())
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.lim.ctx.Done():
	}
}
