package chat

// Receiving for groups (docs/spec/chat.md §10.4): format 3 envelopes,
// group-key, group-update and group-read messages inside the receiving
// transaction; after it, the chains to fetch, the keys to check and the
// envelopes held for a key.

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
)

// envelopeV3 is the version byte of a group envelope.
const envelopeV3 = 3

// Bounds of the envelopes held for a key (§10.4): per group, and for all
// unknown groups together, a number and a size. Variables for the tests.
var (
	maxHeldPerGroup       = 1000
	maxHeldUnknown        = 1000
	maxHeldBytes    int64 = 16 << 20
)

const (
	maxHeldAge = 24 * time.Hour
	// maxGroupJoins bounds the groups not pinned here a received batch
	// makes the client fetch (group-update).
	maxGroupJoins = 16
	// maxUncheckedKeys bounds the distributions kept for groups not
	// pinned here, or of epochs newer than the pinned chain's.
	maxUncheckedKeys = 1000
)

// rkeyID names a receiving key.
type rkeyID struct {
	gid    [32]byte
	epoch  uint64
	device kez.PublicKey
}

// rkeyRow is a receiving key loaded in a transaction.
type rkeyRow struct {
	rk      *session.ReceiverKey
	checked bool
	dirty   bool
}

// groupBatch is what one receiving transaction did for groups.
type groupBatch struct {
	rkeys   map[rkeyID]*rkeyRow
	touched map[[32]byte]bool      // groups whose keys or held envelopes changed
	refresh map[string]bool        // groups to fetch after the transaction: true, a member saw a newer epoch (groups_updates.go)
	updates map[string]groupUpdate // group-updates to follow
	own     map[string]bool        // group-updates from the user's own devices
	quota   *requestQuota          // the requests stored (an invitation's messages, groups_invite.go)
}

func newGroupBatch() *groupBatch {
	return &groupBatch{rkeys: map[rkeyID]*rkeyRow{}, touched: map[[32]byte]bool{}, refresh: map[string]bool{}, updates: map[string]groupUpdate{},
		own: map[string]bool{}}
}

// rkey loads the receiving key id in tx (nil: none).
func (gb *groupBatch) rkey(tx *sql.Tx, id rkeyID) (*rkeyRow, error) {
	if row, ok := gb.rkeys[id]; ok {
		return row, nil
	}
	var b []byte
	var checked bool
	err := tx.QueryRow(`SELECT state, checked FROM group_rkeys WHERE gid = ? AND epoch = ? AND device = ?`, id.gid[:], id.epoch, id.device.String()).Scan(&b, &checked)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	rk, err := session.ParseReceiverKey(b)
	if err != nil {
		return nil, fmt.Errorf("chat: database: a receiving key: %w", err)
	}
	row := &rkeyRow{rk: rk, checked: checked}
	gb.rkeys[id] = row
	return row, nil
}

