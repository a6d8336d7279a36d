package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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
// background, and [Client.Requests] shows the confirmed handle. A message
// the user sent from another of their devices (its sent copy) comes with
// Entry.Incoming false. Run does not mark anything read: call
// [Client.MarkRead] for what was shown.
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
	jm     jetstream.Msg
	from   kez.PublicKey // the sending device: the subject's, which the envelope matched
	who    sender        // the device's person
	m      *Message      // v1: opened before the transaction; v2 and v3: opened in it
	v2     bool
	v3     bool // a group envelope (groups_recv.go)
	seq    uint64
	trust  Trust // the sender's classification
	handle string
	lookup bool // a request whose sender's handle is to be looked up

	// What the transaction made of it (set again each time it runs).
	entry          *Entry          // a message stored (or a duplicate)
	receipt        *Receipt        // a receipt applied
	receiptChanged []MessageID     // the sent messages the receipt changed
	control        bool            // a control message (session-reset, sync): nothing to store
	syncContact    bool            // a sync-contact queued, to apply once stored
	syncKeys       bool            // a sync-keys queued, to check against a fresher chain
	keysStored     bool            // a sync-keys stored
	history        []*contactState // contacts a sync-history chunk changed, to cache once stored
	logView        *logView        // a contact's log view, to check once stored
	err            error           // refused: v2 that did not open, or a downgrade
	dropped        string          // the request cap it is over, or ""
	isNew          bool            // entry was not stored before
}

