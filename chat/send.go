package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/internal/inbox"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Sent describes a message the stream stored.
type Sent struct {
	ID        MessageID
	To        kez.PublicKey
	Handle    string // the recipient's handle, if known
	SentAt    time.Time
	Seq       uint64 // the stream sequence
	Duplicate bool   // the stream already had this message ID (a retried publish)
	// DeliveredAt is the time in the recipient's signed delivery receipt,
	// set only with WaitReceipt.
	DeliveredAt time.Time
}

// SendOption changes how a message is sent.
type SendOption func(*sendConfig)

type sendConfig struct {
	waitReceipt bool
}

// WaitReceipt makes Send wait, after the stream stored the message, until
// the recipient's signed delivery receipt arrives (or ctx ends). While no
// Run loop is receiving, Send fetches from the inbox itself to see the
// receipt; messages that arrive meanwhile are stored as usual.
func WaitReceipt() SendOption { return func(c *sendConfig) { c.waitReceipt = true } }

// maxPublishAttempts bounds how often a publish that got no acknowledgement
// is repeated (with the same Nats-Msg-Id, so the stream stores it once).
const maxPublishAttempts = 5

// Send sends text to the contact with this handle and returns once the
// stream stored it (and, with WaitReceipt, once the recipient's receipt
// arrived). The handle must be a contact ([Client.AddContact]): otherwise
// the error wraps ErrNotContact. The contact is checked again if due (see
// Config.RefreshInterval); a flagged contact gets its *KeyChangedError or
// *ChainRewrittenError and nothing is sent.
//
// The message is sealed in a session with the contact's pinned key (or,
// for a contact that publishes no prekey yet, to their pinned encryption
// key; see docs/spec/chat.md §7), recorded in the history with the
// session state the sealing left, then published to
// kez.v1.inbox.<their key>.<your key> with Nats-Msg-Id set to the message
// ID. Errors include those of fetching the contact's prekey from their
// sig-server (a prekey that does not verify is an error, never skipped).
func (c *Client) Send(ctx context.Context, handle, text string, opts ...SendOption) (Sent, error) {
	p, err := c.SendAsync(ctx, handle, text, opts...)
	if err != nil {
		return Sent{}, err
	}
	return p.Wait(ctx)
}

// SendKey is Send addressed by key. A key that is not a contact is allowed
// (a bot answering a request, say): its chain is fetched from the user's
// sig-server and verified, and the message is sealed in a session with
// the key (its prekey, verified, from the user's sig-server), without
// pinning anything. The verified chain is kept and
// checked again, from its head on, once Config.RefreshInterval has passed.
func (c *Client) SendKey(ctx context.Context, to kez.PublicKey, text string, opts ...SendOption) (Sent, error) {
	p, err := c.SendKeyAsync(ctx, to, text, opts...)
	if err != nil {
		return Sent{}, err
	}
	return p.Wait(ctx)
}

// SendAsync is Send without waiting for the stream's acknowledgement: it
// returns once the message is sealed, stored and handed to the
// connection, so a caller can keep many sends in flight. Wait on the
// returned Pending.
func (c *Client) SendAsync(ctx context.Context, handle, text string, opts ...SendOption) (*Pending, error) {
	if !c.work.Enter() {
		return nil, ErrClosed
	}
	defer c.work.Leave()
	cs, err := c.contact(ctx, handle)
	if err != nil {
		return nil, err
	}
	if err := c.refreshContact(ctx, cs, true, false); err != nil {
		return nil, err
	}
	return c.sendTo(ctx, cs, text, opts)
}

// SendKeyAsync is SendKey without waiting; see SendAsync.
func (c *Client) SendKeyAsync(ctx context.Context, to kez.PublicKey, text string, opts ...SendOption) (*Pending, error) {
	if !c.work.Enter() {
		return nil, ErrClosed
	}
	defer c.work.Leave()
	c.mu.Lock()
	cs := c.byKey[to]
	c.mu.Unlock()
	if cs != nil {
		if err := c.refreshContact(ctx, cs, false, false); err != nil {
			return nil, err
		}
		return c.sendTo(ctx, cs, text, opts)
	}
	if c.nc == nil {
		return nil, ErrOffline
	}
	ts, err := c.strangerTargets(ctx, to)
	if err != nil {
		return nil, err
	}
	return c.publish(ctx, ts, Message{Kind: KindText, Body: []byte(text)}, true, opts)
}