// save stores the receiving keys whose state changed.
func (gb *groupBatch) save(tx *sql.Tx) error {
	for id, row := range gb.rkeys {
		if !row.dirty {
			continue
		}
		b, err := row.rk.MarshalBinary()
		if err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE group_rkeys SET state = ? WHERE gid = ? AND epoch = ? AND device = ?`, b, id.gid[:], id.epoch, id.device.String()); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
	}
	return nil
}

// memberAt reports whether person is a current member of st whose
// membership began at or before epoch, and epoch is not stale.
func memberAt(st *group.State, person kez.PublicKey, epoch uint64) error {
	if epoch < st.Epoch() && st.RemovalSince(epoch) {
		return fmt.Errorf("%w: epoch %d of %s, a member was removed since", ErrStaleEpoch, epoch, st.Name())
	}
	m, ok := st.Member(person)
	if !ok || m.Since > epoch {
		return fmt.Errorf("%w: %s in %s at epoch %d", ErrNotGroupMember, person, st.Name(), epoch)
	}
	return nil
}

// groupOpen opens a format 3 envelope from the device from, of person,
// in tx. hold: it cannot be opened yet (no key, an unknown group, a newer
// epoch); err: it is refused.
func (c *Client) groupOpen(tx *sql.Tx, gb *groupBatch, data []byte, from, person kez.PublicKey) (m *Message, gs *groupState, hold bool, err error) {
	h, err := session.ParseGroupHeader(data)
	if err != nil {
		return nil, nil, false, sessionError(err)
	}
	if h.Device != from {
		return nil, nil, false, fmt.Errorf("%w: the group envelope says it is from %s, but it came from %s", ErrSenderMismatch, h.Device, from)
	}
	gs = c.groups.byGID(h.GID)
	if gs == nil {
		return nil, nil, true, nil
	}
	st, left, broken := gs.snapshot()
	switch {
	case left:
		return nil, gs, false, fmt.Errorf("%w: you left %s", ErrNotGroupMember, gs.name)
	case broken != "":
		return nil, gs, false, fmt.Errorf("%w: %s", ErrGroupBroken, gs.name)
	case h.Epoch > st.Epoch():
		gb.wantRefresh(gs.name, st, person)
		return nil, gs, true, nil
	}
	if err := memberAt(st, person, h.Epoch); err != nil {
		return nil, gs, false, err
	}
	row, err := gb.rkey(tx, rkeyID{h.GID, h.Epoch, from})
	if err != nil {
		return nil, gs, false, err
	}
	if row == nil || !row.checked {
		return nil, gs, true, nil
	}
	pt, err := row.rk.Open(data)
	if err != nil {
		return nil, gs, false, sessionError(err)
	}
	row.dirty = true
	m, err = parseInnerV2(pt, person, c.me)
	if err != nil {
		return nil, gs, false, err
	}
	if err := checkGroupKind(m, h.GID, person); err != nil {
		return nil, gs, false, err
	}
	return m, gs, false, nil
}

// groupEntry is the history entry of a group message m from person.
func (c *Client) groupEntry(gs *groupState, m *Message, person kez.PublicKey, seq uint64, now time.Time) *Entry {
	e := &Entry{ID: m.ID, SentAt: m.SentAt, ReceivedAt: now, Kind: m.Kind, Body: m.Body, Seq: seq, Group: gs.name}
	if person == c.me {
		// The sent copy from another of the user's devices.
		e.From, e.Trust, e.State, e.Read, e.PeerHandle = c.me, TrustTrusted, StateSent, true, gs.name
		return e
	}
	e.Incoming, e.From, e.Peer, e.To, e.Trust = true, person, person, c.me, TrustTrusted
	// The add link's handle is the adder's word: shown only once it
	// resolved to the person (nameGroupSenders), or a contact's.
	e.PeerHandle = c.members.handleOf(person)
	if cs := c.contactByKey(person); cs != nil {
		c.mu.Lock()
		ct := cs.c
		c.mu.Unlock()
		e.PeerHandle = ct.Handle
		if ct.Flag != FlagNone {
			e.Trust = TrustHeld
		}
	}
	c.asRequest(gs, e)
	return e
}

// receiveGroupTx handles a format 3 delivery in the receiving
// transaction: opened and stored, held, or refused (r.err).
func (c *Client) receiveGroupTx(tx *sql.Tx, gb *groupBatch, r *received, now time.Time) error {
	m, gs, hold, err := c.groupOpen(tx, gb, r.jm.Data(), r.from, r.who.person)
	if err != nil {
		if !isRefusal(err) {
			return err
		}
		r.err = err
		return nil
	}
	if hold {
		r.control = true
		h, _ := session.ParseGroupHeader(r.jm.Data())
		return c.holdGroup(tx, h, r.who.person, r.jm.Data(), r.seq, now)
	}
	r.m = m
	r.entry = c.groupEntry(gs, m, r.who.person, r.seq, now)
	if r.dropped, err = gb.admitGroupRequest(c, tx, r.entry); err != nil || r.dropped != "" {
		return err
	}
	isNew, err := c.db.insertEntry(tx, r.entry)
	if err != nil {
		return err
	}
	r.isNew = isNew
	return nil
}

// holdGroup keeps an envelope that cannot be opened yet, within the
// bounds of §10.4.
func (c *Client) holdGroup(tx *sql.Tx, h session.GroupHeader, person kez.PublicKey, env []byte, seq uint64, now time.Time) error {
	c.stats.groupHeld.Add(1)
	if _, err := tx.Exec(`DELETE FROM group_held WHERE at < ?`, now.Add(-maxHeldAge).UnixMilli()); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	if _, err := tx.Exec(`INSERT INTO group_held (gid, epoch, device, person, envelope, seq, at) VALUES (?,?,?,?,?,?,?)`,
		h.GID[:], h.Epoch, h.Device.String(), person.String(), env, int64(seq), now.UnixMilli()); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	bound, where, args := maxHeldPerGroup, `gid = ?`, []any{h.GID[:]}
	if c.groups.byGID(h.GID) == nil {
		bound, where, args = maxHeldUnknown, `gid NOT IN (SELECT gid FROM groups)`, nil
	}
	// Over a bound, the sender person holding the most (envelopes, or
	// bytes when over the size) loses its oldest: one who floods a group
	// (a stranger's envelopes of a made-up epoch or group wait too)
	// pushes out its own, not the members' waiting for a key.
	for {
		var n, size int64
		if err := tx.QueryRow(`SELECT count(*), coalesce(sum(length(envelope)), 0) FROM group_held WHERE `+where, args...).Scan(&n, &size); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		if n <= int64(bound) && size <= maxHeldBytes {
			return nil
		}
		most := `count(*)`
		if size > maxHeldBytes {
			most = `sum(length(envelope))`
		}
		res, err := tx.Exec(`DELETE FROM group_held WHERE id = (SELECT min(id) FROM group_held WHERE `+where+` AND person =
			(SELECT person FROM group_held WHERE `+where+` GROUP BY person ORDER BY `+most+` DESC, max(id) DESC LIMIT 1))`,
			append(append([]any{}, args...), args...)...)
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		if k, err := res.RowsAffected(); err != nil || k == 0 {
			return err
		}
	}
}

// applyGroupKind applies a group-key, group-update or group-read message
// in the receiving transaction.
func (c *Client) applyGroupKind(tx *sql.Tx, gb *groupBatch, r *received, now time.Time) error {
	m, person := r.m, r.who.person
	switch m.Kind {
	case KindGroupUpdate:
		u, err := parseGroupUpdate(m.Body)
		if err != nil {
			return err
		}
		if _, ok := gb.updates[u.Group]; ok || len(gb.updates) < maxGroupJoins || c.groups.get(u.Group) != nil {
			gb.updates[u.Group] = u
			if person == c.me {
				gb.own[u.Group] = true
			}
			return c.recordUpdate(tx, u, m.Body, now)
		}
		return nil
	case KindGroupRead:
		if person == c.me {
			return nil // the user's own devices mark read with sync-read
		}
		gr, err := parseGroupRead(m.Body)
		if err != nil {
			return err
		}
		gs := c.groups.get(gr.Group)
		if gs == nil {
			return fmt.Errorf("%w: %s", ErrUnknownGroup, gr.Group)
		}
		st, _, _ := gs.snapshot()
		if _, ok := st.Member(person); !ok {
			return fmt.Errorf("%w: %s in %s", ErrNotGroupMember, person, gs.name)
		}
		for _, id := range gr.IDs {
			if _, err := tx.Exec(`INSERT OR IGNORE INTO group_reads (msg_id, reader, at)
				SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM messages WHERE from_key = ? AND id = ? AND grp = ? AND incoming = 0)`,
				id[:], person.String(), m.SentAt.UnixMilli(), c.me.String(), id[:], gs.name); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		return nil
	}
	d, err := session.ParseSenderKeyDistribution(m.Body)
	if err != nil {
		c.stats.groupKeysRefused.Add(1)
		return sessionError(err)
	}
	if d.Device != r.from {
		c.stats.groupKeysRefused.Add(1)
		return fmt.Errorf("%w: a group key of device %s sent by %s", ErrSenderMismatch, d.Device, r.from)
	}
	checked := false
	if gs := c.groups.byGID(d.GID); gs != nil {
		st, left, broken := gs.snapshot()
		switch {
		case left:
			c.stats.groupKeysRefused.Add(1)
			return fmt.Errorf("%w: you left %s", ErrNotGroupMember, gs.name)
		case broken != "":
			return fmt.Errorf("%w: %s", ErrGroupBroken, gs.name)
		case d.Epoch > st.Epoch():
			gb.wantRefresh(gs.name, st, person)
		default:
			if err := memberAt(st, person, d.Epoch); err != nil {
				c.stats.groupKeysRefused.Add(1)
				return err
			}
			checked = true
			gb.touched[d.GID] = true
		}
	}
	if !checked {
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM group_rkeys WHERE checked = 0`).Scan(&n); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		if n >= maxUncheckedKeys {
			return fmt.Errorf("%w: too many group keys wait for their group", ErrNotGroupMember)
		}
	}
	return c.putReceiverKey(tx, gb, d, person, checked, now)
}