// process opens, classifies and stores a batch of deliveries, then
// acknowledges them. It returns the entries that were new. Format v1
// envelopes are opened first, in parallel; session (v2) envelopes are
// opened in the transaction that stores them and the session state they
// leave (see sessions.go). Deliveries that do not open are terminated
// (never delivered again) and logged. If storing fails, nothing is
// acknowledged and the batch is delivered again later.
func (c *Client) process(ctx context.Context, msgs []jetstream.Msg) ([]*Entry, error) {
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	// Classifying may ask servers; storing must not be cut short.
	store := context.WithoutCancel(ctx)
	if err := c.loadBlocked(store); err != nil {
		c.log.Warn("could not read the blocked keys; using those read before", "err", err)
	}
	var items []*received
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
			if o := c.opener.Load(); refreshErr == nil && o != nil {
				from, _ := c.senderOf(jm.Subject())
				m, err = o.Open(jm.Data(), from)
			}
		}
		if err != nil {
			c.reject(jm, err)
			continue
		}
		r := &received{jm: jm, m: m, v2: opened[i].v2, v3: opened[i].v3, from: opened[i].from}
		if md, err := jm.Metadata(); err == nil {
			r.seq = md.Sequence.Stream
		}
		items = append(items, r)
	}
	if len(items) == 0 {
		return nil, nil
	}
	// Map each sending device to its person, and classify each person
	// once (a contact's chain may be checked): before the transaction,
	// which must not wait for servers. A delivery from a revoked device,
	// or one its claimed person's chain does not list, is refused; one
	// whose device cannot be looked up now waits and comes again.
	type class struct {
		trust  Trust
		handle string
		lookup bool
	}
	senders := map[kez.PublicKey]sender{}
	classes := map[kez.PublicKey]class{}
	kept := items[:0]
	for _, r := range items {
		if c.blocked.has(r.from) {
			c.dropBlocked(r.jm, r.from)
			continue
		}
		who, ok := senders[r.from]
		if !ok {
			who = c.whoSent(ctx, r.from)
			senders[r.from] = who
		}
		switch {
		case who.later:
			c.log.Debug("a delivery from a device not known yet waits", "device", r.from)
			_ = r.jm.NakWithDelay(laterDelay)
			continue
		case who.err != nil:
			c.reject(r.jm, who.err)
			continue
		case !r.v2 && !r.v3 && who.person != r.from:
			// Format 1 travels only between persons' primary devices.
			c.reject(r.jm, fmt.Errorf("%w: a format 1 envelope from %s, a device of %s", ErrNotForMe, r.from, who.person))
			continue
		}
		if c.blocked.has(who.person) && !who.own {
			c.dropBlocked(r.jm, r.from)
			continue
		}
		r.who = who
		if who.own || r.m != nil && r.m.Kind == KindReceipt {
			kept = append(kept, r)
			continue // v1 receipts are applied, never stored; own devices send sync messages
		}
		cl, ok := classes[who.person]
		if !ok {
			cl.trust, cl.handle, cl.lookup = c.classify(ctx, who.person)
			classes[who.person] = cl
		}
		if cl.trust == TrustHeld && c.blockedContact(cl.handle) {
			// The new key of a blocked contact (§5.1).
			c.dropBlocked(r.jm, r.from)
			continue
		}
		r.trust, r.handle, r.lookup = cl.trust, cl.handle, cl.lookup
		kept = append(kept, r)
	}
	items = kept
	if len(items) == 0 {
		return nil, nil
	}

	var fresh []*Entry
	var bs *batchSessions
	var gb *groupBatch
	undecryptable := map[kez.PublicKey]int{}
	now := c.now()
	err := c.db.write(store, func(tx *sql.Tx) error {
		fresh, bs, gb = fresh[:0], newBatchSessions(), newGroupBatch()
		clear(undecryptable)
		quota := c.newRequestQuota(tx)
		gb.quota = quota // an invitation's group messages are requests too
		for _, r := range items {
			r.entry, r.receipt, r.control, r.err, r.dropped, r.isNew, r.history = nil, nil, false, nil, "", false, nil
			r.receiptChanged = nil
			r.logView = nil
			r.syncKeys, r.keysStored = false, false
			if r.v3 {
				if err := c.receiveGroupTx(tx, gb, r, now); err != nil {
					return err
				}
				if r.entry != nil && r.isNew {
					fresh = append(fresh, r.entry)
				}
				continue
			}
			if r.v2 {
				var err error
				if r.m, err = c.openV2(tx, bs, r.jm.Data(), r.from, now); err != nil {
					if errors.Is(err, ErrUnknownSession) {
						undecryptable[r.from]++
					} else if !isRefusal(err) {
						return err // the database failed: the batch is delivered again
					}
					r.err = err
					continue
				}
			} else if established, err := bs.established(tx, c.db, r.from); err != nil {
				return err
			} else if established {
				r.err = fmt.Errorf("%w: %s", ErrDowngrade, r.from)
				continue
			}
			m := r.m
			person := r.who.person
			if isSyncKind(m.Kind) != r.who.own && !(r.who.own && (m.Kind == KindGroupKey || m.Kind == KindGroupUpdate)) {
				// Sync messages come from the user's own devices, and
				// those send nothing else.
				r.err = fmt.Errorf("%w: kind %q from %s (a device of %s)", ErrNotOwnDevice, m.Kind, r.from, person)
				continue
			}
			switch m.Kind {
			case KindReceipt:
				rc, err := ParseReceipt(m)
				if err != nil {
					r.err = err
					continue
				}
				r.receipt = &rc
				if r.receiptChanged, err = c.applyReceiptTx(tx, &rc, person, m.SentAt.UnixMilli()); err != nil {
					return err
				}
				continue
			case KindSessionReset:
				// The peer lost its state: what it did not acknowledge is
				// sent again, whichever session it was sent in.
				r.control = true
				if r.v2 {
					bs.reset[r.from] = true
				}
				continue
			case KindLogView:
				// Checked once stored (afterLogViews): only a contact's.
				r.control = true
				if r.trust == TrustRequest {
					c.stats.logViewsDropped.Add(1)
					continue
				}
				v, err := parseLogView(m.Body)
				if err != nil {
					r.err = err
					continue
				}
				r.logView = &v
				continue
			case KindGroupKey, KindGroupUpdate, KindGroupRead:
				r.control = true
				if err := c.applyGroupKind(tx, gb, r, now); err != nil {
					if !isRefusal(err) {
						return err
					}
					r.err = err
				}
				continue
			case KindSyncSent, KindSyncRead, KindSyncContact, KindSyncHistory, KindSyncKeys:
				if err := c.applySync(tx, r, now); err != nil {
					if !isRefusal(err) {
						return err
					}
					r.err = err
				}
				if r.entry != nil && r.isNew {
					fresh = append(fresh, r.entry)
				}
				continue
			}
			r.entry = &Entry{
				ID: m.ID, Incoming: true, Peer: person, PeerHandle: r.handle, From: person, To: c.me,
				SentAt: m.SentAt, ReceivedAt: now, Kind: m.Kind, Ref: m.Ref, Body: m.Body, Seq: r.seq, Trust: r.trust,
			}
			isRequest := r.entry.Trust == TrustRequest
			if isRequest {
				over, err := quota.admit(r.entry)
				if err != nil {
					return err
				}
				if r.dropped = over; over != "" {
					continue
				}
			}
			isNew, err := c.db.insertEntry(tx, r.entry)
			if err != nil {
				return err
			}
			if r.isNew = isNew; isNew {
				fresh = append(fresh, r.entry)
			} else if isRequest {
				quota.unadmit(r.entry)
			}
		}
		for peer, n := range undecryptable {
			if err := c.db.countUndecryptable(tx, peer, n, now); err != nil {
				return err
			}
		}
		for peer := range bs.reset {
			if err := c.db.markResendDue(tx, peer, now); err != nil {
				return err
			}
		}
		if err := gb.save(tx); err != nil {
			return err
		}
		return bs.save(tx, c.db, now)
	})
	if err != nil {
		for _, r := range items {
			_ = r.jm.NakWithDelay(time.Second)
		}
		return nil, fmt.Errorf("chat: storing received messages: %w", err)
	}
	// Stored: now the server may forget them. A lost ack only means a
	// redelivery, which the (sender, ID) key, or the session, drops.
	// Requests over a cap were not stored, and deliveries that did not
	// open cannot be: they are terminated, so never delivered again.
	lookups := map[kez.PublicKey]bool{}
	for _, r := range items {
		switch {
		case r.err != nil && errors.Is(r.err, ErrReplay):
			// A redelivery of a message stored before (its key is used
			// up), or a replay: dropped as a duplicate.
			c.stats.duplicates.Add(1)
			c.log.Debug("dropped a message whose key was already used", "from", r.from, "err", r.err)
			c.ack(r.jm)
		case r.err != nil && errors.Is(r.err, ErrUnknownSession):
			c.stats.undecryptable.Add(1)
			c.log.Warn("could not decrypt a message: no session for it (this client lost its state)", "from", r.from, "err", r.err)
			if err := r.jm.TermWithReason("undecryptable: no session"); err != nil {
				c.log.Debug("terminating a delivery", "err", err)
			}
		case r.err != nil:
			if errors.Is(r.err, ErrDowngrade) {
				c.stats.downgrades.Add(1)
			}
			if errors.Is(r.err, ErrStaleEpoch) {
				c.stats.groupStale.Add(1)
			}
			c.reject(r.jm, r.err)
		case r.dropped != "":
			c.stats.requestsDropped.Add(1)
			c.log.Debug("dropped a message request over the cap", "cap", r.dropped, "from", r.from, "id", r.entry.ID, "bytes", len(r.entry.Body))
			if err := r.jm.TermWithReason("over the recipient's cap on message requests"); err != nil {
				c.log.Debug("terminating a delivery", "err", err)
			}
		default:
			c.ack(r.jm)
			switch {
			case r.receipt != nil:
				c.stats.receiptsReceived.Add(1)
				for _, id := range r.receipt.IDs {
					c.notifyReceipt(id, r.who.person, r.m.SentAt)
				}
				c.tellReceipt(r.who.person, r.receipt.Status, r.receiptChanged)
			case r.entry != nil && !r.isNew:
				c.stats.duplicates.Add(1)
			}
			if r.entry != nil && r.isNew && r.lookup {
				lookups[r.who.person] = true
			}
		}
	}
	c.lookupStored(store, lookups)
	fresh = append(fresh, c.afterGroups(store, gb)...)
	c.nameGroupSenders(store, fresh)
	for _, e := range fresh {
		c.stats.received.Add(1)
		switch e.Trust {
		case TrustHeld:
			c.stats.held.Add(1)
		case TrustRequest:
			c.stats.requests.Add(1)
		}
	}
	c.queueReceipts(fresh)
	c.afterSessions(store, undecryptable, bs.reset)
	c.afterSync(items)
	c.afterLogViews(store, items)
	c.dueKick(openedFrom(items)...)
	return fresh, nil
}

