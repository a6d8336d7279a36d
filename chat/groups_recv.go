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
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
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
	c.followDeferred(ctx, gb.touched)
	c.followUpdates(ctx, gb.updates, gb.own, gb.touched)
	c.followRefresh(ctx, gb.refresh, gb.touched)
	return c.openTouched(ctx, gb.touched)
}

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
	mu      sync.Mutex
	tried   map[unnamedSender]time.Time
	running atomic.Bool // nameStoredGroupSendersLater's job is under way
}

type unnamedSender struct {
	from  kez.PublicKey
	group string
}

// nameStoredGroupSendersLater runs nameStoredGroupSenders in the
// background, one run at a time, for a read that must not wait on the
// network (Page): the names reach chat.db, and the next read, later.
func (c *Client) nameStoredGroupSendersLater() {
	un := &c.unnamed
	if !un.running.CompareAndSwap(false, true) {
		return
	}
	ok := c.background(func(ctx context.Context) {
		defer un.running.Store(false)
		// Shutdown waits for background jobs: this one ends at once.
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-c.bg.Stopped():
				cancel()
			case <-ctx.Done():
			}
		}()
		c.nameStoredGroupSenders(ctx)
	})
	if !ok {
		un.running.Store(false)
	}
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
