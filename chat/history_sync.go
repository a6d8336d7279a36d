package chat

// The history transfer between two devices of one person: the device
// that approves a new one sends it the contacts (with their pinned chains)
// and every message, in sync-history chunks sealed in the device-pair
// session (docs/spec/chat.md §9).

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// HistoryOptions tune [Client.SendHistory]. The zero value is ready to use.
type HistoryOptions struct {
	// Progress, if set, is called after each chunk the stream stored, with
	// the counts so far.
	Progress func(HistoryStats)
	// MaxWait bounds how long one chunk waits for room in the device's
	// inbox, or for the device to publish its first prekey (see
	// SendHistory); 0 means until ctx ends.
	MaxWait time.Duration
	// OnWait, if set, is called the first time the transfer waits, with
	// the reason (a *QuotaError, or ErrNoPrekey while the device has not
	// come online yet).
	OnWait func(error)
}

// HistoryStats counts what a history transfer sent.
type HistoryStats struct {
	Contacts int // contacts sent, with their pinned chains
	Messages int // messages sent
	// ContactsSkipped and MessagesSkipped count the items too large for a
	// chunk even alone (a contact's chain over about 48 KiB compressed, a
	// message body near MaxBodySize that does not compress); the new
	// device does not get them.
	ContactsSkipped int
	MessagesSkipped int
	// KeyGenerations lists the person's encryption key generations
	// sent to the device before the history (a sync-keys message), oldest
	// first; empty on an install that does not hold the primary key.
	KeyGenerations []uint32
	Chunks         int           // sync-history messages sent
	Bytes          int           // their bodies' bytes
	Waits          int           // times a full inbox made the transfer wait
	Elapsed        time.Duration // from the start to the last chunk stored
}

// HistoryImport counts what one received chunk changed.
type HistoryImport struct {
	Contacts       int // contacts added, or whose pin moved forward
	Messages       int // messages new to this device
	ContactsKept   int // contacts this device pins otherwise: its own are kept
	Transfer       [16]byte
	Index          uint32
	LastOfTransfer bool
}

// historyBodyLimit is the largest body of a sync-history message.
const historyBodyLimit = MaxBodySize

// SendHistory sends this device's contacts (each with its pinned chain,
// its verification and its flag) and every message of its history to
// device, which must be a current device of this person's own chain other
// than this one, in sync-history messages of at most MaxBodySize bytes,
// sealed in the session with that device (docs/spec/chat.md §9). The new
// device applies each chunk on its own, idempotently, so sending again is
// harmless.
//
// On an install that holds the primary key it first sends the device the
// person's encryption key generations (a sync-keys message,
// docs/spec/chat.md §8.6), so that it opens private files shared with the
// person.
//
// When the device's inbox is full (a *[QuotaError], as when it is not
// online to take what arrives), or it has not published a prekey yet
// ([ErrNoPrekey]: it has not come online since it was linked), the
// transfer waits and tries the same chunk again, waiting longer each time
// up to a few seconds, until opts.MaxWait or ctx ends. It returns what was sent, also on error.
func (c *Client) SendHistory(ctx context.Context, device kez.PublicKey, opts HistoryOptions) (HistoryStats, error) {
	start := time.Now()
	var stats HistoryStats
	if !c.work.Enter() {
		return stats, ErrClosed
	}
	defer c.work.Leave()
	if c.nc == nil {
		return stats, ErrOffline
	}
	if err := c.checkOwnDevice(ctx, device); err != nil {
		return stats, err
	}
	if c.id != nil {
		// The person's encryption keys first (docs/spec/chat.md §8.6).
		if err := c.sendKeysWaiting(ctx, device, opts, &stats); err != nil {
			return stats, err
		}
	}
	err := c.historyChunks(ctx, &stats, func(body []byte) error {
		if err := c.sendHistoryChunk(ctx, device, body, opts, &stats); err != nil {
			return err
		}
		stats.Chunks++
		stats.Bytes += len(body)
		stats.Elapsed = time.Since(start)
		if opts.Progress != nil {
			opts.Progress(stats)
		}
		return nil
	})
	stats.Elapsed = time.Since(start)
	return stats, err
}