// dropBlocked acknowledges and drops a delivery from a blocked person or
// key (docs/spec/chat.md §2 rule 4): it is never delivered again.
func (c *Client) dropBlocked(jm jetstream.Msg, from kez.PublicKey) {
	c.stats.blocked.Add(1)
	c.log.Debug("dropped a message from a blocked sender", "from", from)
	c.ack(jm)
}

func (c *Client) ack(jm jetstream.Msg) {
	if err := jm.Ack(); err != nil {
		c.log.Debug("acknowledging a delivery", "err", err)
	}
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
		if e.Incoming && e.Trust == TrustTrusted && e.Kind == KindText && e.Group == "" {
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
// stranger does not learn that the address is read), sealed to each of
// the sender person's current devices. Failures are logged: a receipt is
// a courtesy.
func (c *Client) sendReceipts(ctx context.Context, fresh []*Entry) {
	c.sendReceiptsOf(ctx, ReceiptDelivered, fresh)
}

// sendReceiptsOf sends receipts of this status for the trusted received
// text messages among es, batched per sender person, to contacts that are
// neither flagged nor blocked.
func (c *Client) sendReceiptsOf(ctx context.Context, status string, es []*Entry) {
	bySender := map[kez.PublicKey][]MessageID{}
	var order []kez.PublicKey
	for _, e := range es {
		if !e.Incoming || e.Trust != TrustTrusted || e.Kind != KindText || e.Group != "" {
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
		var devs []chainDevice
		if cs != nil {
			ct, devs = cs.c, cs.devices
		}
		c.mu.Unlock()
		if cs == nil || ct.Flag != FlagNone || c.blocked.has(from) {
			continue
		}
		ts := c.contactTargets(&ct, devs)
		ids := bySender[from]
		for len(ids) > 0 {
			n := min(len(ids), MaxReceiptIDs)
			m, err := Receipt{Status: status, IDs: ids[:n]}.message()
			ids = ids[n:]
			if err == nil {
				_, err = c.publish(context.WithoutCancel(ctx), ts, m, false, nil)
			}
			if err != nil {
				c.log.Warn("could not send a receipt", "status", status, "to", ct.Handle, "err", err)
				continue
			}
			if status == ReceiptRead {
				c.stats.readReceiptsSent.Add(1)
			} else {
				c.stats.receiptsSent.Add(1)
			}
		}
	}
}
