package inbox

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrTooManyPending: a send found maxPending sends waiting for their
// answers for longer than the stall wait.
var ErrTooManyPending = errors.New("inbox: too many sends waiting for the stream's answer")

// DefaultStallWait is how long a send waits for room among the pending
// ones unless [Publisher.StallWait] says otherwise.
const DefaultStallWait = time.Second

// Publisher sends messages to the gate (kez.v1.send.<to>.<me>), each with
// its own reply subject _INBOX.<me>.<publisher>.<token>, and matches the
// answers: the stream's acknowledgement, or the gate's refusal as a
// *jetstream.APIError. A send crosses to the gate as a stream, so neither
// nats-server nor the gate keeps anything per send but the stream's own
// answer. (Any JetStream client's publish works as well: this one adds a
// stall wait and fails pending sends when the connection drops.) It is
// safe for concurrent use.
type Publisher struct {
	// OnError, if set (before the first send), is also told every send
	// that failed, as nats.go's asynchronous error handler is.
	OnError func(error)
	// StallWait, if set (before the first send), replaces
	// [DefaultStallWait].
	StallWait time.Duration

	nc      *nats.Conn
	prefix  string // _INBOX.<me>.<random>.
	next    atomic.Uint64
	timeout time.Duration
	room    chan struct{}
	sub     *nats.Subscription
	status  chan nats.Status

	mu      sync.Mutex
	pending map[string]*Future
	idle    chan struct{} // closed while nothing is pending
	closed  bool
}

// Future is a send waiting for its answer: exactly one of Ok and Err
// delivers, once.
type Future struct {
	token string
	ok    chan *jetstream.PubAck
	err   chan error
	timer *time.Timer
}

// Ok delivers the stream's acknowledgement.
func (f *Future) Ok() <-chan *jetstream.PubAck { return f.ok }

// Err delivers a refusal (*jetstream.APIError), jetstream.ErrAsyncPublishTimeout
// when no answer came in time, or nats.ErrDisconnected when the connection
// dropped while it waited (the answer may be lost: send again with the
// same Nats-Msg-Id).
func (f *Future) Err() <-chan error { return f.err }

// NewPublisher subscribes to the answers of the user with key me (its
// "U…" form) on nc. At most maxPending sends wait at once; one waits at
// most timeout for its answer.
func NewPublisher(nc *nats.Conn, me string, maxPending int, timeout time.Duration) (*Publisher, error) {
	p := &Publisher{
		nc: nc, prefix: wire.ReplyPrefix + me + "." + rand.Text()[:12] + ".", timeout: timeout,
		room: make(chan struct{}, maxPending), pending: map[string]*Future{}, idle: make(chan struct{}),
	}
	close(p.idle)
	sub, err := nc.Subscribe(p.prefix+"*", p.onAnswer)
	if err != nil {
		return nil, err
	}
	// Others can drop junk here (users may answer each other's
	// requests): bounded, and ignored unless the token is a pending
	// send's.
	sub.SetPendingLimits(1<<16, 64<<20)
	p.sub = sub
	// Answers lost while the connection was down never come: fail the
	// sends waiting then, so that they are sent again.
	p.status = nc.StatusChanged(nats.DISCONNECTED, nats.RECONNECTING, nats.CLOSED)
	go p.watch()
	return p, nil
}

func (p *Publisher) watch() {
	for st := range p.status {
		p.failAll(nats.ErrDisconnected)
		if st == nats.CLOSED {
			return
		}
	}
}

// PublishMsgAsync sends m (its subject a send subject of this user; set
// Nats-Msg-Id) and returns its Future. It waits up to the stall wait for
// room when maxPending sends are waiting.
func (p *Publisher) PublishMsgAsync(m *nats.Msg) (*Future, error) {
	wait := p.StallWait
	if wait <= 0 {
		wait = DefaultStallWait
	}
	select {
	case p.room <- struct{}{}:
	default:
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case p.room <- struct{}{}:
		case <-t.C:
			return nil, ErrTooManyPending
		}
	}
	f := &Future{token: strconv.FormatUint(p.next.Add(1), 10), ok: make(chan *jetstream.PubAck, 1), err: make(chan error, 1)}
	f.timer = time.AfterFunc(p.timeout, func() { p.complete(f.token, nil, jetstream.ErrAsyncPublishTimeout) })
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		f.timer.Stop()
		<-p.room
		return nil, nats.ErrConnectionClosed
	}
	if len(p.pending) == 0 {
		p.idle = make(chan struct{})
	}
	p.pending[f.token] = f
	p.mu.Unlock()
	m.Reply = p.prefix + f.token
	if err := p.nc.PublishMsg(m); err != nil {
		if p.take(f.token) != nil {
			f.timer.Stop()
		}
		return nil, err
	}
	return f, nil
}

// PublishAsyncComplete is closed once no send is waiting for its answer.
func (p *Publisher) PublishAsyncComplete() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.idle
}

// Close stops listening; sends still waiting fail with
// nats.ErrConnectionClosed.
func (p *Publisher) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.sub.Unsubscribe()
	p.failAll(nats.ErrConnectionClosed)
}

func (p *Publisher) onAnswer(m *nats.Msg) {
	token := m.Subject[len(p.prefix):]
	if m.Header.Get("Status") == "503" { // nats-server: nothing takes sends
		p.complete(token, nil, nats.ErrNoResponders)
		return
	}
	var r struct {
		jetstream.PubAck
		Error *jetstream.APIError `json:"error"`
	}
	switch err := json.Unmarshal(m.Data, &r); {
	case err != nil:
		p.complete(token, nil, err)
	case r.Error != nil:
		p.complete(token, nil, r.Error)
	default:
		ack := r.PubAck
		p.complete(token, &ack, nil)
	}
}

// take removes the send of token from the pending ones.
func (p *Publisher) take(token string) *Future {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.pending[token]
	if f == nil {
		return nil
	}
	delete(p.pending, token)
	if len(p.pending) == 0 {
		close(p.idle)
	}
	<-p.room
	return f
}

func (p *Publisher) complete(token string, ack *jetstream.PubAck, err error) {
	f := p.take(token)
	if f == nil {
		return // answered already, or a stray answer
	}
	f.timer.Stop()
	if err != nil {
		if p.OnError != nil {
			p.OnError(err)
		}
		f.err <- err
	} else {
		f.ok <- ack
	}
}

func (p *Publisher) failAll(err error) {
	p.mu.Lock()
	tokens := make([]string, 0, len(p.pending))
	for t := range p.pending {
		tokens = append(tokens, t)
	}
	p.mu.Unlock()
	for _, t := range tokens {
		p.complete(t, nil, err)
	}
}