// historyChunks exports the history and calls send with each chunk's
// body in turn, counting the items in stats.
func (c *Client) historyChunks(ctx context.Context, stats *HistoryStats, send func(body []byte) error) error {
	items, err := c.exportHistory(ctx)
	if err != nil {
		return err
	}
	items = dropOversize(items, stats)
	var transfer [16]byte
	rand.Read(transfer[:])
	for index := uint32(0); len(items) > 0; index++ {
		n, body := packHistory(items, transfer, index)
		for _, it := range items[:n] {
			if it.contact {
				stats.Contacts++
			} else {
				stats.Messages++
			}
		}
		items = items[n:]
		if err := send(body); err != nil {
			return err
		}
	}
	return nil
}

// chunkOverhead is the size of a chunk's header and payload header.
const chunkOverhead = historyHeader + 16 + 4 + 1 + 4

// dropOversize leaves out, and counts in stats, the items that fit in no
// chunk even alone. An item whose encoding fits uncompressed always does.
func dropOversize(items []*historyItem, stats *HistoryStats) []*historyItem {
	out := items[:0]
	for _, it := range items {
		if chunkOverhead+len(it.enc) > historyBodyLimit &&
			len(encodeHistoryBody(chunkPayload([]*historyItem{it}, [16]byte{}, 0, true))) > historyBodyLimit {
			if it.contact {
				stats.ContactsSkipped++
			} else {
				stats.MessagesSkipped++
			}
			continue
		}
		out = append(out, it)
	}
	return out
}

// sendHistoryChunk sends one chunk, waiting while the device's inbox is
// full.
func (c *Client) sendHistoryChunk(ctx context.Context, device kez.PublicKey, body []byte, opts HistoryOptions, stats *HistoryStats) error {
	return c.sendWaiting(ctx, device, KindSyncHistory, body, opts, stats)
}