// putReceiverKey stores the receiving key of d, unless one with the same
// signing key is stored (a distribution cannot wind a key back).
func (c *Client) putReceiverKey(tx *sql.Tx, gb *groupBatch, d *session.SenderKeyDistribution, person kez.PublicKey, checked bool, now time.Time) error {
	id := rkeyID{d.GID, d.Epoch, d.Device}
	var signing []byte
	err := tx.QueryRow(`SELECT signing FROM group_rkeys WHERE gid = ? AND epoch = ? AND device = ?`, d.GID[:], d.Epoch, d.Device.String()).Scan(&signing)
	if err == nil && bytes.Equal(signing, d.SigningKey[:]) {
		return nil
	}
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("chat: database: %w", err)
	}
	rk := session.NewReceiverKey(d)
	b, err := rk.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := tx.Exec(`INSERT INTO group_rkeys (gid, epoch, device, person, signing, state, checked, at) VALUES (?,?,?,?,?,?,?,?)
		ON CONFLICT (gid, epoch, device) DO UPDATE SET person = excluded.person, signing = excluded.signing, state = excluded.state, checked = excluded.checked, at = excluded.at`,
		d.GID[:], d.Epoch, d.Device.String(), person.String(), d.SigningKey[:], b, boolInt(checked), now.UnixMilli()); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	gb.rkeys[id] = &rkeyRow{rk: rk, checked: checked}
	return nil
}

