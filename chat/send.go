package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
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
	t, err := c.strangerTarget(ctx, to)
	if err != nil {
		return nil, err
	}
	return c.publish(ctx, t, Message{Kind: KindText, Body: []byte(text)}, true, opts)
}

// strangerTarget is the target of a key that is not a contact: its chain
// from the user's sig-server, verified.
func (c *Client) strangerTarget(ctx context.Context, to kez.PublicKey) (target, error) {
	st, err := c.keyChain(ctx, to)
	if err != nil {
		return target{}, fmt.Errorf("chat: fetching the sigchain of %s: %w", to, err)
	}
	return target{rcpt: Recipient{Key: to, EncryptionKey: st.EncryptionKey(), Generation: st.EncryptionGeneration()}}, nil
}

func (c *Client) sendTo(ctx context.Context, cs *contactState, text string, opts []SendOption) (*Pending, error) {
	c.mu.Lock()
	ct := cs.c
	c.mu.Unlock()
	if err := ct.Err(); err != nil {
		return nil, err
	}
	return c.publish(ctx, contactTarget(&ct), Message{Kind: KindText, Body: []byte(text)}, true, opts)
}

// contactTarget is the target of a contact: their pinned key and
// encryption key, and their sig-server for the prekey.
func contactTarget(ct *Contact) target {
	return target{
		rcpt:   Recipient{Key: ct.Key, EncryptionKey: ct.EncryptionKey, Generation: ct.Generation},
		handle: ct.Handle, sigBase: ct.SigServer,
	}
}

