package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go/jetstream"
)

// fetchBatch is how many messages one pull asks for.
const fetchBatch = 256

// Sync fetches everything waiting in the user's inbox now, stores it and
// acknowledges it, and returns how many new messages were stored (of any
// trust). It returns when the inbox has nothing more to deliver. Read them
// with [Client.Inbox], [Client.Requests] and [Client.Held].
func (c *Client) Sync(ctx context.Context) (int, error) {
	if !c.work.Enter() {
		return 0, ErrClosed
	}
	defer c.work.Leave()
	if c.cons == nil {
		return 0, ErrOffline
	}
	total := 0
	for {
		msgs, err := c.cons.Fetch(ctx, fetchBatch, 0)
		if err != nil {
			return total, fmt.Errorf("chat: fetching from your inbox: %w", err)
		}
		if len(msgs) == 0 {
			return total, nil
		}
		fresh, err := c.process(ctx, msgs)
		total += len(fresh)
		if err != nil {
			return total, err
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}

// fetchOnce processes what is waiting; if nothing is, it waits up to wait
// for one message, then processes it and whatever followed. It returns the
// number of new messages stored.
func (c *Client) fetchOnce(ctx context.Context, wait time.Duration) (int, error) {
	n, err := c.Sync(ctx)
	if n > 0 || err != nil {
		return n, err
	}
	if d, ok := ctx.Deadline(); ok && time.Until(d) < wait {
		wait = max(time.Until(d), time.Millisecond)
	}
	m, err := c.waitOne(ctx, wait)
	if m == 0 || err != nil {
		return 0, err
	}
	n, err = c.Sync(ctx)
	return m + n, err
}

// waitOne waits up to wait for one delivery and processes it. It returns
// the number of new messages stored (0 or 1).
func (c *Client) waitOne(ctx context.Context, wait time.Duration) (int, error) {
	// A pull for one message ends as soon as it arrives.
	msgs, err := c.cons.Fetch(ctx, 1, wait)
	if err != nil && !errors.Is(err, ctx.Err()) {
		return 0, fmt.Errorf("chat: fetching from your inbox: %w", err)
	}
	if len(msgs) == 0 {
		return 0, ctx.Err()
	}
	fresh, err := c.process(ctx, msgs)
	return len(fresh), err
}

// Run receives until ctx ends or the client is closed, calling handler
// with each new message once it is stored (trusted, held or request: check
// Entry.Trust before showing it). Handler calls are sequential, in the
// order messages arrived; a slow handler slows receiving. A request comes
// without PeerHandle: its sender is looked up afterwards, in the
// background, and [Client.Requests] shows the confirmed handle. Run does not mark
// anything read: call [Client.MarkRead] for what was shown.
//
// Run keeps receiving across broker restarts and reconnects. It returns
// nil when ctx ends, once the messages already delivered to this client
// are processed. It returns [ErrClosed] when the client is shut down (once
// it processed what was delivered, as when ctx ends) or closed (at once:
// what was delivered and not processed is delivered again later), and if
// it was closed before.
func (c *Client) Run(ctx context.Context, handler func(*Entry)) error {
	if !c.work.Enter() {
		return ErrClosed
	}
	defer c.work.Leave()
	if c.cons == nil {
		return ErrOffline
	}
	if handler == nil {
		handler = func(*Entry) {}
	}
	c.live.Add(1)
	defer c.live.Add(-1)
	ch := make(chan jetstream.Msg, fetchBatch)
	if c.nc.IsClosed() {
		return ErrClosed
	}
	cc := c.cons.Consume(fetchBatch, c.nextReconnect, func(m jetstream.Msg) { ch <- m },
		func(err error) { c.log.Debug("receiving", "err", err) })
	handle := func(first jetstream.Msg) {
		batch := []jetstream.Msg{first}
	fill:
		for len(batch) < fetchBatch {
			select {
			case m := <-ch:
				batch = append(batch, m)
			default:
				break fill
			}
		}
		select {
		case <-c.closing:
			return // closed: not acknowledged, so delivered again
		default:
		}
		fresh, err := c.process(ctx, batch)
		if err != nil {
			c.log.Warn("could not store received messages; they will be delivered again", "err", err)
		}
		for _, e := range fresh {
			handler(e)
		}
	}
	var result error
	for result == nil && ctx.Err() == nil {
		select {
		case m := <-ch:
			handle(m)
		case <-ctx.Done():
		case <-c.work.Stopped():
			result = ErrClosed
		}
	}
	cc.Drain()
	for {
		select {
		case m := <-ch:
			handle(m)
		case <-cc.Closed():
			for {
				select {
				case m := <-ch:
					handle(m)
				default:
					return result
				}
			}
		}
	}
}

// received is one delivery being processed.
type received struct {
	jm      jetstream.Msg
	entry   *Entry   // a message to store
	receipt *Receipt // or a receipt to apply
	from    kez.PublicKey
	sentAt  time.Time
	lookup  bool // a request whose sender's handle is to be looked up
}

// process opens, classifies and stores a batch of deliveries, then
// acknowledges them. It returns the entries that were new. Deliveries that
// do not open are terminated (never delivered again) and logged. If storing
// fails, nothing is acknowledged and the batch is delivered again later.
func (c *Client) process(ctx context.Context, msgs []jetstream.Msg) ([]*Entry, error) {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	// Classifying may ask servers; storing must not be cut short.
	store := context.WithoutCancel(ctx)
	var accepted []received
	// An unknown key generation may mean our own chain rotated since the
	// opener was made: rebuild it once per batch, then retry with it.
	refreshedGens, refreshErr := false, error(nil)
	opened := c.openAll(msgs)
	for i, jm := range msgs {
		m, err := opened[i].m, opened[i].err
		if errors.Is(err, ErrUnknownGeneration) {
			if !refreshedGens {
				refreshedGens, refreshErr = true, c.setupOpener(store)
			}
			if refreshErr == nil {
				from, _ := c.senderOf(jm.Subject())
				m, err = c.opener.Load().Open(jm.Data(), from)
			}
		}
		if err == nil && m.Kind == KindReceipt {
			var r Receipt
			if r, err = ParseReceipt(m); err == nil {
				accepted = append(accepted, received{jm: jm, receipt: &r, from: m.From, sentAt: m.SentAt})
				continue
			}
		}
		if err != nil {
			c.reject(jm, err)
			continue
		}
		var seq uint64
		if md, err := jm.Metadata(); err == nil {
			seq = md.Sequence.Stream
		}
		trust, handle, lookup := c.classify(ctx, m.From)
		accepted = append(accepted, received{jm: jm, from: m.From, lookup: lookup, entry: &Entry{
			ID: m.ID, Incoming: true, Peer: m.From, PeerHandle: handle, From: m.From, To: m.To,
			SentAt: m.SentAt, ReceivedAt: c.now(), Kind: m.Kind, Ref: m.Ref, Body: m.Body, Seq: seq, Trust: trust,
		}})
	}
	if len(accepted) == 0 {
		return nil, nil
	}

	var fresh []*Entry
	type receiptOf struct {
		id   MessageID
		from kez.PublicKey
		at   time.Time
	}
	var receipts, early []receiptOf
	dropped := make([]string, len(accepted)) // the cap a request is over, or ""
	err := c.db.write(store, func(tx *sql.Tx) error {
		fresh, receipts, early = fresh[:0], receipts[:0], early[:0]
		clear(dropped)
		setDelivered := tx.Stmt(c.db.stmts.delivered)
		quota := c.newRequestQuota(tx)
		for i, r := range accepted {
			if r.entry != nil {
				isRequest := r.entry.Trust == TrustRequest
				if isRequest {
					over, err := quota.admit(r.entry)
					if err != nil {
						return err
					}
					if dropped[i] = over; over != "" {
						continue
					}
				}
				isNew, err := c.db.insertEntry(tx, r.entry)
				if err != nil {
					return err
				}
				if isNew {
					fresh = append(fresh, r.entry)
				} else if isRequest {
					quota.unadmit(r.entry)
				}
				continue
			}
			for _, id := range r.receipt.IDs {
				ro := receiptOf{id, r.from, r.sentAt}
				receipts = append(receipts, ro)
				res, err := setDelivered.Exec(r.sentAt.UnixMilli(), c.me.String(), id[:], r.from.String())
				if err != nil {
					return fmt.Errorf("chat: applying a receipt: %w", err)
				}
				if n, _ := res.RowsAffected(); n == 0 {
					early = append(early, ro)
				}
			}
		}
		return nil
	})
	if err != nil {
		for _, r := range accepted {
			_ = r.jm.NakWithDelay(time.Second)
		}
		return nil, fmt.Errorf("chat: storing received messages: %w", err)
	}
	// Stored: now the server may forget them. A lost ack only means a
	// redelivery, which the (sender, ID) key drops. Requests over a cap
	// were not stored: they are terminated, so never delivered again.
	lookups := map[kez.PublicKey]bool{}
	nDropped := 0
	for i, r := range accepted {
		if over := dropped[i]; over != "" {
			nDropped++
			c.stats.requestsDropped.Add(1)
			c.log.Debug("dropped a message request over the cap", "cap", over, "from", r.from, "id", r.entry.ID, "bytes", len(r.entry.Body))
			if err := r.jm.TermWithReason("over the recipient's cap on message requests"); err != nil {
				c.log.Debug("terminating a delivery", "err", err)
			}
			continue
		}
		if err := r.jm.Ack(); err != nil {
			c.log.Debug("acknowledging a delivery", "err", err)
		}
		if r.receipt != nil {
			c.stats.receiptsReceived.Add(1)
		}
		if r.lookup {
			lookups[r.from] = true
		}
	}
	c.lookupStored(store, lookups)
	c.stats.duplicates.Add(uint64(len(accepted) - len(fresh) - countReceipts(accepted) - nDropped))
	for _, e := range fresh {
		c.stats.received.Add(1)
		switch e.Trust {
		case TrustHeld:
			c.stats.held.Add(1)
		case TrustRequest:
			c.stats.requests.Add(1)
		}
	}
	for _, r := range early {
		c.rememberEarlyReceipt(r.id, r.from, r.at)
	}
	for _, r := range receipts {
		c.notifyReceipt(r.id, r.from, r.at)
	}
	c.queueReceipts(fresh)
	return fresh, nil
}

// opened is the outcome of opening one delivery.
type opened struct {
	m   *Message
	err error
}

// openAll opens a batch of deliveries, expecting each subject's sender
// token as the sender, on up to GOMAXPROCS goroutines: opening (one X25519
// and one ed25519 verification each) is most of the cost of receiving.
func (c *Client) openAll(msgs []jetstream.Msg) []opened {
	out := make([]opened, len(msgs))
	o := c.opener.Load()
	one := func(i int) {
		from, err := c.senderOf(msgs[i].Subject())
		if err == nil {
			out[i].m, err = o.Open(msgs[i].Data(), from)
		}
		out[i].err = err
	}
	workers := min(runtime.GOMAXPROCS(0), len(msgs)/minPerWorker)
	if workers <= 1 {
		for i := range msgs {
			one(i)
		}
		return out
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(msgs); i = int(next.Add(1) - 1) {
				one(i)
			}
		})
	}
	wg.Wait()
	return out
}