// afterGroups does, once a batch is stored, what needs a server: follow
// the group-updates, fetch the chains of groups a newer epoch was seen
// of, check the keys that waited for them, and open the envelopes held
// for a key. It returns the messages opened.
func (c *Client) afterGroups(ctx context.Context, gb *groupBatch) []*Entry {
	if gb == nil {
		return nil
	}
	touched := map[[32]byte]bool{}
	for id := range gb.touched {
		touched[id] = true
	}
	c.followDeferred(ctx, touched)
	c.followUpdates(ctx, gb.updates, gb.own, touched)
	c.followRefresh(ctx, gb.refresh, touched)
	return c.openTouched(ctx, touched)
}

// openTouched opens the envelopes held for the groups touched.
func (c *Client) openTouched(ctx context.Context, touched map[[32]byte]bool) []*Entry {
	var out []*Entry
	for gid := range touched {
		if gs := c.groups.byGID(gid); gs != nil {
			es, err := c.openHeld(ctx, gs)
			if err != nil {
				c.log.Warn("opening the group messages held for a key", "group", gs.name, "err", err)
			}
			out = append(out, es...)
		}
	}
	return out
}

// Bounds of the group-updates recorded until they are acted on (§10.5).
const (
	// maxRecordedJoins bounds those of groups not pinned here (anyone
	// may send one); beyond it the oldest is dropped.
	maxRecordedJoins = 64
	// maxUpdateAge: one not acted on (a server unreachable) by then is
	// dropped.
	maxUpdateAge = 24 * time.Hour
)

