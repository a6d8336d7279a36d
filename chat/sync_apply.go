package chat

// Sending the sync messages to the user's other devices, and applying
// those that arrive from them (docs/spec/chat.md §8.4).

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// syncToOwn seals a sync message to each of the user's other current
// devices and publishes it (kept in the outbox until the stream took it).
// Failures are logged: the other devices catch up with the next one.
func (c *Client) syncToOwn(ctx context.Context, kind Kind, body []byte) {
	if c.nc == nil {
		return
	}
	own := c.otherOwnDevices(ctx)
	if len(own) == 0 {
		return
	}
	ts := make([]target, len(own))
	for i, d := range own {
		ts[i] = c.ownTarget(d)
	}
	if _, err := c.publishIn(context.WithoutCancel(ctx), ts, Message{Kind: kind, Body: body}, false, false, true, nil); err != nil {
		c.log.Warn("could not tell your other devices", "kind", string(kind), "err", err)
	}
}

// syncRead tells the user's other devices that these received messages
// were shown.
func (c *Client) syncRead(ctx context.Context, entries []*Entry) {
	var marks []readMark
	for _, e := range entries {
		if e.Incoming {
			marks = append(marks, readMark{From: e.From, ID: e.ID})
		}
	}
	for len(marks) > 0 {
		n := min(len(marks), maxReadMarks)
		c.syncToOwn(ctx, KindSyncRead, marshalSyncRead(marks[:n]))
		marks = marks[n:]
	}
}

// syncContactOut tells the user's other devices about a contact pinned or
// verified here.
func (c *Client) syncContactOut(ctx context.Context, op byte, ct *Contact) {
	s := syncContact{Op: op, Key: ct.Key, Handle: ct.Handle}
	if op == syncContactPinned {
		s.Seqno, s.Head = ct.Pin.Seqno, ct.Pin.Head
	}
	c.syncToOwn(ctx, KindSyncContact, marshalSyncContact(s))
}