// sendWaiting sends one sync message of kind to device, waiting while its
// inbox is full or it has published no prekey yet (opts.MaxWait, ctx).
func (c *Client) sendWaiting(ctx context.Context, device kez.PublicKey, kind Kind, body []byte, opts HistoryOptions, stats *HistoryStats) error {
	maxWait := opts.MaxWait
	wait := 100 * time.Millisecond
	var deadline <-chan time.Time
	if maxWait > 0 {
		t := time.NewTimer(maxWait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		err := c.sendToOwnDevice(ctx, device, kind, body)
		var qe *QuotaError
		switch {
		case errors.As(err, &qe):
		case errors.Is(err, ErrNoPrekey):
			// The device has not come online yet to publish its prekey:
			// ask again after the wait, not after the refresh interval.
			c.peerPrekeys.mu.Lock()
			delete(c.peerPrekeys.none, device)
			c.peerPrekeys.mu.Unlock()
		default:
			return err
		}
		stats.Waits++
		if opts.OnWait != nil && stats.Waits == 1 {
			opts.OnWait(err)
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-deadline:
			t.Stop()
			return fmt.Errorf("chat: %s waited %s for the device: %w", kind, maxWait, err)
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// historyItem is one encoded contact or message of an outgoing transfer.
type historyItem struct {
	contact bool
	index   int
	enc     []byte
}

// exportHistory encodes every contact, then every message, in the
// display order.
func (c *Client) exportHistory(ctx context.Context) ([]*historyItem, error) {
	cs, err := c.Contacts(ctx)
	if err != nil {
		return nil, err
	}
	var items []*historyItem
	for i, ct := range cs {
		links, err := c.storedLinks(ctx, ct.Key)
		if err != nil {
			return nil, err
		}
		w := &historyWriter{}
		w.contact(&historyContact{
			Handle: ct.Handle, SigServer: ct.SigServer, AddedAt: ct.AddedAt, Refreshed: ct.RefreshedAt,
			VerifiedAt: ct.VerifiedAt, Flag: ct.Flag, FlagDetail: ct.FlagDetail, FlagKey: ct.FlagKey,
			FlaggedAt: ct.FlaggedAt, Links: links,
		})
		items = append(items, &historyItem{contact: true, index: i, enc: w.b})
	}
	rows, err := c.db.db.QueryContext(ctx, `SELECT `+entryColumns+` FROM messages ORDER BY sent_at, received_at, from_key, id`)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	for i := 0; rows.Next(); i++ {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		if e.Kind == KindReceipt || e.Kind == KindSessionReset || isSyncKind(e.Kind) || e.Group != "" {
			// Group messages stay with the devices that were members'.
			continue
		}
		if !e.Incoming && e.State == StatePending {
			// The sending device publishes it; only the outcome is
			// its own.
			e.State = StateSent
		}
		e.Read = e.Read || !e.Incoming
		w := &historyWriter{}
		w.message(e)
		items = append(items, &historyItem{index: i, enc: w.b})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	return items, nil
}

// storedLinks returns the exact bytes of key's pinned chain as stored.
func (c *Client) storedLinks(ctx context.Context, key kez.PublicKey) ([][]byte, error) {
	rows, err := c.db.db.QueryContext(ctx, `SELECT link FROM chain_links WHERE key = ? ORDER BY seqno`, key.String())
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// chunkPayload builds the payload of a chunk of these items.
func chunkPayload(items []*historyItem, transfer [16]byte, index uint32, last bool) []byte {
	w := &historyWriter{}
	w.raw(transfer[:])
	w.u32(int(index))
	if last {
		w.u8(1)
	} else {
		w.u8(0)
	}
	w.u32(len(items))
	for _, it := range items {
		w.raw(it.enc)
	}
	return w.b
}

// packHistory takes as many items from the front as fit in one body
// (each fits alone: dropOversize) and returns how many and the body.
func packHistory(items []*historyItem, transfer [16]byte, index uint32) (int, []byte) {
	fits := func(n int) ([]byte, bool) {
		raw := chunkOverhead
		for _, it := range items[:n] {
			raw += len(it.enc)
		}
		if raw > maxHistoryPayload {
			return nil, false
		}
		b := encodeHistoryBody(chunkPayload(items[:n], transfer, index, n == len(items)))
		return b, len(b) <= historyBodyLimit
	}
	b, _ := fits(1)
	// Double while it fits, then halve the gap: lo fits, hi does not.
	lo, hi := 1, 0
	for n := 2; hi == 0; n *= 2 {
		n = min(n, len(items))
		if n == lo {
			return lo, b
		}
		if nb, ok := fits(n); ok {
			lo, b = n, nb
		} else {
			hi = n
		}
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if nb, ok := fits(mid); ok {
			lo, b = mid, nb
		} else {
			hi = mid
		}
	}
	return lo, b
}

// importHistory applies one sync-history body from device in a
// transaction of its own (see applyHistoryTx) and updates the cached
// contacts.
func (c *Client) importHistory(ctx context.Context, device kez.PublicKey, body []byte) (HistoryImport, error) {
	var res HistoryImport
	var cached []*contactState
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		var err error
		res, cached, err = c.applyHistoryTx(tx, device, body, c.now())
		return err
	})
	if err != nil {
		return HistoryImport{}, err
	}
	c.cacheImported(cached)
	return res, nil
}

// applyHistoryTx applies, in tx, one sync-history body from device, a
// current device of this person other than this one (the receiving path
// checks that before). The chunk is checked whole first: a malformed one
// changes nothing (errors wrap ErrBadHistoryChunk, and ErrMalformed).
// Then contacts this device does not have are added with their verified
// chains; a contact it pins to the same key moves forward to a longer
// chain that extends its pin and takes a verification it lacks (its own
// decisions are kept); a contact it pins to another key, or whose key it
// pins under another handle, is left as it is. Messages are stored
// unless stored already (by sender and message ID); one already stored
// only gains a read mark or a delivery time it lacked. Applying a chunk
// twice changes nothing the second time. It returns the contacts to
// cache once tx committed (cacheImported).
func (c *Client) applyHistoryTx(tx *sql.Tx, device kez.PublicKey, body []byte, now time.Time) (HistoryImport, []*contactState, error) {
	var res HistoryImport
	ch, err := decodeHistoryBody(body, c.me)
	if err != nil {
		return res, nil, err
	}
	res.Transfer, res.Index, res.LastOfTransfer = ch.Transfer, ch.Index, ch.Last
	type verified struct {
		hc    *historyContact
		links []*sigchain.Link
		st    *sigchain.State
	}
	vs := make([]verified, 0, len(ch.Contacts))
	for i := range ch.Contacts {
		hc := &ch.Contacts[i]
		if h, err := c.parseHandle(hc.Handle); err != nil || h != hc.Handle {
			return res, nil, fmt.Errorf("%w: %q is not a canonical handle", ErrBadHistoryChunk, hc.Handle)
		}
		links, st, err := verifyContactChain(hc)
		if err != nil {
			return res, nil, err
		}
		if st.Key() == c.me {
			return res, nil, fmt.Errorf("%w: a contact %q with this person's own key", ErrBadHistoryChunk, hc.Handle)
		}
		vs = append(vs, verified{hc, links, st})
	}
	var cached []*contactState
	for _, v := range vs {
		hc, st := v.hc, v.st
		devs := chainDevices(st)
		ct := Contact{
			Handle: hc.Handle, Key: st.Key(), EncryptionKey: st.EncryptionKey(), Generation: st.EncryptionGeneration(),
			SigServer: hc.SigServer, Pin: st.Pin(), AddedAt: hc.AddedAt, RefreshedAt: hc.Refreshed,
			VerifiedAt: hc.VerifiedAt, Flag: hc.Flag, FlagDetail: hc.FlagDetail, FlagKey: hc.FlagKey, FlaggedAt: hc.FlaggedAt,
			Devices: devs,
		}
		var oldKey string
		var oldSeqno int64
		var oldVerified sql.NullInt64
		err := tx.QueryRow(`SELECT key, pin_seqno, verified_at FROM contacts WHERE handle = ?`, hc.Handle).Scan(&oldKey, &oldSeqno, &oldVerified)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			var other int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM contacts WHERE key = ?`, ct.Key.String()).Scan(&other); err != nil {
				return res, nil, err
			}
			if other > 0 { // pinned here under another handle: kept
				res.ContactsKept++
				continue
			}
			if err := putContact(tx, &ct); err != nil {
				return res, nil, err
			}
			if err := addEvent(tx, ct.Handle, now, "synced", fmt.Sprintf("from device %s: key %s, chain seqno %d", device, ct.Key, ct.Pin.Seqno)); err != nil {
				return res, nil, err
			}
			if ct.Flag == FlagNone {
				// As when pinned here: what the key sent this device while
				// it was not a contact here becomes trusted.
				if _, err := tx.Exec(`UPDATE messages SET trust = ?, peer_handle = ?, read = 0 WHERE incoming = 1 AND from_key = ? AND trust = ? AND `+notInvitation,
					string(TrustTrusted), ct.Handle, ct.Key.String(), string(TrustRequest)); err != nil {
					return res, nil, err
				}
			}
		case err != nil:
			return res, nil, err
		case oldKey != ct.Key.String():
			res.ContactsKept++
			continue
		default:
			moved := false
			if uint64(oldSeqno) < ct.Pin.Seqno {
				old, err := storedPin(tx, ct.Key, uint64(oldSeqno))
				if err != nil {
					return res, nil, err
				}
				if sigchain.CheckAgainst(old, v.links) == nil {
					if _, err := tx.Exec(`UPDATE contacts SET enc_key = ?, generation = ?, pin_seqno = ?, pin_head = ? WHERE handle = ?`,
						ct.EncryptionKey.Bytes(), int64(ct.Generation), int64(ct.Pin.Seqno), ct.Pin.Head.String(), ct.Handle); err != nil {
						return res, nil, err
					}
					moved = true
				}
			}
			if !oldVerified.Valid && !ct.VerifiedAt.IsZero() {
				if _, err := tx.Exec(`UPDATE contacts SET verified_at = ? WHERE handle = ?`, ct.VerifiedAt.UnixMilli(), ct.Handle); err != nil {
					return res, nil, err
				}
				if err := addEvent(tx, ct.Handle, now, "verified", "on another of your devices ("+device.String()+")"); err != nil {
					return res, nil, err
				}
				if !moved {
					res.Contacts++
					cached = append(cached, &contactState{c: Contact{Handle: ct.Handle, Key: ct.Key, VerifiedAt: ct.VerifiedAt}})
					continue
				}
			}
			if !moved {
				continue
			}
			if err := addEvent(tx, ct.Handle, now, "synced", fmt.Sprintf("from device %s: chain seqno %d", device, ct.Pin.Seqno)); err != nil {
				return res, nil, err
			}
		}
		if err := putLinks(tx, ct.Key, v.links, true); err != nil {
			return res, nil, err
		}
		if err := putDevices(tx, ct.Key, devs); err != nil {
			return res, nil, err
		}
		if err := deleteDeviceState(tx, c.revokedOnlyBy(ct.Key, devs)); err != nil {
			return res, nil, err
		}
		res.Contacts++
		cs := &contactState{c: ct, state: st, lastCheck: now}
		cs.setDevices(devs)
		cached = append(cached, cs)
	}
	for _, e := range ch.Messages {
		r, err := tx.Exec(`INSERT INTO messages (`+entryColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,'',NULL)
			ON CONFLICT (from_key, id) DO UPDATE SET read = MAX(read, excluded.read), delivered_at = COALESCE(delivered_at, excluded.delivered_at)
			WHERE read < excluded.read OR (delivered_at IS NULL AND excluded.delivered_at IS NOT NULL)`,
			e.ID[:], boolInt(e.Incoming), e.Peer.String(), e.PeerHandle, e.From.String(), e.To.String(),
			e.SentAt.UnixMilli(), e.ReceivedAt.UnixMilli(), string(e.Kind), refBytes(e.Ref), e.Body, int64(0),
			string(e.Trust), string(e.State), boolInt(e.Read), nullMillis(e.DeliveredAt))
		if err != nil {
			return res, nil, fmt.Errorf("chat: storing message %s: %w", e.ID, err)
		}
		if n, _ := r.RowsAffected(); n > 0 {
			res.Messages++
		}
	}
	return res, cached, nil
}

// cacheImported puts in the contacts cache what applyHistoryTx changed,
// once committed: a new contact whole; for a contact cached already, the
// longer pin (a state without a chain carries only a verification).
func (c *Client) cacheImported(cached []*contactState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cs := range cached {
		old := c.byHandle[cs.c.Handle]
		switch {
		case old != nil && old.c.Key != cs.c.Key:
		case old != nil:
			if old.c.VerifiedAt.IsZero() {
				old.c.VerifiedAt = cs.c.VerifiedAt
			}
			if cs.state != nil && cs.state.Seqno() > old.c.Pin.Seqno {
				old.c.EncryptionKey, old.c.Generation, old.c.Pin, old.state = cs.c.EncryptionKey, cs.c.Generation, cs.c.Pin, cs.state
				prev := old.devices
				old.setDevices(cs.devices)
				c.indexDevices(old, prev)
			}
		case cs.state != nil:
			c.byHandle[cs.c.Handle], c.byKey[cs.c.Key] = cs, cs
			c.indexDevices(cs, nil)
		}
	}
}

// storedPin returns the pin of key's stored chain at seqno.
func storedPin(tx *sql.Tx, key kez.PublicKey, seqno uint64) (sigchain.Pin, error) {
	var b []byte
	if err := tx.QueryRow(`SELECT link FROM chain_links WHERE key = ? AND seqno = ?`, key.String(), int64(seqno)).Scan(&b); err != nil {
		return sigchain.Pin{}, fmt.Errorf("chat: the stored chain of %s: %w", key, err)
	}
	l, err := sigchain.ParseLink(b)
	if err != nil {
		return sigchain.Pin{}, fmt.Errorf("chat: the stored chain of %s is damaged: %w", key, err)
	}
	return sigchain.Pin{Key: key, Seqno: seqno, Head: l.ID()}, nil
}

// checkOwnDevice checks, on the user's chain fetched now, that device is
// a current device of this person other than this one.
func (c *Client) checkOwnDevice(ctx context.Context, device kez.PublicKey) error {
	if device == c.devKey {
		return fmt.Errorf("%w: %s is this device", ErrNotOwnDevice, device)
	}
	for _, k := range currentDevices(c.ownDevices(ctx, true), c.me) {
		if k == device {
			return nil
		}
	}
	return fmt.Errorf("%w: %s is not a current device on your chain", ErrNotOwnDevice, device)
}

// sendToOwnDevice seals one message of kind to another device of this
// person, publishes it and waits for the stream to store it. A device
// that the user's chain, as last fetched, does not show current is
// refused (ErrNotOwnDevice): revoked since the caller checked it, it gets
// nothing more (a history transfer stops at its next chunk).
func (c *Client) sendToOwnDevice(ctx context.Context, device kez.PublicKey, kind Kind, body []byte) error {
	c.devs.mu.Lock()
	st := c.devs.own
	c.devs.mu.Unlock()
	if st != nil && !st.IsCurrentDevice(device) {
		return fmt.Errorf("%w: %s is not a current device on your chain", ErrNotOwnDevice, device)
	}
	p, err := c.publishIn(ctx, []target{c.ownTarget(device)}, Message{Kind: kind, Body: body}, false, false, false, nil)
	if err != nil {
		return err
	}
	_, err = p.Wait(ctx)
	return err
}
