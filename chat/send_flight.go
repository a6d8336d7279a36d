package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/wire"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// flight is one envelope being published: to one device.
type flight struct {
	p       *Pending
	msgID   MessageID
	device  kez.PublicKey
	pubID   string
	counts  bool // a copy to the recipient: p's outcome
	durable bool // kept in the outbox until answered
	// late: a copy that was due, sealed after its message was sent
	// (due.go): its outcome changes the message's state, not p's.
	late bool
	env  []byte
	// person and chain: the recipient person and their current devices as
	// the chain f was sealed with lists them; the publish carries their
	// digest (nil chain: no digest). restaled: published again once after
	// the gate found them stale (send_stale.go).
	person   kez.PublicKey
	chain    []kez.PublicKey
	restaled bool
}

// publishEnvelope publishes an envelope to f's device; the outcome is
// recorded once the stream answered. A publish that fails for the
// connection is tried again once it is back (awaitAck). If it cannot be
// sent at all (refused at once: too large, say) the outcome is recorded
// at once and the error returned.
func (c *Client) publishEnvelope(f *flight, env []byte) error {
	msg := nats.NewMsg(sendSubject(f.device, c.devKey))
	msg.Data = env
	msg.Header.Set(jetstream.MsgIDHeader, f.pubID)
	if f.chain != nil {
		msg.Header.Set(wire.Devices, devicesDigest(f.chain))
	}
	if f.durable {
		c.outgoing.add(f.msgID) // until copyDone recorded the outcome
	}
	fut, err := c.js.PublishMsgAsync(msg)
	if err != nil && !transient(err) {
		err = fmt.Errorf("chat: publishing message %s: %w", f.msgID, err)
		c.copyDone(f, nil, err)
		return err
	}
	c.sends.Add(1)
	go c.awaitAck(f, msg, fut, err)
	return nil
}

