package inbox

import (
	"context"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
)

// maxAckQueue bounds the acknowledgements waiting to be sent: an Ack
// waits while this many are queued.
const maxAckQueue = 4 * wire.MaxAckLines

// acker sends a user's acknowledgements to the gate in batches, one line
// each (wire.AckSubjectPrefix). Its goroutine runs while lines are
// queued: whenever it has some, it takes what is queued (up to the
// gate's bounds of a batch) and publishes it as one message. So an idle
// consumer's acknowledgement leaves at once, and a busy one sends one
// message for many. The queue is bounded: a line waits for room.
type acker struct {
	nc      *nats.Conn
	subject string

	mu      sync.Mutex
	room    *sync.Cond // signalled when lines leave the queue
	queue   []string   // lines, each ending in "\n"
	running bool
	idle    chan struct{} // closed while nothing is queued or being sent
}

func newAcker(nc *nats.Conn, me string) *acker {
	a := &acker{nc: nc, subject: wire.AckSubjectPrefix + me, idle: make(chan struct{})}
	a.room = sync.NewCond(&a.mu)
	close(a.idle)
	return a
}

// add queues the acknowledgement "<verb> <subject>", waiting for room in
// the queue. It fails only when the connection is closed; a batch that
// cannot be published later is lost like any message on a dropped
// connection (JetStream delivers it again after the ack wait).
func (a *acker) add(verb, subject string) error {
	if a.nc.IsClosed() {
		return nats.ErrConnectionClosed
	}
	line := verb + " " + subject + "\n"
	a.mu.Lock()
	for len(a.queue) >= maxAckQueue {
		a.room.Wait()
	}
	a.queue = append(a.queue, line)
	if !a.running {
		a.running = true
		a.idle = make(chan struct{})
		go a.run()
	}
	a.mu.Unlock()
	return nil
}

// run publishes batches until the queue is empty.
func (a *acker) run() {
	var buf []byte
	for {
		a.mu.Lock()
		if len(a.queue) == 0 {
			a.queue = nil // let a grown backing array go
			a.running = false
			close(a.idle)
			a.mu.Unlock()
			return
		}
		buf = buf[:0]
		n := 0
		for n < len(a.queue) && n < wire.MaxAckLines && len(buf)+len(a.queue[n]) <= wire.MaxAckBytes {
			buf = append(buf, a.queue[n]...)
			n++
		}
		if n == 0 { // a line longer than a batch: the gate would drop it
			n = 1
		}
		clear(a.queue[:n])
		a.queue = a.queue[n:]
		a.room.Broadcast()
		a.mu.Unlock()
		if len(buf) > 0 {
			_ = a.nc.Publish(a.subject, buf)
		}
	}
}

// handed returns a channel closed once nothing is queued or being sent.
func (a *acker) handed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.idle
}

// flush waits until what was queued is handed to the connection, then
// for the server to have read it (a round trip), or for ctx. While the
// connection is down it does not wait for it to come back: it returns
// nats.ErrConnectionReconnecting (what was queued is sent on reconnect if
// the connection's buffer held it).
func (a *acker) flush(ctx context.Context) error {
	select {
	case <-a.handed():
	case <-ctx.Done():
		return ctx.Err()
	}
	switch {
	case a.nc.IsClosed():
		return nats.ErrConnectionClosed
	case !a.nc.IsConnected():
		return nats.ErrConnectionReconnecting
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	return a.nc.FlushWithContext(ctx)
}