// minPerWorker is the smallest share of a batch worth another goroutine.
const minPerWorker = 4

func countReceipts(rs []received) int {
	n := 0
	for _, r := range rs {
		if r.receipt != nil {
			n++
		}
	}
	return n
}

// senderOf returns the sender token of an inbox subject addressed to this
// user: kez.v1.inbox.<me>.<sender>.
func (c *Client) senderOf(subject string) (kez.PublicKey, error) {
	rest, ok := strings.CutPrefix(subject, inboxPrefix+c.me.String()+".")
	if !ok || strings.Contains(rest, ".") {
		return kez.PublicKey{}, fmt.Errorf("%w: subject %q is not an inbox subject of this user", ErrMalformed, subject)
	}
	k, err := kez.ParsePublicKey(rest)
	if err != nil {
		return kez.PublicKey{}, fmt.Errorf("%w: the sender token of subject %q is not a key", ErrMalformed, subject)
	}
	return k, nil
}

// reject drops a delivery that did not open: it is logged and terminated,
// so the server does not deliver it again, and nothing is stored or shown.
func (c *Client) reject(jm jetstream.Msg, err error) {
	c.stats.rejected.Add(1)
	c.log.Warn("rejected a message that failed verification", "subject", jm.Subject(), "err", err)
	if terr := jm.TermWithReason("rejected by the recipient: " + firstLine(err.Error())); terr != nil {
		c.log.Debug("terminating a delivery", "err", terr)
	}
}

