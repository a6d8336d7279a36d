package chat

// One pairwise message to many devices (docs/spec/chat.md §10.3): a
// group key or a group-update is sealed in each device's session, and the
// envelopes go to the gate together, a payload per recipient, in as few
// multi-recipient sends as the connection allows. Like any durable
// envelope, each waits in the outbox from the transaction that sealed it
// until the gate answered for it; what a crash left there is published
// again, the same bytes with the same IDs, when the client next connects.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// fanOutPlans bounds the devices whose sealing is planned at once (a plan
// may fetch the device's prekey).
const fanOutPlans = 16

// fanOutTx bounds the envelopes sealed in one transaction, so that
// receiving is not held up behind a group of a thousand devices.
const fanOutTx = 256

// fanOutcome is what became of a message sent to many devices.
type fanOutcome struct {
	// sealed are the devices an envelope was sealed to (and stored);
	// the others could not be (no session, no prekey and no format 1
	// for it: logged).
	sealed []kez.PublicKey
	// answer is the gate's, for the devices whose copy it answered for.
	answer wire.MultiAnswer
	// unknown are the devices whose copy was sent without an answer: it
	// stays in the outbox.
	unknown []kez.PublicKey
}

// fanOut seals m (a message of a kind not kept in the history) to each
// target, of any persons, and publishes the envelopes: sealFan, then
// publishFan.
func (c *Client) fanOut(ctx context.Context, targets []target, m Message, inTx func(tx *sql.Tx, sealed []kez.PublicKey) error) (fanOutcome, error) {
	m.ID = NewMessageID()
	c.outgoing.add(m.ID)
	defer c.outgoing.done(m.ID)
	id, copies, err := c.sealFan(ctx, targets, m, inTx)
	if err != nil || len(copies) == 0 {
		return fanOutcome{}, err
	}
	out, err := c.publishFan(ctx, id, copies)
	if len(out.unknown) > 0 {
		defer c.kickOutbox() // once no longer busy: published again
	}
	return out, err
}

// sealFan seals m to each target in its pairwise session (or a new one,
// or format 1 for a peer without a prekey, as any send: planSeal), under
// one message ID (m's, or a new one), and returns the ID and the envelopes. Each
// transaction that seals envelopes stores them in the outbox (multi) and
// runs inTx with the devices it sealed to, so what inTx records holds
// exactly when the envelopes will be published. A target that cannot be
// sealed to is left out (logged).
func (c *Client) sealFan(ctx context.Context, targets []target, m Message, inTx func(tx *sql.Tx, sealed []kez.PublicKey) error) (MessageID, []wire.MultiCopy, error) {
	if c.nc == nil {
		return MessageID{}, nil, ErrOffline
	}
	if len(targets) == 0 {
		return MessageID{}, nil, nil
	}
	if m.ID.IsZero() {
		m.ID = NewMessageID()
	}
	m.SentAt, m.From = c.now().Truncate(time.Millisecond), c.me
	if err := m.validate(); err != nil {
		return MessageID{}, nil, err
	}
	type planned struct {
		t    target
		m    Message
		plan *sealPlan
	}
	ps := make([]*planned, len(targets))
	var wg sync.WaitGroup
	sem := make(chan struct{}, fanOutPlans)
	for i, t := range targets {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p := &planned{t: t, m: m}
			p.m.To = t.person
			var err error
			if p.plan, err = c.planSeal(ctx, t, &p.m, false); err != nil {
				c.log.Warn("cannot seal a group message to a device", "kind", m.Kind, "device", t.key(), "person", t.person, "err", err)
				return
			}
			ps[i] = p
		})
	}
	wg.Wait()
	kept := ps[:0]
	for _, p := range ps {
		if p != nil {
			kept = append(kept, p)
		}
	}
	ps = kept
	var copies []wire.MultiCopy
	for start := 0; start < len(ps); start += fanOutTx {
		part := ps[start:min(start+fanOutTx, len(ps))]
		var sealed []wire.MultiCopy
		err := c.db.write(ctx, func(tx *sql.Tx) error {
			sealed = sealed[:0]
			var devs []kez.PublicKey
			now := c.now()
			for _, p := range part {
				env, err := c.sealTx(tx, p.t, p.plan, &p.m)
				if errors.Is(err, errNoSession) {
					// The session the plan counted on is gone (a wiped
					// state folder): this device gets it next time.
					c.log.Warn("cannot seal a group message to a device: its session is gone", "kind", m.Kind, "device", p.t.key())
					continue
				}
				if err != nil {
					return err
				}
				d := p.t.key()
				if err := putOutboxMulti(tx, m.ID, d, env, now); err != nil {
					return err
				}
				sealed = append(sealed, wire.MultiCopy{Device: d, Payload: env})
				devs = append(devs, d)
			}
			if inTx != nil {
				return inTx(tx, devs)
			}
			return nil
		})
		if err != nil {
			return m.ID, copies, err
		}
		copies = append(copies, sealed...)
	}
	return m.ID, copies, nil
}

