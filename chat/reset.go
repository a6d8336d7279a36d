package chat

// Lost session state and how no message is lost across it
// (docs/spec/chat.md §7):
//
//   - A receiver with no session for a v2 envelope (its state folder was
//     wiped, or it was restored from the words) counts it per sender,
//     tells the application ([SessionReset]) and, if the sender is a
//     contact, starts a new session with them at once: a message of kind
//     session-reset, sealed as the handshake of a fresh session.
//   - A client that accepts a handshake from a peer with whom it has an
//     established session takes it as that reset: it seals again, under
//     the newest session, every message it sent the peer that has no
//     receipt yet, and publishes them. The peer drops those it has (same
//     sender and message ID), and shows the others once.

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// SessionReset tells that messages from a peer could not be decrypted
// because this client has no session for them (see
// Config.OnSessionReset).
type SessionReset struct {
	Peer   kez.PublicKey
	Handle string // the contact's handle; "" for a key that is no contact
	// Count is how many messages of one received batch could not be
	// decrypted.
	Count int
	At    time.Time
	// Reset says a new session with the peer is being started (a
	// contact); for a key that is no contact it starts once it is added
	// as one.
	Reset bool
}

// String is the notice to show: "@bob@kez.lat: 3 messages could not be
// decrypted (session reset)".
func (r SessionReset) String() string {
	who := r.Peer.String()
	if r.Handle != "" {
		who = "@" + r.Handle
	}
	n := strconv.Itoa(r.Count) + " messages"
	if r.Count == 1 {
		n = "1 message"
	}
	return who + ": " + n + " could not be decrypted (session reset)"
}

// Bounds of the resends after a peer's reset.
const (
	// maxResend is how many messages without a receipt are sent again.
	maxResend = 1000
	// maxResendsPerMessage is how often one message is sealed again: a
	// contact who never sends receipts and starts a session every minute
	// must not make this client republish the same mail forever.
	maxResendsPerMessage = 3
	// resendWindow is how old they may be: the inbox stream does not keep
	// mail longer.
	resendWindow = 30 * 24 * time.Hour
	// resetRetry is how long a session this client started, not yet
	// answered, stands for a reset: no new one is started meanwhile.
	resetRetry = 10 * time.Minute
)

// resets keeps two resets of one peer from running at once, spaces the
// resends to one peer, and remembers the strangers already reported.
type resets struct {
	mu        sync.Mutex
	resetting map[kez.PublicKey]bool
	resent    map[kez.PublicKey]time.Time // the last resend to a peer
	told      map[kez.PublicKey]bool      // strangers whose undecryptable messages were reported
	delayed   map[kez.PublicKey]bool      // a resend waits for resendInterval
	started   map[kez.PublicKey]time.Time // the last reset handshake the stream acknowledged
}

// resendInterval spaces the resends to one peer: a peer that starts
// session after session cannot make this client publish its unacknowledged
// messages again and again (a resend asked sooner stays due, for the next
// one or the next start).
const resendInterval = time.Minute

// maxRemembered bounds the peers the resets remember in memory.
const maxRemembered = 4096

// mark sets m[k] to v in a map bounded by maxRemembered.
func mark[V any](m *map[kez.PublicKey]V, k kez.PublicKey, v V) {
	if *m == nil || len(*m) >= maxRemembered {
		*m = map[kez.PublicKey]V{}
	}
	(*m)[k] = v
}

// countUndecryptable records n undecryptable messages from peer in tx:
// a new session with them is due.
func (s *store) countUndecryptable(tx *sql.Tx, peer kez.PublicKey, n int, now time.Time) error {
	_, err := tx.Exec(`INSERT INTO undecryptable (peer, count, last_at, reset_due) VALUES (?, ?, ?, 1)
		ON CONFLICT (peer) DO UPDATE SET count = count + excluded.count, last_at = excluded.last_at, reset_due = 1`,
		peer.String(), n, now.UnixMilli())
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	return nil
}