// applySync applies, in the receiving transaction, a sync message from
// one of the user's own devices (r.who.own). A body that does not parse
// is refused (ErrMalformed).
func (c *Client) applySync(tx *sql.Tx, r *received, now time.Time) error {
	m := r.m
	switch m.Kind {
	case KindSyncSent:
		ss, err := parseSyncSent(m.Body)
		if err != nil {
			return err
		}
		r.entry = &Entry{
			ID: m.ID, Peer: ss.To, PeerHandle: c.handleOf(ss.To), From: c.me, To: ss.To, SentAt: m.SentAt, ReceivedAt: now,
			Kind: ss.Kind, Ref: m.Ref, Body: ss.Body, Seq: r.seq, Trust: TrustTrusted, State: StateSent, Read: true,
		}
		r.isNew, err = c.db.insertEntry(tx, r.entry)
		return err
	case KindSyncRead:
		marks, err := parseSyncRead(m.Body)
		if err != nil {
			return err
		}
		for _, mk := range marks {
			if _, err := tx.Exec(`UPDATE messages SET read = 1 WHERE from_key = ? AND id = ? AND incoming = 1`, mk.From.String(), mk.ID[:]); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		r.control = true
		return nil
	case KindSyncContact:
		if _, err := parseSyncContact(m.Body); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO contact_sync (body, at) VALUES (?, ?)`, m.Body, now.UnixMilli()); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		r.control, r.syncContact = true, true
		return nil
	case KindSyncHistory:
		return c.applySyncHistory(tx, r, now)
	case KindSyncKeys:
		return c.applySyncKeys(tx, r, now.UnixMilli())
	}
	return fmt.Errorf("%w: sync kind %q", ErrMalformed, m.Kind)
}

// applySyncHistory applies a sync-history chunk (history_sync.go); the
// contacts it changed are cached once the batch is stored (afterSync).
func (c *Client) applySyncHistory(tx *sql.Tx, r *received, now time.Time) error {
	r.control = true
	res, cached, err := c.applyHistoryTx(tx, r.from, r.m.Body, now)
	if err != nil {
		return err
	}
	r.history = cached
	c.log.Info("history chunk applied", "device", r.from, "index", res.Index, "contacts", res.Contacts, "messages", res.Messages, "last", res.LastOfTransfer)
	return nil
}

// handleOf returns the handle of the contact whose key is k, or "".
func (c *Client) handleOf(k kez.PublicKey) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs := c.byKey[k]; cs != nil {
		return cs.c.Handle
	}
	return ""
}

// afterSync starts applying the sync-contact and sync-keys messages a
// stored batch queued, and reads the keys it stored.
func (c *Client) afterSync(items []*received) {
	var keys, queuedKeys bool
	for _, r := range items {
		if r.history != nil && r.err == nil {
			c.cacheImported(r.history)
		}
		keys = keys || r.keysStored && r.err == nil
		queuedKeys = queuedKeys || r.syncKeys && r.err == nil
	}
	if keys {
		if err := c.loadKeyring(context.Background()); err != nil {
			c.log.Warn("reading the encryption keys", "err", err)
		}
	}
	if queuedKeys {
		c.background(c.applyQueuedKeys)
	}
	for _, r := range items {
		if r.syncContact && r.err == nil {
			c.background(c.applyContactSyncs)
			return
		}
	}
}

// applyContactSyncs applies the queued sync-contact messages, oldest
// first; one that fails for a reason that may pass (a server down) stays
// queued for the next batch or start.
func (c *Client) applyContactSyncs(ctx context.Context) {
	c.syncMu.Lock()
	defer c.syncMu.Unlock()
	for ctx.Err() == nil {
		var id int64
		var body []byte
		err := c.db.db.QueryRowContext(ctx, `SELECT id, body FROM contact_sync ORDER BY id LIMIT 1`).Scan(&id, &body)
		if err != nil {
			if !errors.Is(err, sql.ErrNoRows) {
				c.log.Warn("reading the contacts your other devices sent", "err", err)
			}
			return
		}
		s, err := parseSyncContact(body)
		if err == nil {
			err = c.applySyncContact(ctx, s)
		}
		transient := lookupFailed(err) && !errors.Is(err, sigchain.ErrFork) && !errors.Is(err, sigchain.ErrRollback)
		if err != nil && transient && ctx.Err() == nil {
			c.log.Warn("could not apply a contact your other device sent; trying again later", "err", err)
			return
		}
		if err != nil {
			c.log.Warn("a contact your other device sent was not applied", "err", err)
		}
		if err := c.db.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`DELETE FROM contact_sync WHERE id = ?`, id)
			return err
		}); err != nil {
			return
		}
	}
}

// applySyncContact pins or verifies here what another device of the user
// pinned or verified. A pin is taken only as this device can check it:
// the handle, resolved now, names the same key, and its chain contains
// the head the other device pinned.
func (c *Client) applySyncContact(ctx context.Context, s syncContact) error {
	hh, err := c.rules().Parse(s.Handle)
	if err != nil {
		return err
	}
	c.mu.Lock()
	cs := c.byHandle[hh.String()]
	var cur Contact
	if cs != nil {
		cur = cs.c
	}
	c.mu.Unlock()
	switch s.Op {
	case syncContactVerified:
		if cs == nil || cur.Key != s.Key || cur.Verified() || cur.Flag != FlagNone {
			return nil
		}
		_, err := c.markVerified(ctx, cs, cur, "on another of your devices, key "+s.Key.String())
		return err
	case syncContactPinned:
		if cs != nil && cur.Key == s.Key && cur.Flag == FlagNone && cur.Pin.Seqno >= s.Seqno {
			return nil
		}
		res, err := c.resolver.ResolveFresh(ctx, hh, nil)
		if err != nil {
			return fmt.Errorf("chat: resolving %s: %w", hh, err)
		}
		if res.Key != s.Key {
			return fmt.Errorf("chat: %s names %s now, not the key %s your other device pinned: %w", hh, res.Key, s.Key, handles.ErrMismatch)
		}
		if err := sigchain.CheckAgainst(sigchain.Pin{Key: s.Key, Seqno: s.Seqno, Head: s.Head}, res.Links); err != nil {
			return fmt.Errorf("chat: the chain of %s does not contain the head your other device pinned: %w", hh, err)
		}
		_, err = c.pinResolved(ctx, hh, res)
		return err
	}
	return nil
}