// strangerTargets are the devices of a key that is not a contact: the
// current devices of its chain from the user's sig-server, verified.
func (c *Client) strangerTargets(ctx context.Context, to kez.PublicKey) ([]target, error) {
	st, err := c.keyChain(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("chat: fetching the sigchain of %s: %w", to, err)
	}
	keys := c.onlyTheirs(to, currentDevices(chainDevices(st), to))
	ts := make([]target, len(keys))
	for i, k := range keys {
		ts[i] = target{rcpt: Recipient{Key: k, EncryptionKey: st.EncryptionKey(), Generation: st.EncryptionGeneration()}, person: to}
	}
	return ts, nil
}

func (c *Client) sendTo(ctx context.Context, cs *contactState, text string, opts []SendOption) (*Pending, error) {
	c.mu.Lock()
	ct, devs := cs.c, cs.devices
	c.mu.Unlock()
	if err := ct.Err(); err != nil {
		return nil, err
	}
	return c.publish(ctx, c.contactTargets(&ct, devs), Message{Kind: KindText, Body: []byte(text)}, true, opts)
}

// contactTarget is the target of a contact's primary device: their pinned
// key and encryption key, and their sig-server for the prekey.
func contactTarget(ct *Contact) target { return deviceTarget(ct, ct.Key) }

// deviceTarget is the target of one of a contact's devices.
func deviceTarget(ct *Contact, dev kez.PublicKey) target {
	return target{
		rcpt:   Recipient{Key: dev, EncryptionKey: ct.EncryptionKey, Generation: ct.Generation},
		person: ct.Key, handle: ct.Handle, sigBase: ct.SigServer,
	}
}

// contactTargets are the targets of a contact's current devices (devs, as
// their pinned chain lists them), but for a device another chain known
// here lists too (see claimedByOther).
func (c *Client) contactTargets(ct *Contact, devs []chainDevice) []target {
	keys := c.onlyTheirs(ct.Key, currentDevices(devs, ct.Key))
	ts := make([]target, len(keys))
	for i, k := range keys {
		ts[i] = deviceTarget(ct, k)
	}
	return ts
}

// ownTarget is the target of one of the user's own devices.
func (c *Client) ownTarget(dev kez.PublicKey) target {
	return target{rcpt: Recipient{Key: dev}, person: c.me}
}

// Pending is a send in flight. Its methods are safe for concurrent use.
type Pending struct {
	c      *Client
	entry  *Entry // recorded in the history (pending) before it was published
	done   chan struct{}
	sent   Sent
	err    error
	wait   bool
	result chan time.Time // receipt, if waited for

	mu     sync.Mutex
	left   int   // copies to the recipient's devices not answered yet
	stored int   // of which the stream stored
	dups   int   // of which were duplicates
	failed error // the first failure
}

// Done is closed once the stream acknowledged the message (and it is in
// the history) or the send failed.
func (p *Pending) Done() <-chan struct{} { return p.done }

// ID returns the message ID.
func (p *Pending) ID() MessageID { return p.sent.ID }

// Wait waits for the stream's acknowledgement (and the receipt, if the send
// asked for it) and returns the outcome. If ctx ends first it returns ctx's
// error; the message may still be delivered.
func (p *Pending) Wait(ctx context.Context) (Sent, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		return Sent{}, fmt.Errorf("chat: waiting for the stream to store message %s: %w", p.sent.ID, ctx.Err())
	}
	if p.err != nil || !p.wait {
		return p.sent, p.err
	}
	at, err := p.c.waitReceipt(ctx, p.sent.ID, p.result)
	s := p.sent
	s.DeliveredAt = at
	return s, err
}