// recordUpdate keeps, in the receiving transaction, the group-update u
// (body) until the client acted on it (followUpdates): a crash after the
// batch is stored, and acknowledged, loses no group-update. One is kept
// per group, the last received.
func (c *Client) recordUpdate(tx *sql.Tx, u groupUpdate, body []byte, now time.Time) error {
	if _, err := tx.Exec(`INSERT INTO group_updates (name, body, at) VALUES (?,?,?)
		ON CONFLICT (name) DO UPDATE SET body = excluded.body, at = excluded.at`, u.Group, body, now.UnixMilli()); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	if c.groups.get(u.Group) != nil {
		return nil
	}
	_, err := tx.Exec(`DELETE FROM group_updates WHERE name IN (SELECT name FROM group_updates WHERE name NOT IN (SELECT name FROM groups)
		ORDER BY at DESC, rowid DESC LIMIT -1 OFFSET ?)`, maxRecordedJoins)
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	return nil
}

// followUpdates acts on group-updates: a pinned group's chain is fetched
// again (at once for one from the user's own devices, own; within the
// limits of §10.10 for others: a kept one stays recorded until it is
// followed), a group not pinned is joined if its chain lists the user
// (joinGroup; an invitation unless the user joins at once, §10.9); the
// groups it pinned or changed are added to touched. Each update's record
// is deleted once acted on, unless what failed may work later (a server
// unreachable, the client stopping): then it is acted on again when the
// client next starts.
func (c *Client) followUpdates(ctx context.Context, updates map[string]groupUpdate, own map[string]bool, touched map[[32]byte]bool) {
	for name, u := range updates {
		var err error
		if gs := c.groups.get(name); gs != nil {
			kept := false
			if own[name] {
				// The user's own change, or acceptance, on another device.
				err = c.refreshGroup(ctx, gs, true)
				c.acceptFromOwnDevice(ctx, gs, err)
			} else {
				kept, err = c.followUpdate(ctx, gs, &u)
			}
			if err != nil {
				c.log.Warn("following a group change", "group", name, "err", err)
			}
			touched[gs.gid] = true
			if kept {
				continue
			}
		} else if err = c.joinGroup(ctx, u, own[name]); err != nil {
			c.log.Info("a group-update names a group this client does not follow", "group", name, "err", err)
		} else if gs := c.groups.get(name); gs != nil {
			touched[gs.gid] = true
		}
		if err != nil && retryLater(err) {
			continue
		}
		c.updateDone(ctx, name, u)
	}
}

// updateDone deletes the record of the group-update u of the group name,
// acted on. Only that update: one received meanwhile stays.
func (c *Client) updateDone(ctx context.Context, name string, u groupUpdate) {
	werr := c.db.write(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM group_updates WHERE name = ? AND body = ?`, name, marshalGroupUpdate(u))
		return err
	})
	if werr != nil {
		c.log.Warn("recording a group-update acted on", "group", name, "err", werr)
	}
}

// retryLater reports an error after which acting on a group-update again
// later may succeed: a server that could not be reached or asked to wait,
// or the client stopping.
func retryLater(err error) bool {
	return errors.Is(err, group.ErrUnreachable) || errors.Is(err, sigchain.ErrUnreachable) || errors.Is(err, handles.ErrUnreachable) ||
		errors.Is(err, ratelimit.ErrLimited) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrClosed)
}

// followRecorded acts, when the client starts, on the group-updates
// received before it last stopped and not acted on yet, and opens what
// waited for the groups they pin or change.
func (c *Client) followRecorded(ctx context.Context) {
	updates := map[string]groupUpdate{}
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		clear(updates)
		if _, err := tx.Exec(`DELETE FROM group_updates WHERE at < ?`, c.now().Add(-maxUpdateAge).UnixMilli()); err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT name, body FROM group_updates ORDER BY at`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			var body []byte
			if err := rows.Scan(&name, &body); err != nil {
				return err
			}
			if u, err := parseGroupUpdate(body); err == nil && u.Group == name {
				updates[name] = u
			}
		}
		return rows.Err()
	})
	if err != nil {
		c.log.Warn("reading the group-updates not acted on", "err", err)
		return
	}
	if len(updates) == 0 {
		return
	}
	touched := map[[32]byte]bool{}
	c.followUpdates(ctx, updates, nil, touched)
	if es := c.openTouched(ctx, touched); len(es) > 0 {
		c.nameGroupSenders(ctx, es)
		c.log.Info("opened the group messages that waited for a group-update", "n", len(es))
	}
	c.log.Info("acted on the group-updates received before the client stopped", "n", len(updates))
}

