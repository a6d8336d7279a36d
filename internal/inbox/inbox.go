// Package inbox is a user's side of the chat-server's gate: it asks the
// gate for the user's consumer, sends pull requests and acknowledges
// what they deliver. A user reaches the inbox stream only this way: it
// asks the gate to make its consumer (kez.v1.consumer.<key>), sends pull
// requests (kez.v1.pull.<key>) naming a token, and receives what they
// deliver on kez.v1.deliver.<key>.<token>, a subject only it may
// subscribe to. Acknowledgements go to the gate too, in batches
// (kez.v1.ack.<key>, one line each naming the delivery's reply subject),
// which checks each and passes it on to JetStream. See docs/spec/chat.md.
// Package chat and the benchmarks use it.
package inbox

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// pullExpires is how long one pull of [Puller.Consume] waits for messages.
const pullExpires = 30 * time.Second

// noWaitGrace is how long a Fetch of what is waiting also waits for what
// the stream stored just before.
const noWaitGrace = 50 * time.Millisecond

// pullHeartbeat is the idle heartbeat of Consume's pulls: a pull that hears
// nothing for twice as long is asked again (the connection may have
// dropped it).
const pullHeartbeat = 5 * time.Second

// Puller sends pull requests for one user and hands out what they
// deliver; what it delivers is acknowledged through the gate, in batches
// (see [Puller.FlushAcks]). It is safe for concurrent use; each pull has
// its own token.
type Puller struct {
	nc     *nats.Conn
	me     string // the user's key
	stream string
	ackPre string // $JS.ACK.<stream>.<me>.: how this user's deliveries' replies start
	next   atomic.Uint64
	base   string // unique per puller: tokens are base + counter
	acks   *acker
}

// NewPuller returns a Puller for the user with key me (its "U…" form),
// logged in on nc, and the inbox stream's name.
func NewPuller(nc *nats.Conn, me, stream string) *Puller {
	return &Puller{nc: nc, me: me, stream: stream, ackPre: "$JS.ACK." + stream + "." + me + ".", base: rand.Text()[:12], acks: newAcker(nc, me)}
}

// FlushAcks waits until the acknowledgements of this Puller's deliveries
// made so far are sent to the gate and the server has read them (a round
// trip on the connection; with no deadline in ctx, up to 10 s), or for
// ctx. The gate confirms nothing: this is as sure as an acknowledgement
// gets.
func (p *Puller) FlushAcks(ctx context.Context) error { return p.acks.flush(ctx) }

// AcksHanded returns a channel closed once the acknowledgements queued so
// far are handed to the connection (whose Close still sends what it
// buffered); it does not wait on the server.
func (p *Puller) AcksHanded() <-chan struct{} { return p.acks.handed() }

// pull is one pull request in flight: its deliveries arrive on ch.
type pull struct {
	sub *nats.Subscription
	ch  chan *nats.Msg
}

// start subscribes to a fresh deliver subject and sends a pull request
// for batch messages.
func (p *Puller) start(batch int, noWait bool, expires, heartbeat time.Duration) (*pull, error) {
	token := p.base + strconv.FormatUint(p.next.Add(1), 10)
	ch := make(chan *nats.Msg, batch+8)
	sub, err := p.nc.ChanSubscribe(wire.DeliverSubjectPrefix+p.me+"."+token, ch)
	if err != nil {
		return nil, err
	}
	body, _ := json.Marshal(wire.PullRequest{
		Batch: batch, NoWait: noWait, Expires: int64(expires), Heartbeat: int64(heartbeat), Deliver: token,
	})
	if err := p.nc.Publish(wire.PullSubjectPrefix+p.me, body); err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	return &pull{sub: sub, ch: ch}, nil
}

func (pl *pull) stop() { pl.sub.Unsubscribe() }

// pullStatus classifies a status message of a pull: done is true when
// the pull is over (no messages, expired, or refused by the server).
func pullStatus(m *nats.Msg) (status string, done bool) {
	status = m.Header.Get("Status")
	switch status {
	case "":
		return "", false
	case "100": // idle heartbeat, or flow control
		return status, false
	default: // 404 no messages, 408 expired, 409 and others: the pull is over
		return status, true
	}
}

// Fetch pulls up to batch messages: those waiting now when wait is 0,
// else it waits up to wait for the first. It returns what was delivered
// (status messages and stray messages filtered out).
func (p *Puller) Fetch(ctx context.Context, batch int, wait time.Duration) ([]jetstream.Msg, error) {
	noWait := wait <= 0
	expires := wait
	if noWait {
		// The stream signals a stored message to its consumers a moment
		// after acknowledging it: a pull that asked "nothing waiting?"
		// right after a send could miss it. With a short expiry it is
		// delivered; an empty inbox costs that expiry.
		expires = noWaitGrace
	}
	pl, err := p.start(batch, noWait, expires, 0)
	if err != nil {
		return nil, err
	}
	defer pl.stop()
	// The gate answers nothing to a pull; a pull it never passed on ends
	// at the timer.
	timer := time.NewTimer(expires + 5*time.Second)
	defer timer.Stop()
	var out []jetstream.Msg
	for len(out) < batch {
		select {
		case m := <-pl.ch:
			if _, done := pullStatus(m); done {
				return out, nil
			}
			if d := p.delivery(m); d != nil {
				out = append(out, d)
			}
		case <-timer.C:
			if len(out) > 0 || !noWait {
				return out, nil
			}
			return nil, ErrNoAnswer
		case <-ctx.Done():
			return out, ctx.Err()
		}
	}
	return out, nil
}

