package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// publish seals m to each of targets (the devices of one person) and
// publishes the copies asynchronously. record keeps m in the history
// (text messages, not receipts) and sends a sent copy (sync-sent) to each
// of the user's other devices. The envelopes, the session states their
// sealing left and (with record) the message, pending, are stored in one
// transaction before anything is published (docs/spec/chat.md §7, §8).
func (c *Client) publish(ctx context.Context, targets []target, m Message, record bool, opts []SendOption) (*Pending, error) {
	return c.publishIn(ctx, targets, m, record, false, record, opts)
}

// publishIn is publish; fresh starts a new session with each target even
// if one exists, durable keeps each envelope in the outbox until the
// stream acknowledged it (a client that stops before publishes it again
// when it next starts).
func (c *Client) publishIn(ctx context.Context, targets []target, m Message, record, fresh, durable bool, opts []SendOption) (*Pending, error) {
	p, _, err := c.publishCopies(ctx, targets, m, record, fresh, durable, opts)
	return p, err
}

// publishCopies is publishIn, and also returns the copies: those with an
// envelope were sealed (and, durable, stored in the outbox).
func (c *Client) publishCopies(ctx context.Context, targets []target, m Message, record, fresh, durable bool, opts []SendOption) (*Pending, []*outCopy, error) {
	if c.nc == nil {
		return nil, nil, ErrOffline
	}
	var sc sendConfig
	for _, o := range opts {
		o(&sc)
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if len(targets) == 0 {
		return nil, nil, ErrNoDevice
	}
	person := targets[0].person
	m.ID, m.SentAt = NewMessageID(), c.now().Truncate(time.Millisecond)
	m.From, m.To = c.me, person
	if err := m.validate(); err != nil {
		return nil, nil, err
	}
	if durable {
		// Its envelopes, stored, are this send's to publish, not the
		// outbox loop's.
		c.outgoing.add(m.ID)
		defer c.outgoing.done(m.ID)
	}
	copies := make([]*outCopy, 0, len(targets))
	for _, t := range targets {
		copies = append(copies, &outCopy{t: t, m: m, counts: true})
	}
	if record {
		if own := c.otherOwnDevices(ctx); len(own) > 0 {
			sm := Message{ID: m.ID, From: c.me, To: c.me, SentAt: m.SentAt, Kind: KindSyncSent, Ref: m.Ref, Body: marshalSyncSent(person, &m)}
			for _, d := range own {
				copies = append(copies, &outCopy{t: c.ownTarget(d), m: sm})
			}
		}
	}
	p := &Pending{c: c, done: make(chan struct{}), wait: sc.waitReceipt,
		sent: Sent{ID: m.ID, To: person, Handle: targets[0].handle, SentAt: m.SentAt}}
	if record {
		p.entry = &Entry{
			ID: m.ID, Peer: person, PeerHandle: targets[0].handle, From: c.me, To: person, SentAt: m.SentAt, ReceivedAt: c.now(),
			Kind: m.Kind, Ref: m.Ref, Body: m.Body, Trust: TrustTrusted, Read: true, State: StatePending,
		}
	}
	if err := c.sealCopies(ctx, p, copies, fresh, durable); err != nil {
		return nil, nil, err
	}
	if sc.waitReceipt {
		p.result = c.addWaiter(m.ID, person)
	}
	// Stored: it is published now whatever ctx says, or it would stay
	// pending until the client next connects.
	var live []*flight
	for _, cp := range copies {
		if cp.env == nil {
			continue
		}
		f := &flight{p: p, msgID: m.ID, device: cp.t.key(), pubID: cp.pubID, counts: cp.counts, durable: durable, env: cp.env}
		if cp.counts && cp.t.chain != nil {
			f.person, f.chain = cp.t.person, cp.t.chain
		}
		if f.counts {
			p.left++
		}
		live = append(live, f)
	}
	var handed bool
	var firstErr error
	for _, f := range live {
		if err := c.publishEnvelope(f, f.env); err != nil {
			if f.counts && firstErr == nil {
				firstErr = err
			}
			continue
		}
		handed = handed || f.counts
	}
	if !handed {
		return nil, nil, firstErr
	}
	return p, copies, nil
}

// ErrNoDevice reports a person with no current device to seal to.
var ErrNoDevice = errors.New("chat: the recipient has no current device")

// outCopy is one envelope of a message: to one device.
type outCopy struct {
	t      target
	m      Message // as sealed to this device (a sent copy's kind and body differ)
	counts bool    // to the recipient: the send's outcome is theirs
	plan   *sealPlan
	env    []byte
	pubID  string
	replan bool // its session was gone: planned again as a new one
	due    bool // could not be planned: recorded as due (due.go)
}

// sealCopies plans and seals each copy, and stores in one transaction the
// session states, the envelopes (durable: in the outbox) and p's entry.
// A copy that cannot be planned (its device's prekey cannot be fetched)
// is left out and logged, and, for a message kept in the history
// (durable, with p's entry), recorded as due in the same transaction:
// it is sealed later, from the history (due.go). If no copy to the
// recipient can be planned, the first error is returned and nothing is
// stored. The copies are planned at once, so a send waits for one
// prekey fetch, not one per device.
func (c *Client) sealCopies(ctx context.Context, p *Pending, copies []*outCopy, fresh, durable bool) error {
	var firstErr error
	entry := p.entry
	keep := durable && entry != nil // a copy that cannot be sealed now is due
	plan := func(cps []*outCopy, fresh bool) bool {
		// At once: a device's plan may wait for its prekey (bounded by
		// RefreshTimeout), and a person has up to maxDevices of them.
		errs := make([]error, len(cps))
		if len(cps) == 1 {
			cps[0].plan, errs[0] = c.planSeal(ctx, cps[0].t, &cps[0].m, fresh)
		} else {
			var wg sync.WaitGroup
			for i, cp := range cps {
				wg.Go(func() { cp.plan, errs[i] = c.planSeal(ctx, cp.t, &cp.m, fresh) })
			}
			wg.Wait()
		}
		ok := false
		for i, cp := range cps {
			if err := errs[i]; err != nil {
				cp.plan = nil
				if cp.counts && firstErr == nil {
					firstErr = err
				}
				cp.due = keep
				c.log.Warn("cannot seal a copy of a message to a device", "device", cp.t.key(), "person", cp.t.person, "due", keep, "err", err)
				continue
			}
			ok = ok || cp.counts
		}
		return ok
	}
	if !plan(copies, fresh) {
		return firstErr
	}
	var trimmed int64 // copies due dropped over a bound
	write := func(cps []*outCopy, withEntry bool) error {
		return c.db.write(ctx, func(tx *sql.Tx) error {
			now := c.now()
			if withEntry {
				trimmed = 0
			}
			due := func(cp *outCopy) error {
				n, err := c.putDue(tx, cp.m.ID, cp.t, cp.counts, now)
				trimmed += n
				return err
			}
			for _, cp := range cps {
				cp.env, cp.replan = nil, false
				if cp.plan == nil {
					if cp.due && withEntry {
						if err := due(cp); err != nil {
							return err
						}
					}
					continue
				}
				env, err := c.sealTx(tx, cp.t, cp.plan, &cp.m)
				if errors.Is(err, errNoSession) && !cp.plan.fresh {
					// The only session stored did not parse (it is dropped
					// in the transaction that finds it so): a new one. Due
					// until then, so a crash loses no copy.
					cp.replan = true
					if keep && withEntry {
						if err := due(cp); err != nil {
							return err
						}
					}
					continue
				}
				if err != nil {
					return err
				}
				if keep && !withEntry {
					if err := clearDue(tx, cp.m.ID, cp.t.key()); err != nil {
						return err
					}
				}
				cp.env = env
				cp.pubID = publishID(cp.m.ID, 0, cp.t.key(), cp.counts && cp.t.key() == cp.t.person)
				if durable {
					if err := putOutbox(tx, cp.m.ID, cp.t.key(), env, cp.pubID, cp.counts, now); err != nil {
						return err
					}
				}
			}
			if withEntry && entry != nil {
				_, err := c.db.insertSent(tx, entry, nil)
				return err
			}
			return nil
		})
	}
	if err := write(copies, true); err != nil {
		return err
	}
	var again []*outCopy
	for _, cp := range copies {
		if cp.replan {
			again = append(again, cp)
		}
	}
	if len(again) > 0 {
		plan(again, true)
		if err := write(again, false); err != nil {
			return err
		}
	}
	c.copiesDue(copies, keep, trimmed)
	for _, cp := range copies {
		if cp.env != nil && cp.counts {
			return nil
		}
	}
	if firstErr == nil {
		firstErr = errNoSession
	}
	return firstErr
}

// putOutbox stores, in tx, an envelope to publish to a device.
func putOutbox(tx *sql.Tx, id MessageID, device kez.PublicKey, env []byte, pubID string, counts bool, now time.Time) error {
	_, err := tx.Exec(`INSERT INTO outbox (msg_id, device, envelope, publish_id, counts, created_at) VALUES (?,?,?,?,?,?)
		ON CONFLICT (msg_id, device) DO UPDATE SET envelope = excluded.envelope, publish_id = excluded.publish_id, counts = excluded.counts`,
		id[:], device.String(), env, pubID, boolInt(counts), now.UnixMilli())
	if err != nil {
		return fmt.Errorf("chat: storing an envelope to publish: %w", err)
	}
	return nil
}

// publishID is the Nats-Msg-Id of a message's envelope to a device: its
// ID, followed by the number of times it was sealed again to that device
// (the stream drops a second publish of one ID, and a message sealed
// again is a new envelope), and, unless it is the copy to the recipient
// person's primary device (plain), by "-" and the device key: the gate
// prefixes only the sender, so the copies to a person's devices need
// IDs of their own.
func publishID(id MessageID, resends int, device kez.PublicKey, plain bool) string {
	s := id.String()
	if resends > 0 {
		s += "." + strconv.Itoa(resends)
	}
	if !plain {
		s += "-" + device.String()
	}
	return s
}