// openHeld checks gs's keys that waited for its chain, then opens the
// envelopes held for gs whose key is there now, in one transaction.
func (c *Client) openHeld(ctx context.Context, gs *groupState) ([]*Entry, error) {
	var out []*Entry
	now := c.now()
	err := c.db.write(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		out = out[:0]
		st, _, _ := gs.snapshot()
		gb := newGroupBatch()
		// Keys that waited: checked now, or refused.
		rows, err := tx.Query(`SELECT epoch, device, person FROM group_rkeys WHERE gid = ? AND checked = 0 AND epoch <= ?`, gs.gid[:], st.Epoch())
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		type waiting struct {
			epoch          uint64
			device, person string
		}
		var ws []waiting
		for rows.Next() {
			var w waiting
			if err := rows.Scan(&w.epoch, &w.device, &w.person); err != nil {
				rows.Close()
				return fmt.Errorf("chat: database: %w", err)
			}
			ws = append(ws, w)
		}
		rows.Close()
		for _, w := range ws {
			p, perr := kez.ParsePublicKey(w.person)
			q := `UPDATE group_rkeys SET checked = 1 WHERE gid = ? AND epoch = ? AND device = ?`
			if perr != nil || memberAt(st, p, w.epoch) != nil {
				c.stats.groupKeysRefused.Add(1)
				q = `DELETE FROM group_rkeys WHERE gid = ? AND epoch = ? AND device = ?`
			}
			if _, err := tx.Exec(q, gs.gid[:], w.epoch, w.device); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		// Held envelopes.
		type held struct {
			id             int64
			device, person string
			env            []byte
			seq            int64
		}
		var hs []held
		hrows, err := tx.Query(`SELECT id, device, person, envelope, seq FROM group_held WHERE gid = ? ORDER BY id`, gs.gid[:])
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		for hrows.Next() {
			var h held
			if err := hrows.Scan(&h.id, &h.device, &h.person, &h.env, &h.seq); err != nil {
				hrows.Close()
				return fmt.Errorf("chat: database: %w", err)
			}
			hs = append(hs, h)
		}
		hrows.Close()
		for _, h := range hs {
			dev, err1 := kez.ParsePublicKey(h.device)
			person, err2 := kez.ParsePublicKey(h.person)
			var m *Message
			var hold bool
			var err error
			if err1 == nil && err2 == nil {
				m, _, hold, err = c.groupOpen(tx, gb, h.env, dev, person)
			}
			if hold {
				continue
			}
			if err != nil && !isRefusal(err) {
				return err
			}
			var e *Entry
			over := ""
			if m != nil {
				e = c.groupEntry(gs, m, person, uint64(h.seq), now)
				if over, err = gb.admitGroupRequest(c, tx, e); err != nil {
					return err
				}
			}
			if over != "" {
				c.stats.requestsDropped.Add(1)
				c.log.Debug("dropped a held group message of an invitation over the cap on requests", "cap", over, "group", gs.name, "from", person)
				m = nil
			}
			if err != nil {
				c.log.Info("a held group message is refused", "group", gs.name, "device", dev, "err", err)
				if errors.Is(err, ErrStaleEpoch) {
					c.stats.groupStale.Add(1)
				}
			}
			if _, err := tx.Exec(`DELETE FROM group_held WHERE id = ?`, h.id); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
			if m == nil {
				continue
			}
			isNew, err := c.db.insertEntry(tx, e)
			if err != nil {
				return err
			}
			if isNew {
				out = append(out, e)
			}
		}
		return gb.save(tx)
	})
	for range out {
		c.stats.received.Add(1)
	}
	return out, err
}