func firstLine(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}

// classify decides the trust of a message from key from and the handle to
// show it under. For a contact it may check the contact's chain (at most
// once per refresh interval); for a stranger it asks no server: lookup
// says the sender's handle is to be looked up once the message is stored.
func (c *Client) classify(ctx context.Context, from kez.PublicKey) (trust Trust, handle string, lookup bool) {
	c.mu.Lock()
	cs := c.byKey[from]
	var newKeyOf *contactState
	if cs == nil {
		for _, o := range c.byHandle {
			if o.c.Flag == FlagKeyChanged && o.c.FlagKey == from {
				newKeyOf = o
				break
			}
		}
	}
	c.mu.Unlock()
	switch {
	case cs != nil:
		if err := c.refreshContact(ctx, cs, false, false); errors.Is(err, ErrKeyChanged) || errors.Is(err, ErrChainRewritten) {
			return TrustHeld, cs.c.Handle, false
		} else if err != nil {
			c.log.Warn("checking a contact", "handle", cs.c.Handle, "err", err)
		}
		return TrustTrusted, cs.c.Handle, false
	case newKeyOf != nil:
		return TrustHeld, newKeyOf.c.Handle, false
	}
	handle, flagged, lookup := c.knownRequester(ctx, from)
	if flagged != nil {
		return TrustHeld, handle, false
	}
	return TrustRequest, handle, lookup
}