// publishFan publishes the envelopes sealFan stored for the message id
// with publishMultiEach and, once the gate answered, removes from the
// outbox those it stored or refused. The error is the publishing's, when
// a request failed for good.
func (c *Client) publishFan(ctx context.Context, id MessageID, copies []wire.MultiCopy) (fanOutcome, error) {
	out := fanOutcome{sealed: make([]kez.PublicKey, len(copies))}
	for i, cp := range copies {
		out.sealed[i] = cp.Device
	}
	ans, left, err := c.publishMultiEach(ctx, copies, id.String())
	out.answer = ans
	for _, cp := range left {
		out.unknown = append(out.unknown, cp.Device)
	}
	if err != nil && isFinal(err) {
		// Refused whole: nothing of it will be stored.
		for _, d := range out.unknown {
			out.answer.Refused = append(out.answer.Refused, wire.MultiRefusal{Device: d, Code: refusalCode(err)})
		}
		out.unknown = nil
	}
	if serr := c.settleMulti(ctx, id, copies, out.unknown); serr != nil {
		c.log.Warn("recording what the gate stored of a group message", "id", id, "err", serr)
	}
	for _, r := range out.answer.Refused {
		c.log.Info("the gate refused a copy of a group message", "id", id, "device", r.Device, "code", r.Code)
	}
	return out, err
}

// refusalCode is the code a refusal of a whole multi-recipient send gives
// each of its devices.
func refusalCode(err error) int {
	var qe *QuotaError
	switch {
	case errors.As(err, &qe) && qe.Limit == "sender":
		return wire.ErrCodeSenderQuota
	case errors.Is(err, ErrMultiSendUnsupported):
		return wire.ErrCodeUnavailable
	}
	return wire.ErrCodeBadRequest
}

// putOutboxMulti stores, in tx, an envelope published with a
// multi-recipient send under the message ID id: its Nats-Msg-Id at the
// gate is that of a one-to-one send with the ID <id>-<device>.
func putOutboxMulti(tx *sql.Tx, id MessageID, device kez.PublicKey, env []byte, now time.Time) error {
	_, err := tx.Exec(`INSERT INTO outbox (msg_id, device, envelope, publish_id, counts, created_at, multi) VALUES (?,?,?,?,0,?,1)
		ON CONFLICT (msg_id, device) DO UPDATE SET envelope = excluded.envelope, publish_id = excluded.publish_id, counts = 0, multi = 1`,
		id[:], device.String(), env, publishID(id, 0, device, false), now.UnixMilli())
	if err != nil {
		return fmt.Errorf("chat: storing an envelope to publish: %w", err)
	}
	return nil
}

// settleMulti removes from the outbox the envelopes of message id sent
// in copies, but those to the devices of unknown (no answer: they are
// published again at the next start).
func (c *Client) settleMulti(ctx context.Context, id MessageID, copies []wire.MultiCopy, unknown []kez.PublicKey) error {
	keep := make(map[kez.PublicKey]bool, len(unknown))
	for _, d := range unknown {
		keep[d] = true
	}
	return c.db.write(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		for _, cp := range copies {
			if keep[cp.Device] {
				continue
			}
			if _, err := tx.Exec(`DELETE FROM outbox WHERE msg_id = ? AND device = ? AND multi = 1`, id[:], cp.Device.String()); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		return nil
	})
}

// republishMulti publishes again the envelopes of messages to many
// devices left in the outbox (the client stopped before the gate
// answered, or the connection was lost), the same bytes under the same
// message ID, so the stream keeps each copy once. Those of messages this
// client is publishing now are left to that publish, which it waits for
// (within ctx). It reports whether some are left for the connection.
func (c *Client) republishMulti(ctx context.Context) (left bool) {
	rows, err := c.db.db.QueryContext(ctx, `SELECT msg_id, device, envelope FROM outbox WHERE multi = 1 ORDER BY created_at, rowid`)
	if err != nil {
		c.log.Warn("reading the outbox", "err", err)
		return
	}
	var order, busy []MessageID
	byID := map[MessageID][]wire.MultiCopy{}
	for rows.Next() {
		var idb []byte
		var dev string
		var env []byte
		if err := rows.Scan(&idb, &dev, &env); err != nil {
			break
		}
		d, err := kez.ParsePublicKey(dev)
		var id MessageID
		if err != nil || len(idb) != len(id) {
			continue
		}
		copy(id[:], idb)
		if c.outgoing.busy(id) {
			busy = append(busy, id)
			continue
		}
		if _, ok := byID[id]; !ok {
			order = append(order, id)
		}
		byID[id] = append(byID[id], wire.MultiCopy{Device: d, Payload: env})
	}
	rows.Close()
	n := 0
	for _, id := range order {
		if c.outgoing.busy(id) {
			busy = append(busy, id)
			continue
		}
		c.outgoing.add(id)
		out, err := c.publishFan(ctx, id, byID[id])
		c.outgoing.done(id)
		if err != nil {
			c.log.Warn("publishing again a group message left pending", "id", id, "err", err)
		}
		left = left || len(out.unknown) > 0
		n += out.answer.Stored + out.answer.Duplicates
	}
	if len(order) > 0 {
		c.log.Info("published again the group keys and updates left pending", "messages", len(order), "copies", n)
	}
	// What another publish of this client has under way is left to it;
	// it has been answered (or given up) when this returns.
	for _, id := range busy {
		select {
		case <-c.outgoing.idle(id):
		case <-ctx.Done():
			return true
		}
	}
	return left
}