// nameGroupSenders gives the new group messages from senders whose
// handle was not checked yet the handle their chain confirms: each
// sender's handle (as the group names it) is resolved once and must
// name their key (memberDevices); the stored messages are updated.
func (c *Client) nameGroupSenders(ctx context.Context, fresh []*Entry) {
	names := map[kez.PublicKey]string{}
	strangers := map[kez.PublicKey]bool{}
	defer func() { c.lookupStored(ctx, strangers) }()
	for _, e := range fresh {
		if e.Group != "" && e.Incoming && e.Trust == TrustRequest && e.PeerHandle == "" && c.contactByKey(e.From) == nil {
			// An invitation's (§10.9): looked up as a stranger, off the
			// receiving path.
			strangers[e.From] = true
			continue
		}
		if e.Group == "" || !e.Incoming || e.PeerHandle != "" || e.Trust == TrustRequest {
			continue
		}
		h, ok := names[e.From]
		if !ok {
			h = c.groupSenderHandle(ctx, e.Group, e.From)
			names[e.From] = h
		}
		if h == "" {
			continue
		}
		e.PeerHandle = h
		err := c.db.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`UPDATE messages SET peer_handle = ? WHERE from_key = ? AND id = ?`, h, e.From.String(), e.ID[:])
			return err
		})
		if err != nil {
			c.log.Warn("naming a group message's sender", "err", err)
		}
	}
}

// groupSenderHandle returns the handle the group names its member from
// by once it resolved to from (memberDevices), or "".
func (c *Client) groupSenderHandle(ctx context.Context, group string, from kez.PublicKey) string {
	gs := c.groups.get(group)
	if gs == nil {
		return ""
	}
	st, _, _ := gs.snapshot()
	m, ok := st.Member(from)
	if !ok {
		return ""
	}
	mi, err := c.memberDevices(ctx, from, m.Handle)
	if err != nil {
		c.log.Warn("a group member's handle does not check out; showing the key", "group", group, "member", from, "handle", m.Handle, "err", err)
		return ""
	}
	return mi.handle
}

// maxUnnamedSenders bounds the senders nameStoredGroupSenders checks at
// once.
const maxUnnamedSenders = 32

// unnamedSenders remembers when nameStoredGroupSenders last checked a
// group message sender it could not name.
type unnamedSenders struct {
	mu    sync.Mutex
	tried map[unnamedSender]time.Time
}

type unnamedSender struct {
	from  kez.PublicKey
	group string
}

// nameStoredGroupSenders names the stored group messages still shown by
// their sender's key: those whose sender could not be checked when they
// were stored (a resolve that failed or timed out, a server away), or
// that were stored by another path (a group-update followed at start)
// while the caller read the inbox. Each sender is checked at most once
// per RefreshInterval and group here (a cached check costs no resolve).
func (c *Client) nameStoredGroupSenders(ctx context.Context) {
	var us []unnamedSender
	rows, err := c.db.db.QueryContext(ctx, `SELECT DISTINCT from_key, grp FROM messages WHERE incoming = 1 AND grp != '' AND peer_handle = '' LIMIT ?`, maxUnnamedSenders)
	if err != nil {
		c.log.Warn("reading the group messages shown by key", "err", err)
		return
	}
	for rows.Next() {
		var from, group string
		if err := rows.Scan(&from, &group); err != nil {
			break
		}
		if k, err := kez.ParsePublicKey(from); err == nil {
			us = append(us, unnamedSender{k, group})
		}
	}
	rows.Close()
	now := c.now()
	un := &c.unnamed
	for _, u := range us {
		un.mu.Lock()
		if un.tried == nil || len(un.tried) >= maxKeyChains {
			un.tried = map[unnamedSender]time.Time{}
		}
		if at, ok := un.tried[u]; ok && now.Sub(at) < c.cfg.RefreshInterval {
			un.mu.Unlock()
			continue
		}
		un.tried[u] = now
		un.mu.Unlock()
		h := c.groupSenderHandle(ctx, u.group, u.from)
		if h == "" {
			continue
		}
		un.mu.Lock()
		delete(un.tried, u)
		un.mu.Unlock()
		err := c.db.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`UPDATE messages SET peer_handle = ? WHERE incoming = 1 AND from_key = ? AND grp = ? AND peer_handle = ''`, h, u.from.String(), u.group)
			return err
		})
		if err != nil {
			c.log.Warn("naming a group message's sender", "err", err)
		}
	}
}