// markResendDue records in tx that what was sent to peer without a
// receipt is to be sent again.
func (s *store) markResendDue(tx *sql.Tx, peer kez.PublicKey, now time.Time) error {
	_, err := tx.Exec(`INSERT INTO resend_due (peer, at) VALUES (?, ?) ON CONFLICT (peer) DO UPDATE SET at = excluded.at`,
		peer.String(), now.UnixMilli())
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	return nil
}

// afterSessions acts on what a stored batch showed, before the batch's
// Sync or Run step returns: a notice, and a new session for a contact,
// for the senders of undecryptable messages; the resends due to peers
// that reset. What it cannot finish stays due (in chat.db) and is done
// when the client next starts.
func (c *Client) afterSessions(ctx context.Context, undecryptable map[kez.PublicKey]int, reset map[kez.PublicKey]bool) {
	if len(undecryptable) == 0 && len(reset) == 0 {
		return
	}
	// Receiving waits for this: bounded (a broker or sig-server that does
	// not answer leaves it due).
	ctx, cancel := context.WithTimeout(ctx, 2*c.cfg.RefreshTimeout)
	defer cancel()
	for peer, n := range undecryptable {
		_, isContact := c.deviceTarget(peer)
		ct, _ := c.trustedContact(c.personOf(peer))
		// A stranger is reported once per client run: it chooses what it
		// sends, and could fill the notices with junk.
		rs := &c.resets
		rs.mu.Lock()
		tell := isContact || ct.Handle != "" || !rs.told[peer]
		if !isContact {
			mark(&rs.told, peer, true)
		}
		rs.mu.Unlock()
		if tell && c.cfg.OnSessionReset != nil {
			c.cfg.OnSessionReset(SessionReset{Peer: peer, Handle: ct.Handle, Count: n, At: c.now(), Reset: isContact})
		}
		if isContact {
			if err := c.resetSession(ctx, peer); err != nil {
				c.log.Warn("could not start a new session after undecryptable messages; trying again at the next start", "peer", ct.Handle, "err", err)
			}
		}
	}
	for peer := range reset {
		if err := c.resend(ctx, peer); err != nil {
			c.log.Warn("could not send again the messages without a receipt; trying again at the next start", "peer", peer, "err", err)
		}
	}
}

// trustedContact returns the contact with this key, if it is one and not
// flagged.
func (c *Client) trustedContact(key kez.PublicKey) (Contact, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.byKey[key]
	if cs == nil {
		return Contact{}, false
	}
	return cs.c, cs.c.Flag == FlagNone
}

// runDue does the resets and resends left due (by a client that stopped
// before it finished them).
func (c *Client) runDue(ctx context.Context) {
	peers := func(q string) []kez.PublicKey {
		rows, err := c.db.db.QueryContext(ctx, q)
		if err != nil {
			return nil
		}
		defer rows.Close()
		var out []kez.PublicKey
		for rows.Next() {
			var s string
			if rows.Scan(&s) == nil {
				if k, err := kez.ParsePublicKey(s); err == nil {
					out = append(out, k)
				}
			}
		}
		return out
	}
	for _, peer := range peers(`SELECT peer FROM undecryptable WHERE reset_due = 1`) {
		if _, ok := c.deviceTarget(peer); ok {
			if err := c.resetSession(ctx, peer); err != nil && ctx.Err() == nil {
				c.log.Warn("could not start a new session after undecryptable messages", "peer", peer, "err", err)
			}
		}
	}
	for _, peer := range peers(`SELECT peer FROM resend_due`) {
		if err := c.resend(ctx, peer); err != nil && ctx.Err() == nil {
			c.log.Warn("could not send again the messages without a receipt", "peer", peer, "err", err)
		}
	}
}