// republishPending publishes again the envelopes stored but not
// acknowledged by the stream (the client stopped before the answer came,
// or, after a reconnect, whose publish no longer waits for it): the same
// bytes with the same Nats-Msg-Id, so the stream, or the recipient, drops
// a copy it already has. A message key is never used to seal a second
// message. Messages this client is publishing now are left alone. The
// envelopes of a message to many devices (multi) go again as they went,
// by republishMulti.
func (c *Client) republishPending(ctx context.Context) error {
	rows, err := c.db.db.QueryContext(ctx, `SELECT msg_id, device, envelope, publish_id, counts FROM outbox WHERE multi = 0 ORDER BY created_at, rowid`)
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	type pending struct {
		id     MessageID
		to     kez.PublicKey
		env    []byte
		pubID  string
		counts bool
	}
	var ps []pending
	for rows.Next() {
		var p pending
		var id []byte
		var to string
		if err := rows.Scan(&id, &to, &p.env, &p.pubID, &p.counts); err != nil {
			rows.Close()
			return fmt.Errorf("chat: database: %w", err)
		}
		k, err := kez.ParsePublicKey(to)
		if err != nil || len(id) != len(p.id) {
			continue
		}
		copy(p.id[:], id)
		if c.outgoing.busy(p.id) {
			continue
		}
		p.to = k
		ps = append(ps, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	for _, rp := range ps {
		p := &Pending{c: c, done: make(chan struct{}), left: 1, sent: Sent{ID: rp.id, To: c.personOf(rp.to)}}
		f := &flight{p: p, msgID: rp.id, device: rp.to, pubID: rp.pubID, counts: true, durable: true}
		if !rp.counts {
			// A sent copy or a sync message: its outcome is nobody's.
			f.counts = false
			close(p.done)
		}
		if err := c.publishEnvelope(f, rp.env); err != nil {
			return err
		}
	}
	if len(ps) > 0 {
		c.log.Info("published again the messages left pending", "n", len(ps))
	}
	return nil
}

// awaitAck waits for the stream's acknowledgement of a publish (fut; or,
// if it could not be handed to the connection, its error). When none
// comes for a reason of the connection (it dropped and the pending acks
// were cancelled, a timeout, no responders or no stream leader after a
// reconnect), it publishes again with the same Nats-Msg-Id once the
// connection is back, after a growing pause, however long that takes:
// the message stays pending (queued) meanwhile, and the stream stores it
// once. A refusal records the failure. It gives up, the envelope left in
// the outbox, when the client stops taking work.
func (c *Client) awaitAck(f *flight, msg *nats.Msg, fut *inbox.Future, err error) {
	defer c.sends.Done()
	var delay time.Duration
	for {
		if fut != nil {
			select {
			case ack := <-fut.Ok():
				c.copyDone(f, ack, nil)
				return
			case err = <-fut.Err():
			case <-c.closing:
				c.copyDone(f, nil, c.unanswered(f))
				return
			}
			if !f.restaled && devicesChanged(err) {
				// The recipient's devices changed since their chain was
				// fetched: refresh it, have the new devices get the
				// message, and publish this copy again (once).
				f.restaled = true
				if !c.restale(f, msg) {
					c.copyDone(f, nil, fmt.Errorf("chat: message %s to %s: %w", f.msgID, f.device, ErrDeviceRevoked))
					return
				}
				if fut, err = c.js.PublishMsgAsync(msg); err == nil {
					continue
				}
			}
		}
		if !transient(err) {
			select {
			case <-c.closing:
				// Closed while the publish was retried: the outcome is
				// unknown.
				c.copyDone(f, nil, c.unanswered(f))
			default:
				c.copyDone(f, nil, fmt.Errorf("chat: the stream did not store message %s: %w", f.msgID, refusal(err)))
			}
			return
		}
		if f.counts && !f.late && !f.p.queued.Swap(true) {
			c.log.Debug("a message waits for the connection to NATS", "id", f.msgID, "err", err)
		}
		if !c.waitToRetry(context.Background(), &delay) {
			c.copyDone(f, nil, c.unanswered(f))
			return
		}
		fut, err = c.js.PublishMsgAsync(msg)
	}
}

// unanswered is the outcome of f when the client stops before the stream
// answered: unknown (the stream may have stored it); it stays pending,
// published again when a client of the state folder next connects.
func (c *Client) unanswered(f *flight) error {
	err := fmt.Errorf("chat: message %s: %w before the stream acknowledged it", f.msgID, ErrClosed)
	if f.p.queued.Load() {
		err = fmt.Errorf("%w (%w)", err, ErrQueued)
	}
	return err
}

// errCodeDuplicateInProcess is JetStream's answer to a publish whose
// Nats-Msg-Id the stream is still storing from an earlier publish (a
// republish after a reconnect, on a clustered stream): the message is on
// its way, not refused.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// streamBusy reports JetStream's "duplicate message id is in process" and
// "no response from stream" (no stream leader answered: an election).
func streamBusy(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == errCodeDuplicateInProcess || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// retryable reports a publish error after which the same message may be
// published again: the stream may or may not have it, and Nats-Msg-Id makes
// a second copy harmless.
func retryable(err error) bool {
	return errors.Is(err, jetstream.ErrAsyncPublishTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrDisconnected) || errors.Is(err, nats.ErrConnectionReconnecting)
}

// copyDone records the outcome of one envelope: it leaves the outbox
// (unless the client closed before the stream answered: it is published
// again at the next start), and for a copy to the recipient the message's
// state in the history becomes sent (the stream stored a copy) or failed
// (no copy to the recipient is left and none was stored); then f's
// Pending learns it.
func (c *Client) copyDone(f *flight, ack *jetstream.PubAck, err error) {
	if !f.durable || errors.Is(err, ErrClosed) {
		if f.durable {
			c.outgoing.done(f.msgID)
		}
		f.p.copyFinished(f, ack, err)
		return
	}
	c.db.writeAsync(func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM outbox WHERE msg_id = ? AND device = ? AND publish_id = ?`, f.msgID[:], f.device.String(), f.pubID); err != nil {
			return fmt.Errorf("chat: recording the outcome of message %s: %w", f.msgID, err)
		}
		if !f.counts {
			return nil
		}
		var err error
		if ack != nil {
			_, err = tx.Exec(`UPDATE messages SET state = 'sent', stream_seq = CASE WHEN state = 'sent' AND stream_seq != 0 THEN stream_seq ELSE ? END
				WHERE from_key = ? AND id = ? AND incoming = 0`, int64(ack.Sequence), c.me.String(), f.msgID[:])
		} else {
			_, err = tx.Exec(`UPDATE messages SET state = 'failed' WHERE from_key = ? AND id = ? AND incoming = 0 AND state = 'pending'
				AND NOT EXISTS (SELECT 1 FROM outbox WHERE msg_id = ? AND counts = 1)`, c.me.String(), f.msgID[:], f.msgID[:])
		}
		if err != nil {
			return fmt.Errorf("chat: recording the outcome of message %s: %w", f.msgID, err)
		}
		return nil
	}, func(werr error) {
		if werr != nil && err == nil {
			c.log.Warn("the stream stored a message but recording that in the history failed", "id", f.msgID, "err", werr)
		}
		c.outgoing.done(f.msgID)
		f.p.copyFinished(f, ack, err)
	})
}
