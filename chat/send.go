package chat

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/kez"
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

// maxPublishAttempts bounds how often one multi-recipient request that
// got no answer is repeated at once (with the same Nats-Msg-Id, so the
// stream stores it once); what is left waits in the outbox for the outbox
// loop (send_queue.go).
const maxPublishAttempts = 5

// Send sends text to the contact with this handle and returns once the
// stream stored it (and, with WaitReceipt, once the recipient's receipt
// arrived). The handle must be a contact ([Client.AddContact]): otherwise
// the error wraps ErrNotContact. The contact is checked again if due (see
// Config.RefreshInterval); a flagged contact gets its *KeyChangedError or
// *ChainRewrittenError and nothing is sent; a blocked contact
// ([Client.Block]) gets ErrBlocked.
//
// The message is sealed in a session with the contact's pinned key (or,
// for a contact that publishes no prekey yet, to their pinned encryption
// key; see docs/spec/chat.md §7), recorded in the history with the
// session state the sealing left, then published to
// kez.v1.inbox.<their key>.<your key> with Nats-Msg-Id set to the message
// ID. Errors include those of fetching the contact's prekey from their
// sig-server (a prekey that does not verify is an error, never skipped).
// While NATS, or the stream after a reconnect, cannot be reached, the
// message stays pending and Send waits for them; if ctx ends first the
// error wraps [ErrQueued] (and ctx's), and the message is published once
// the connection is back. Only a refusal (a *QuotaError,
// ErrUnknownRecipient, …) fails it.
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
// returned Pending. While NATS cannot be reached the message is stored
// and stays pending: it is published once the connection is back.
func (c *Client) SendAsync(ctx context.Context, handle, text string, opts ...SendOption) (*Pending, error) {
	if !c.work.Enter() {
		return nil, ErrClosed
	}
	defer c.work.Leave()
	cs, err := c.contact(ctx, handle)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	key, h := cs.c.Key, cs.c.Handle
	c.mu.Unlock()
	if err := c.checkNotBlocked(ctx, key, h); err != nil {
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
	if err := c.checkNotBlocked(ctx, to, to.String()); err != nil {
		return nil, err
	}
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
	cur := currentDevices(chainDevices(st), to)
	keys := c.onlyTheirs(to, cur)
	ts := make([]target, len(keys))
	for i, k := range keys {
		ts[i] = target{rcpt: Recipient{Key: k, EncryptionKey: st.EncryptionKey(), Generation: st.EncryptionGeneration()}, person: to, chain: cur}
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
	ts := c.contactTargets(&ct, devs)
	c.sendLogView(ctx, &ct, ts)
	return c.publish(ctx, ts, Message{Kind: KindText, Body: []byte(text)}, true, opts)
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
	cur := currentDevices(devs, ct.Key)
	keys := c.onlyTheirs(ct.Key, cur)
	ts := make([]target, len(keys))
	for i, k := range keys {
		ts[i] = deviceTarget(ct, k)
		if len(devs) > 0 {
			// A contact pinned by an earlier release has no device list:
			// its copies carry no digest.
			ts[i].chain = cur
		}
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
	queued atomic.Bool    // a publish failed for the connection: waiting for it

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
// asked for it) and returns the outcome. A message whose publish failed
// because NATS or the stream could not be reached is not failed: it stays
// pending and is published again once the connection is back, however
// long that takes, and Wait goes on waiting. If ctx ends first Wait
// returns ctx's error, wrapped with [ErrQueued] if the message waits for
// the connection; the message may still be delivered, and its
// Entry.State stays pending until the stream stored it.
func (p *Pending) Wait(ctx context.Context) (Sent, error) {
	select {
	case <-p.done:
	case <-ctx.Done():
		if p.queued.Load() || p.c.nc != nil && !p.c.nc.IsConnected() {
			return Sent{}, fmt.Errorf("chat: message %s: %w: %w", p.sent.ID, ErrQueued, ctx.Err())
		}
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
	if !f.counts || f.late {
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