// deviceTarget returns the target of the device peer: a device of a
// trusted contact, or one of the user's own; false for anyone else.
func (c *Client) deviceTarget(peer kez.PublicKey) (target, bool) {
	person := c.personOf(peer)
	if person == c.me {
		return c.ownTarget(peer), peer != c.devKey
	}
	ct, ok := c.trustedContact(person)
	if !ok {
		return target{}, false
	}
	return deviceTarget(&ct, peer), true
}

// resetSession starts a new session with the device peer (of a contact,
// or one of the user's own) by sending it a session-reset message and
// waiting for the stream to store it, unless a session this client
// started is waiting for its answer (started less than resetRetry ago),
// then records that the reset is no longer due.
func (c *Client) resetSession(ctx context.Context, peer kez.PublicKey) error {
	t, ok := c.deviceTarget(peer)
	if !ok || c.nc == nil {
		return nil // due once they are a contact again
	}
	rs := &c.resets
	rs.mu.Lock()
	if rs.resetting[peer] {
		rs.mu.Unlock()
		return nil
	}
	if rs.resetting == nil {
		rs.resetting = map[kez.PublicKey]bool{}
	}
	rs.resetting[peer] = true
	rs.mu.Unlock()
	defer func() {
		rs.mu.Lock()
		delete(rs.resetting, peer)
		rs.mu.Unlock()
	}()
	var established, updated int64
	err := c.db.db.QueryRowContext(ctx, `SELECT established, updated_at FROM sessions WHERE peer = ?
		ORDER BY established DESC, updated_at DESC, rowid DESC LIMIT 1`, peer.String()).Scan(&established, &updated)
	// A session this client started and the stream took, not answered
	// yet, stands for the reset. One whose handshake never reached the
	// stream (the publish failed, or the client stopped) does not: the
	// reset is sent again.
	rs.mu.Lock()
	sent, ok := rs.started[peer]
	rs.mu.Unlock()
	waiting := err == nil && established == 0 && c.now().Sub(time.UnixMilli(updated)) < resetRetry &&
		ok && c.now().Sub(sent) < resetRetry
	if !waiting {
		p, err := c.publishIn(ctx, []target{t}, Message{Kind: KindSessionReset, Body: []byte{}}, false, true, false, nil)
		if err != nil {
			return err
		}
		if _, err := p.Wait(ctx); err != nil {
			return err
		}
		rs.mu.Lock()
		mark(&rs.started, peer, c.now())
		rs.mu.Unlock()
		c.stats.sessionResets.Add(1)
		c.log.Info("started a new session after undecryptable messages", "peer", t.handle, "device", peer)
	}
	return c.db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE undecryptable SET reset_due = 0 WHERE peer = ?`, peer.String())
		return err
	})
}

// resetIfDue starts the reset of a contact just added whose messages could
// not be decrypted before.
func (c *Client) resetIfDue(ctx context.Context, peer kez.PublicKey) {
	if c.nc == nil {
		return
	}
	var due int
	err := c.db.db.QueryRowContext(ctx, `SELECT reset_due FROM undecryptable WHERE peer = ?`, peer.String()).Scan(&due)
	if err == nil && due != 0 {
		if err := c.resetSession(ctx, peer); err != nil {
			c.log.Warn("could not start a new session after undecryptable messages; trying again at the next start", "peer", peer, "err", err)
		}
	}
}

// resend seals again, if that is due, under the newest session with the
// device peer, every message sent to its person that has no receipt (at
// most maxResend, sent within resendWindow), in one transaction that also
// stores the session state and the new envelopes (in the outbox), then
// publishes them, each under a new Nats-Msg-Id. The user's own devices
// get nothing again: sent copies and sync messages are not resent.
func (c *Client) resend(ctx context.Context, peer kez.PublicKey) error {
	if c.nc == nil {
		return ErrOffline
	}
	rs := &c.resets
	rs.mu.Lock()
	if last, ok := rs.resent[peer]; ok && c.now().Sub(last) < resendInterval && !c.now().Before(last) {
		later := !rs.delayed[peer]
		if later {
			mark(&rs.delayed, peer, true)
		}
		rs.mu.Unlock()
		if !later {
			return nil // one is waiting already
		}
		c.log.Info("a resend to this peer was done less than a minute ago; this one is done a minute later", "peer", peer)
		c.background(func(ctx context.Context) {
			defer func() { rs.mu.Lock(); delete(rs.delayed, peer); rs.mu.Unlock() }()
			t := time.NewTimer(resendInterval)
			defer t.Stop()
			select {
			case <-t.C:
				if err := c.resend(ctx, peer); err != nil && ctx.Err() == nil {
					c.log.Warn("could not send again the messages without a receipt", "peer", peer, "err", err)
				}
			case <-ctx.Done():
			case <-c.bg.Stopped():
			}
		})
		return nil
	}
	mark(&rs.resent, peer, c.now())
	rs.mu.Unlock()
	person := c.personOf(peer)
	type out struct {
		id      MessageID
		resends int
		env     []byte
		pubID   string
	}
	var outs []out
	since := c.now().Add(-resendWindow).UnixMilli()
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		outs = outs[:0]
		// Claim the resend: one process does it once.
		res, err := tx.Exec(`DELETE FROM resend_due WHERE peer = ?`, peer.String())
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 || person == c.me {
			return nil
		}
		rows, err := tx.Query(`SELECT `+entryColumns+`, resends FROM messages
			WHERE peer_key = ? AND incoming = 0 AND to_key = ? AND delivered_at IS NULL AND state IN ('sent', 'pending')
			AND kind != ? AND sent_at >= ? AND resends < ?`+orderBy+` LIMIT ?`,
			person.String(), person.String(), string(KindReceipt), since, maxResendsPerMessage, maxResend)
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		var es []*Entry
		var resends []int
		for rows.Next() {
			var n int
			e, err := scanEntry(scanFunc(func(dest ...any) error { return rows.Scan(append(dest, &n)...) }))
			if err != nil {
				rows.Close()
				return err
			}
			es, resends = append(es, e), append(resends, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		if len(es) == 0 {
			return nil
		}
		// One session seals them all: loaded (and parsed) once, not once
		// per message.
		row, err := c.db.sendingSession(tx, peer)
		if err != nil {
			return err
		}
		if row == nil {
			return errNoSession
		}
		now := c.now()
		for i, e := range es {
			m := Message{ID: e.ID, From: c.me, To: person, SentAt: e.SentAt, Kind: e.Kind, Ref: e.Ref, Body: e.Body}
			env, err := c.sealIn(tx, row, &m, now)
			if err != nil {
				return err
			}
			n := resends[i] + 1
			// A message the stream stored stays sent: a copy sealed
			// again that the stream refuses (the device revoked at the
			// chat-server meanwhile, its inbox full) does not make it
			// failed.
			if _, err := tx.Exec(`UPDATE messages SET resends = ? WHERE from_key = ? AND id = ?`,
				n, c.me.String(), e.ID[:]); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
			pubID := publishID(e.ID, n, peer, peer == person)
			if err := putOutbox(tx, e.ID, peer, env, pubID, true, now); err != nil {
				return err
			}
			outs = append(outs, out{id: e.ID, resends: n, env: env, pubID: pubID})
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, o := range outs {
		p := &Pending{c: c, done: make(chan struct{}), left: 1, sent: Sent{ID: o.id, To: person}}
		f := &flight{p: p, msgID: o.id, device: peer, pubID: o.pubID, counts: true, durable: true}
		if err := c.publishEnvelope(f, o.env); err != nil {
			return err
		}
		c.stats.resent.Add(1)
	}
	if len(outs) > 0 {
		c.log.Info("sent again the messages without a receipt: the peer started a new session", "peer", peer, "n", len(outs))
	}
	return nil
}

// scanFunc makes a function a scanner.
type scanFunc func(dest ...any) error

func (f scanFunc) Scan(dest ...any) error { return f(dest...) }