// Pending is a send in flight. Its methods are safe for concurrent use.
type Pending struct {
	c       *Client
	entry   *Entry // recorded in the history (pending) before it was published
	resends int    // the entry's resends when this envelope was sealed
	done    chan struct{}
	sent    Sent
	err     error
	wait    bool
	result  chan time.Time // receipt, if waited for
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

// publish seals m to t and publishes it asynchronously. record keeps it
// in the history (text messages, not receipts). The envelope, the session
// state its sealing left and (with record) the message, pending, are
// stored in one transaction before anything is published (docs/spec/chat.md
// §7). fresh starts a new session with t even if one exists.
func (c *Client) publish(ctx context.Context, t target, m Message, record bool, opts []SendOption) (*Pending, error) {
	return c.publishIn(ctx, t, m, record, false, opts)
}

func (c *Client) publishIn(ctx context.Context, t target, m Message, record, fresh bool, opts []SendOption) (*Pending, error) {
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
	rcpt := t.rcpt
	m.ID, m.SentAt = NewMessageID(), c.now().Truncate(time.Millisecond)
	m.From, m.To = c.me, rcpt.Key
	if err := m.validate(); err != nil {
		return nil, err
	}
	plan, err := c.planSeal(ctx, t, &m, fresh)
	if err != nil {
		return nil, err
	}
	p := &Pending{c: c, done: make(chan struct{}), wait: sc.waitReceipt,
		sent: Sent{ID: m.ID, To: rcpt.Key, Handle: t.handle, SentAt: m.SentAt}}
	if record {
		p.entry = &Entry{
			ID: m.ID, Peer: rcpt.Key, PeerHandle: t.handle, From: c.me, To: rcpt.Key, SentAt: m.SentAt, ReceivedAt: c.now(),
			Kind: m.Kind, Ref: m.Ref, Body: m.Body, Trust: TrustTrusted, Read: true, State: StatePending,
		}
	}
	var env []byte
	seal := func(tx *sql.Tx) error {
		var err error
		if env, err = c.sealTx(tx, t, plan, &m); err != nil {
			return err
		}
		if record {
			_, err = c.db.insertSent(tx, p.entry, env)
		}
		return err
	}
	err = c.db.write(ctx, seal)
	if errors.Is(err, errNoSession) && !fresh {
		// The only session stored did not parse (it is dropped in the
		// transaction that finds it so): start a new one instead.
		if plan, err = c.planSeal(ctx, t, &m, true); err != nil {
			return nil, err
		}
		err = c.db.write(ctx, seal)
	}
	if err != nil {
		return nil, err
	}
	if sc.waitReceipt {
		p.result = c.addWaiter(m.ID, rcpt.Key)
	}
	// Stored: it is published now whatever ctx says, or it would stay
	// pending until the client next connects.
	if err := c.publishEnvelope(p, rcpt.Key, env, publishID(m.ID, 0)); err != nil {
		return nil, err
	}
	return p, nil
}

// publishID is the Nats-Msg-Id of a message's envelope: its ID, followed
// by the number of times it was sealed again (the stream drops a second
// publish of one ID, and a message sealed again is a new envelope).
func publishID(id MessageID, resends int) string {
	if resends == 0 {
		return id.String()
	}
	return id.String() + "." + strconv.Itoa(resends)
}

// publishEnvelope publishes a stored envelope and completes p once the
// stream answered. If it cannot be sent at all it completes p at once
// and returns p's error.
func (c *Client) publishEnvelope(p *Pending, to kez.PublicKey, env []byte, id string) error {
	msg := nats.NewMsg(sendSubject(to, c.me))
	msg.Data = env
	msg.Header.Set(jetstream.MsgIDHeader, id)
	fut, err := c.js.PublishMsgAsync(msg)
	if err != nil {
		err = fmt.Errorf("chat: publishing message %s: %w", p.sent.ID, err)
		c.finish(p, nil, err)
		return err
	}
	c.sends.Add(1)
	go c.awaitAck(p, msg, fut)
	return nil
}

// republishPending publishes again the envelopes stored but not
// acknowledged by the stream (the client stopped before the answer came):
// the same bytes with the same Nats-Msg-Id, so the stream, or the
// recipient, drops a copy it already has. A message key is never used to
// seal a second message.
func (c *Client) republishPending(ctx context.Context) error {
	rows, err := c.db.db.QueryContext(ctx, `SELECT id, to_key, envelope, resends FROM messages
		WHERE incoming = 0 AND state = 'pending' AND envelope IS NOT NULL ORDER BY sent_at, received_at`)
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	type pending struct {
		id      MessageID
		to      kez.PublicKey
		env     []byte
		resends int
	}
	var ps []pending
	for rows.Next() {
		var p pending
		var id []byte
		var to string
		if err := rows.Scan(&id, &to, &p.env, &p.resends); err != nil {
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
		p := &Pending{c: c, done: make(chan struct{}), resends: rp.resends, sent: Sent{ID: rp.id, To: rp.to},
			entry: &Entry{ID: rp.id, To: rp.to}}
		if err := c.publishEnvelope(p, rp.to, rp.env, publishID(rp.id, rp.resends)); err != nil {
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
func (c *Client) awaitAck(p *Pending, msg *nats.Msg, fut *inbox.Future) {
	defer c.sends.Done()
	started := time.Now()
	for attempt := 1; ; attempt++ {
		recon := c.nextReconnect()
		select {
		case ack := <-fut.Ok():
			c.finish(p, ack, nil)
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
				c.finish(p, nil, fmt.Errorf("chat: message %s: %w before the stream acknowledged it", p.sent.ID, ErrClosed))
				return
			default:
			}
			c.finish(p, nil, fmt.Errorf("chat: the stream did not store message %s: %w", p.sent.ID, refusal(err)))
			return
		case <-c.closing:
			c.finish(p, nil, fmt.Errorf("chat: message %s: %w before the stream acknowledged it", p.sent.ID, ErrClosed))
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

// finish records a send's outcome in the history (state sent or failed,
// with the stream sequence; the envelope is not kept) and completes p once
// it is there. A send cut short by Close stays pending.
func (c *Client) finish(p *Pending, ack *jetstream.PubAck, err error) {
	if ack != nil {
		p.sent.Seq, p.sent.Duplicate = ack.Sequence, ack.Duplicate
		c.stats.sent.Add(1)
	}
	p.err = err
	if err != nil && p.result != nil {
		c.dropWaiter(p.sent.ID)
	}
	e := p.entry
	if e == nil || errors.Is(err, ErrClosed) {
		// Closed before the stream answered: the message stays pending,
		// with its envelope, and is published again (as is) when the
		// client next connects.
		close(p.done)
		return
	}
	state := StateSent
	if err != nil {
		state = StateFailed
	}
	c.db.writeAsync(func(tx *sql.Tx) error {
		if _, err := tx.Stmt(c.db.stmts.sentState).Exec(string(state), int64(p.sent.Seq), c.me.String(), e.ID[:], p.resends); err != nil {
			return fmt.Errorf("chat: recording the outcome of message %s: %w", e.ID, err)
		}
		return nil
	}, func(werr error) {
		if werr != nil && p.err == nil {
			c.log.Warn("the stream stored a message but recording that in the history failed", "id", e.ID, "err", werr)
		}
		close(p.done)
	})
}

// waiter is a Send waiting for the receipt of its message.
type waiter struct {
	to kez.PublicKey // only a receipt signed by the recipient counts
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

// notifyReceipt wakes whoever waits for the receipt of id, if from is the
// message's recipient.
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
