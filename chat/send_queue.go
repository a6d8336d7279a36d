package chat

// Offline queueing (docs/spec/chat.md §3). A message is stored, sealed,
// before it is published; a publish that fails because of the connection
// (NATS away, the stream not answering yet after a reconnect) leaves it
// pending, and it is published again, the same bytes and Nats-Msg-Id,
// once the connection is back: by the publish still waiting for it
// (awaitAck, SendGroup), else by the outbox loop, which goes over what is
// left in the outboxes after each reconnect. Only a refusal (the gate's or
// the stream's) fails a message.

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The pause before a publish that failed for the connection is tried
// again, once connected: doubling from retryDelayMin to retryDelayMax
// (a JetStream leader election takes 4–9 s in nats-server).
const (
	retryDelayMin = 250 * time.Millisecond
	retryDelayMax = 5 * time.Second
)

// nextRetryDelay is the pause after d: doubled, within retryDelayMin
// and retryDelayMax.
func nextRetryDelay(d time.Duration) time.Duration {
	return min(max(d*2, retryDelayMin), retryDelayMax)
}

// JetStream's answers while it starts or has no quorum.
const (
	errCodeClusterNotAvailable jetstream.ErrorCode = 10008
)

// transient reports a publish error caused by the connection or by the
// stream not being there for a moment, not by the message: the same
// envelope may be published again later (Nats-Msg-Id makes a second copy
// harmless), and the message stays pending meanwhile.
func transient(err error) bool {
	if err == nil {
		return false
	}
	if retryable(err) || streamBusy(err) {
		return true
	}
	switch {
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionDraining),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrNoServers),
		errors.Is(err, nats.ErrStaleConnection), errors.Is(err, inbox.ErrTooManyPending),
		errors.Is(err, context.DeadlineExceeded):
		return true
	}
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode {
		case jetstream.ErrorCode(wire.ErrCodeUnavailable), errCodeClusterNotAvailable,
			jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return true
		}
	}
	return false
}

// waitToRetry waits until a publish that failed for the connection may
// be tried again: until the connection is back, if it is down, then for
// *delay (which it grows). It reports false once ctx ends or the client
// stops taking work (Shutdown, Close): the envelope stays in its outbox.
func (c *Client) waitToRetry(ctx context.Context, delay *time.Duration) bool {
	*delay = nextRetryDelay(*delay)
	recon := c.nextReconnect()
	if !c.nc.IsConnected() {
		select {
		case <-recon:
		case <-ctx.Done():
			return false
		case <-c.work.Stopped():
			return false
		case <-c.closing:
			return false
		}
	}
	t := time.NewTimer(*delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
	case <-c.work.Stopped():
	case <-c.closing:
	}
	return false
}

// outgoing counts, per message, the publishes of its stored envelopes
// under way in this client, which the outbox loop leaves alone.
type outgoing struct {
	mu    sync.Mutex
	n     map[MessageID]int
	idles map[MessageID]chan struct{} // closed when n[id] drops to 0
	kick  chan struct{}               // wakes the outbox loop
}

func (o *outgoing) add(id MessageID) {
	o.mu.Lock()
	if o.n == nil {
		o.n = map[MessageID]int{}
	}
	o.n[id]++
	o.mu.Unlock()
}

func (o *outgoing) done(id MessageID) {
	o.mu.Lock()
	if o.n[id]--; o.n[id] <= 0 {
		delete(o.n, id)
		if ch, ok := o.idles[id]; ok {
			close(ch)
			delete(o.idles, id)
		}
	}
	o.mu.Unlock()
}

// idle returns a channel closed once no publish of id is under way in
// this client (at once if none is).
func (o *outgoing) idle(id MessageID) <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.n[id] <= 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if o.idles == nil {
		o.idles = map[MessageID]chan struct{}{}
	}
	ch, ok := o.idles[id]
	if !ok {
		ch = make(chan struct{})
		o.idles[id] = ch
	}
	return ch
}

func (o *outgoing) busy(id MessageID) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.n[id] > 0
}

// kickOutbox has the outbox loop go over the outboxes: something was left
// there for the connection.
func (c *Client) kickOutbox() {
	select {
	case c.outgoing.kick <- struct{}{}:
	default:
	}
}

// outboxLoop publishes again, after each reconnect (or a kick), what is
// left in the outboxes and no publish of this client is under way for,
// as republishPending and republishGroups do at the start; while some of
// it fails for the connection again, it tries again after a growing
// pause.
func (c *Client) outboxLoop(ctx context.Context) {
	var delay time.Duration
	retry := false
	for {
		recon := c.nextReconnect()
		var again <-chan time.Time
		var t *time.Timer
		if retry {
			t = time.NewTimer(delay)
			again = t.C
		}
		stop := false
		select {
		case <-recon:
			delay = 0
		case <-c.outgoing.kick:
		case <-again:
		case <-ctx.Done():
			stop = true
		case <-c.bg.Stopped():
			stop = true
		}
		if t != nil {
			t.Stop()
		}
		if stop {
			return
		}
		if !c.nc.IsConnected() {
			retry = false // the reconnect wakes it
			continue
		}
		if !c.work.Enter() {
			return
		}
		if err := c.republishPending(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("publishing again the messages left pending", "err", err)
		}
		retry = c.republishGroups(ctx)
		c.work.Leave()
		delay = nextRetryDelay(delay)
	}
}