// delivery wraps a message a pull delivered, or returns nil for one that
// is not from this user's consumer (a stray message: only the stream may
// deliver here, but a client checks what it acknowledges).
func (p *Puller) delivery(m *nats.Msg) *delivery {
	if m.Header.Get("Status") != "" || !strings.HasPrefix(m.Reply, p.ackPre) {
		return nil
	}
	return &delivery{m: m, p: p}
}

// delivery is a message from the inbox stream, acknowledged through the
// gate: its acknowledgements are queued on the Puller's batcher, which
// sends them to kez.v1.ack.<me> (a nil error means queued, not
// delivered). It implements jetstream.Msg: once Ack, Nak or Term (in any
// form) was queued, the next returns jetstream.ErrMsgAlreadyAckd;
// InProgress may be repeated until then.
type delivery struct {
	m *nats.Msg
	p *Puller

	mu   sync.Mutex
	ackd bool
}

var _ jetstream.Msg = (*delivery)(nil)

func (d *delivery) Data() []byte         { return d.m.Data }
func (d *delivery) Headers() nats.Header { return d.m.Header }
func (d *delivery) Subject() string      { return d.m.Subject }
func (d *delivery) Reply() string        { return d.m.Reply }
func (d *delivery) Ack() error           { return d.ack(wire.AckVerbAck, true) }
func (d *delivery) Nak() error           { return d.ack(wire.AckVerbNak, true) }
func (d *delivery) InProgress() error    { return d.ack(wire.AckVerbProgress, false) }
func (d *delivery) Term() error          { return d.ack(wire.AckVerbTerm, true) }

// ack queues the acknowledgement verb; final marks the delivery as
// acknowledged.
func (d *delivery) ack(verb string, final bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ackd {
		return jetstream.ErrMsgAlreadyAckd
	}
	if err := d.p.acks.add(verb, d.m.Reply); err != nil {
		return err
	}
	d.ackd = final
	return nil
}

// DoubleAck acknowledges and flushes the acknowledgements queued
// ([Puller.FlushAcks]); the gate does not confirm acknowledgements.
func (d *delivery) DoubleAck(ctx context.Context) error {
	if err := d.Ack(); err != nil {
		return err
	}
	return d.p.FlushAcks(ctx)
}

// NakWithDelay asks for redelivery after delay (at once when delay is
// not positive).
func (d *delivery) NakWithDelay(delay time.Duration) error {
	if delay <= 0 {
		return d.Nak()
	}
	return d.ack(wire.AckVerbNak+" "+delay.String(), true)
}

// TermWithReason stops redelivery. The reason stays here: the gate
// passes on none (JetStream would only log it).
func (d *delivery) TermWithReason(string) error { return d.Term() }

// Metadata parses the acknowledgement subject:
// $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>,
// or the longer form with a domain and an account hash before the stream.
func (d *delivery) Metadata() (*jetstream.MsgMetadata, error) {
	tok := strings.Split(d.m.Reply, ".")
	switch len(tok) {
	case 9:
	case 12:
		tok = append(tok[:2:2], tok[4:11]...) // drop domain and account hash
	default:
		return nil, jetstream.ErrNotJSMessage
	}
	n := func(i int) uint64 { v, _ := strconv.ParseUint(tok[i], 10, 64); return v }
	md := &jetstream.MsgMetadata{
		Stream: tok[2], Consumer: tok[3], NumDelivered: n(4), NumPending: n(8),
		Timestamp: time.Unix(0, int64(n(7))),
	}
	md.Sequence.Stream, md.Sequence.Consumer = n(5), n(6)
	return md, nil
}

// Consumer is a running [Puller.Consume].
type Consumer struct {
	stop   chan struct{}
	closed chan struct{}
}

// Drain stops asking for more; what was delivered is still handed on,
// and the acknowledgements queued by then are handed to the connection,
// before Closed is closed.
func (cs *Consumer) Drain() {
	select {
	case <-cs.stop:
	default:
		close(cs.stop)
	}
}

// Closed is closed once the consumer handed on its last message.
func (cs *Consumer) Closed() <-chan struct{} { return cs.closed }