// queueReceipts hands the new trusted text messages to the receipt worker,
// so sealing receipts is off the path that shows messages.
func (c *Client) queueReceipts(fresh []*Entry) {
	var due []*Entry
	for _, e := range fresh {
		if e.Trust == TrustTrusted && e.Kind == KindText {
			due = append(due, e)
		}
	}
	if len(due) == 0 {
		return
	}
	c.rmu.RLock()
	defer c.rmu.RUnlock()
	if !c.rclosed {
		c.receipts <- due
	}
}

// receiptDelay is how long the receipt worker gathers messages before it
// sends receipts, so a burst costs one sealed receipt per sender, not one
// per message.
const receiptDelay = 50 * time.Millisecond

// receiptWorker sends the queued receipts, gathering what queues up within
// receiptDelay, until Close (which sends what is left at once).
func (c *Client) receiptWorker() {
	defer close(c.receiptsDone)
	for due := range c.receipts {
		timer := time.NewTimer(receiptDelay)
	gather:
		for len(due) < 4*MaxReceiptIDs {
			select {
			case more, ok := <-c.receipts:
				if !ok {
					break gather
				}
				due = append(due, more...)
			case <-timer.C:
				break gather
			}
		}
		timer.Stop()
		c.sendReceipts(context.Background(), due)
	}
}

// sendReceipts sends one delivery receipt per sender (per MaxReceiptIDs
// messages) for the new trusted text messages, to contacts only (a
// stranger does not learn that the address is read). Failures are logged:
// a receipt is a courtesy.
func (c *Client) sendReceipts(ctx context.Context, fresh []*Entry) {
	bySender := map[kez.PublicKey][]MessageID{}
	var order []kez.PublicKey
	for _, e := range fresh {
		if e.Trust != TrustTrusted || e.Kind != KindText {
			continue
		}
		if _, ok := bySender[e.From]; !ok {
			order = append(order, e.From)
		}
		bySender[e.From] = append(bySender[e.From], e.ID)
	}
	for _, from := range order {
		c.mu.Lock()
		cs := c.byKey[from]
		var ct Contact
		if cs != nil {
			ct = cs.c
		}
		c.mu.Unlock()
		if cs == nil || ct.Flag != FlagNone {
			continue
		}
		rcpt := Recipient{Key: ct.Key, EncryptionKey: ct.EncryptionKey, Generation: ct.Generation}
		ids := bySender[from]
		for len(ids) > 0 {
			n := min(len(ids), MaxReceiptIDs)
			m, err := Receipt{Status: ReceiptDelivered, IDs: ids[:n]}.message()
			ids = ids[n:]
			if err == nil {
				_, err = c.publish(context.WithoutCancel(ctx), rcpt, ct.Handle, m, false, nil)
			}
			if err != nil {
				c.log.Warn("could not send a delivery receipt", "to", ct.Handle, "err", err)
				continue
			}
			c.stats.receiptsSent.Add(1)
		}
	}
}