// copyFinished records the outcome of one copy of p; p is done once every
// copy to the recipient's devices was answered: sent if the stream stored
// at least one of them, else failed with the first failure.
func (p *Pending) copyFinished(f *flight, ack *jetstream.PubAck, err error) {
	if !f.counts {
		return
	}
	p.mu.Lock()
	if ack != nil {
		if p.stored == 0 {
			p.sent.Seq = ack.Sequence
		}
		p.stored++
		if ack.Duplicate {
			p.dups++
		}
	} else if p.failed == nil {
		p.failed = err
	}
	p.left--
	last := p.left == 0
	p.mu.Unlock()
	if !last {
		return
	}
	if p.stored > 0 {
		p.sent.Duplicate = p.dups == p.stored
		p.c.stats.sent.Add(1)
	} else {
		p.err = p.failed
		if p.result != nil {
			p.c.dropWaiter(p.sent.ID)
		}
	}
	close(p.done)
}

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
	if c.nc == nil {
		return nil, ErrOffline
	}
	var sc sendConfig
	for _, o := range opts {
		o(&sc)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(targets) == 0 {
		return nil, ErrNoDevice
	}
	person := targets[0].person
	m.ID, m.SentAt = NewMessageID(), c.now().Truncate(time.Millisecond)
	m.From, m.To = c.me, person
	if err := m.validate(); err != nil {
		return nil, err
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
		return nil, err
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
		return nil, firstErr
	}
	return p, nil
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
}