// Consume keeps one pull of batch messages open at a time and hands every
// delivery to handler, in order, until Drain. A pull that ends (batch
// delivered, expired, refused) is followed by the next; one that hears
// nothing, not even a heartbeat, for twice the heartbeat interval, or
// that a reconnect may have lost (reconnected), is replaced.
func (p *Puller) Consume(batch int, reconnected func() <-chan struct{}, handler func(jetstream.Msg), onErr func(error)) *Consumer {
	cs := &Consumer{stop: make(chan struct{}), closed: make(chan struct{})}
	go func() {
		defer close(cs.closed)
		// Runs before closed is closed: what the handler acknowledged is
		// handed to the connection (the acker never waits on the server).
		defer func() { <-p.acks.handed() }()
		var pl *pull
		defer func() {
			if pl != nil {
				pl.stop()
			}
		}()
		got := 0
		idle := time.NewTimer(2 * pullHeartbeat)
		defer idle.Stop()
		for {
			if pl == nil {
				var err error
				if pl, err = p.start(batch, false, pullExpires, pullHeartbeat); err != nil {
					onErr(err)
					pl = nil
					select {
					case <-cs.stop:
						return
					case <-reconnected():
					case <-time.After(pullHeartbeat):
					}
					continue
				}
				got = 0
				idle.Reset(2 * pullHeartbeat)
			}
			select {
			case <-cs.stop:
				pl.stop()
				for {
					select {
					case m := <-pl.ch:
						if d := p.delivery(m); d != nil {
							handler(d)
						}
					default:
						pl = nil
						return
					}
				}
			case m := <-pl.ch:
				idle.Reset(2 * pullHeartbeat)
				if status, done := pullStatus(m); status != "" {
					if done {
						if status != "404" && status != "408" {
							onErr(fmt.Errorf("inbox: the stream ended a pull: %s %s", status, m.Header.Get("Description")))
						}
						pl.stop()
						pl = nil
					}
					continue
				}
				if d := p.delivery(m); d != nil {
					handler(d)
				}
				if got++; got >= batch {
					pl.stop()
					pl = nil
				}
			case <-idle.C:
				pl.stop()
				pl = nil
			case <-reconnected():
				pl.stop()
				pl = nil
			}
		}
	}()
	return cs
}

// ErrNoAnswer: the chat-server's gate did not answer (it may be down).
var ErrNoAnswer = errors.New("inbox: the chat-server did not answer")

// Info is what the gate tells of a user's consumer.
type Info struct {
	Pending    uint64 `json:"num_pending"`     // stored, not yet delivered
	AckPending uint64 `json:"num_ack_pending"` // delivered, not yet acknowledged
}

// openAttempt bounds one consumer request: the gate answers within the
// import's response threshold (5 s) or nats-server drops the way back.
const openAttempt = 6 * time.Second

// Open asks the gate to make the consumer of the user with key me (or
// update it to ackWait, when not zero) and returns what it holds. A
// request that gets no answer in time, or that the gate answers
// "unavailable" (JetStream busy, say electing a leader), is asked again
// until ctx ends. A refusal is returned as a *jetstream.APIError.
func Open(ctx context.Context, nc *nats.Conn, me string, ackWait time.Duration) (Info, error) {
	a, err := ask(ctx, nc, me, ackWait, false)
	return a.Info, err
}

// Devices asks the gate, with a consumer request of the user with key
// me (its header wire.Devices), when each current device of the user's
// person was last seen. It is asked again, and refused, as Open is. A
// gate of an earlier release answers without the list: nil.
func Devices(ctx context.Context, nc *nats.Conn, me string) ([]wire.DeviceSeen, error) {
	a, err := ask(ctx, nc, me, 0, true)
	return a.Devices, err
}

// answer is the gate's answer to a consumer request.
type answer struct {
	Info
	Devices []wire.DeviceSeen   `json:"devices"`
	Error   *jetstream.APIError `json:"error"`
}

func ask(ctx context.Context, nc *nats.Conn, me string, ackWait time.Duration, devices bool) (answer, error) {
	for pause := 100 * time.Millisecond; ; pause = min(2*pause, 2*time.Second) {
		a, err := askOnce(ctx, nc, me, ackWait, devices)
		var apiErr *jetstream.APIError
		retry := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
			errors.As(err, &apiErr) && apiErr.ErrorCode == wire.ErrCodeUnavailable
		if !retry || ctx.Err() != nil {
			return a, err
		}
		select {
		case <-ctx.Done():
			return a, err
		case <-time.After(pause):
		}
	}
}

func askOnce(ctx context.Context, nc *nats.Conn, me string, ackWait time.Duration, devices bool) (answer, error) {
	req := nats.NewMsg(wire.ConsumerSubjectPrefix + me)
	if ackWait > 0 {
		req.Header.Set(wire.AckWait, ackWait.String())
	}
	if devices {
		req.Header.Set(wire.Devices, "1")
	}
	actx, cancel := context.WithTimeout(ctx, openAttempt)
	defer cancel()
	resp, err := nc.RequestMsgWithContext(actx, req)
	if err != nil {
		return answer{}, err
	}
	var r answer
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return answer{}, fmt.Errorf("inbox: the gate's answer: %w", err)
	}
	if r.Error != nil {
		return answer{}, r.Error
	}
	return r, nil
}