// sealCopies plans and seals each copy, and stores in one transaction the
// session states, the envelopes (durable: in the outbox) and p's entry.
// A copy that cannot be planned (its device's prekey cannot be fetched)
// is left out and logged; if no copy to the recipient is left, the
// first error is returned and nothing is stored. The copies are planned
// at once, so a send waits for one prekey fetch, not one per device.
func (c *Client) sealCopies(ctx context.Context, p *Pending, copies []*outCopy, fresh, durable bool) error {
	var firstErr error
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
				c.log.Warn("cannot seal a copy of a message to a device", "device", cp.t.key(), "person", cp.t.person, "err", err)
				continue
			}
			ok = ok || cp.counts
		}
		return ok
	}
	if !plan(copies, fresh) {
		return firstErr
	}
	entry := p.entry
	write := func(cps []*outCopy, withEntry bool) error {
		return c.db.write(ctx, func(tx *sql.Tx) error {
			now := c.now()
			for _, cp := range cps {
				cp.env, cp.replan = nil, false
				if cp.plan == nil {
					continue
				}
				env, err := c.sealTx(tx, cp.t, cp.plan, &cp.m)
				if errors.Is(err, errNoSession) && !cp.plan.fresh {
					// The only session stored did not parse (it is dropped
					// in the transaction that finds it so): a new one.
					cp.replan = true
					continue
				}
				if err != nil {
					return err
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
	if len(again) > 0 && plan(again, true) {
		if err := write(again, false); err != nil {
			return err
		}
	}
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

// flight is one envelope being published: to one device.
type flight struct {
	p       *Pending
	msgID   MessageID
	device  kez.PublicKey
	pubID   string
	counts  bool // a copy to the recipient: p's outcome
	durable bool // kept in the outbox until answered
	env     []byte
}

// publishEnvelope publishes an envelope to f's device; the outcome is
// recorded once the stream answered. If it cannot be sent at all the
// outcome is recorded at once and the error returned.
func (c *Client) publishEnvelope(f *flight, env []byte) error {
	msg := nats.NewMsg(sendSubject(f.device, c.devKey))
	msg.Data = env
	msg.Header.Set(jetstream.MsgIDHeader, f.pubID)
	fut, err := c.js.PublishMsgAsync(msg)
	if err != nil {
		err = fmt.Errorf("chat: publishing message %s: %w", f.msgID, err)
		c.copyDone(f, nil, err)
		return err
	}
	c.sends.Add(1)
	go c.awaitAck(f, msg, fut)
	return nil
}

// republishPending publishes again the envelopes stored but not
// acknowledged by the stream (the client stopped before the answer came):
// the same bytes with the same Nats-Msg-Id, so the stream, or the
// recipient, drops a copy it already has. A message key is never used to
// seal a second message.
func (c *Client) republishPending(ctx context.Context) error {
	rows, err := c.db.db.QueryContext(ctx, `SELECT msg_id, device, envelope, publish_id, counts FROM outbox ORDER BY created_at, rowid`)
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

// awaitAck waits for the stream's acknowledgement of a publish. When none
// comes (a timeout, or the connection dropped and the pending acks were
// cancelled) it publishes again with the same Nats-Msg-Id, once connected,
// so the stream stores the message once; then it records the outcome.
func (c *Client) awaitAck(f *flight, msg *nats.Msg, fut *inbox.Future) {
	defer c.sends.Done()
	started := time.Now()
	for attempt := 1; ; attempt++ {
		recon := c.nextReconnect()
		select {
		case ack := <-fut.Ok():
			c.copyDone(f, ack, nil)
			return
		case err := <-fut.Err():
			if streamBusy(err) && time.Since(started) < inProcessBudget {
				// The stream is still storing the first copy (a clustered
				// stream committing it), or has no leader for a moment (an
				// election after a server was lost): ask again shortly;
				// Nats-Msg-Id makes a second copy harmless.
				attempt--
				select {
				case <-time.After(inProcessDelay):
				case <-c.closing:
				}
				if f, perr := c.js.PublishMsgAsync(msg); perr == nil {
					fut = f
					continue
				}
			}
			if attempt < maxPublishAttempts && retryable(err) {
				if !c.nc.IsConnected() {
					select {
					case <-recon:
					case <-c.closing:
					case <-time.After(30 * time.Second):
					}
				}
				f, perr := c.js.PublishMsgAsync(msg)
				if perr == nil {
					fut = f
					continue
				}
				err = perr
			}
			select {
			case <-c.closing:
				// Closed while the publish was retried: the outcome is
				// unknown, as below.
				c.copyDone(f, nil, fmt.Errorf("chat: message %s: %w before the stream acknowledged it", f.msgID, ErrClosed))
				return
			default:
			}
			c.copyDone(f, nil, fmt.Errorf("chat: the stream did not store message %s: %w", f.msgID, refusal(err)))
			return
		case <-c.closing:
			c.copyDone(f, nil, fmt.Errorf("chat: message %s: %w before the stream acknowledged it", f.msgID, ErrClosed))
			return
		}
	}
}

// errCodeDuplicateInProcess is JetStream's answer to a publish whose
// Nats-Msg-Id the stream is still storing from an earlier publish (a
// republish after a reconnect, on a clustered stream): the message is on
// its way, not refused.
const errCodeDuplicateInProcess jetstream.ErrorCode = 10158

// How often and how long a send asks again while the stream is still
// storing its first copy or electing a leader: long enough for a
// JetStream leader election (4–9 s in nats-server).
const (
	inProcessDelay  = 250 * time.Millisecond
	inProcessBudget = 30 * time.Second
)

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
		f.p.copyFinished(f, ack, err)
	})
}

// waiter is a Send waiting for the receipt of its message.
type waiter struct {
	to kez.PublicKey // only a receipt from a device of the recipient person counts
	ch chan time.Time
}

func (c *Client) addWaiter(id MessageID, to kez.PublicKey) chan time.Time {
	ch := make(chan time.Time, 1)
	c.waitMu.Lock()
	c.waiters[id] = waiter{to: to, ch: ch}
	c.waitMu.Unlock()
	return ch
}

func (c *Client) dropWaiter(id MessageID) {
	c.waitMu.Lock()
	delete(c.waiters, id)
	c.waitMu.Unlock()
}

// notifyReceipt wakes whoever waits for the receipt of id, if from (a
// person) is the message's recipient.
func (c *Client) notifyReceipt(id MessageID, from kez.PublicKey, at time.Time) {
	c.waitMu.Lock()
	w, ok := c.waiters[id]
	if ok && w.to == from {
		delete(c.waiters, id)
	}
	c.waitMu.Unlock()
	if ok && w.to == from {
		w.ch <- at
	}
}

// waitReceipt waits for the receipt of id. Without a Run loop it fetches
// from the inbox itself.
func (c *Client) waitReceipt(ctx context.Context, id MessageID, ch chan time.Time) (time.Time, error) {
	defer c.dropWaiter(id)
	for {
		select {
		case at := <-ch:
			return at, nil
		default:
		}
		if c.live.Load() > 0 {
			select {
			case at := <-ch:
				return at, nil
			case <-c.work.Stopped():
				return time.Time{}, fmt.Errorf("chat: waiting for the receipt of %s: %w", id, ErrClosed)
			case <-ctx.Done():
				return time.Time{}, fmt.Errorf("chat: waiting for the receipt of %s: %w", id, ctx.Err())
			}
		}
		if _, err := c.fetchOnce(ctx, 200*time.Millisecond); err != nil {
			if ctx.Err() != nil {
				return time.Time{}, fmt.Errorf("chat: waiting for the receipt of %s: %w", id, ctx.Err())
			}
			return time.Time{}, err
		}
	}
}
