package chat

// Sending to a group (docs/spec/chat.md §10.3): this device's sender key
// for the group's epoch, distributed pairwise to the member devices that
// lack it, then one format 3 envelope published to every member device
// through kez.v1.msend.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// groupMemberFetches bounds the members whose chains (or prekeys) a group
// send asks for at once.
const groupMemberFetches = 8

// SendGroup sends text to the group (NAME or NAME@domain) and returns
// once the gate stored it for at least one member device. Sent.To is the
// zero key (the message is to the group) and Sent.Handle the group's
// name. Errors: ErrUnknownGroup, ErrNotGroupMember (the user left or was
// removed), ErrGroupBroken (a fork), group.ErrRollback (the sig-server
// shows fewer links than pinned), and those of publishing; when the gate
// refused every copy (the message is recorded as failed), one error per
// reason, as a one-to-one send to such a device would return
// (*QuotaError, ErrUnknownRecipient, …), joined. While NATS, or the
// gate and stream after a reconnect, cannot be reached, the message
// stays pending and SendGroup waits for them; if ctx ends first the error
// wraps [ErrQueued], and the message is published once the connection is
// back.
func (c *Client) SendGroup(ctx context.Context, name, text string, _ ...SendOption) (Sent, error) {
	return c.sendGroup(ctx, name, KindText, []byte(text))
}

// sendGroup sends a group message of the kind (text, group-file) with
// body: SendGroup's steps.
func (c *Client) sendGroup(ctx context.Context, name string, kind Kind, body []byte) (_ Sent, err error) {
	if !c.work.Enter() {
		return Sent{}, ErrClosed
	}
	defer c.work.Leave()
	if c.nc == nil {
		return Sent{}, ErrOffline
	}
	gs, err := c.pinnedGroup(name)
	if err != nil {
		return Sent{}, err
	}
	if err := c.refreshGroup(ctx, gs, false); err != nil {
		if errors.Is(err, ErrGroupBroken) || errors.Is(err, group.ErrRollback) {
			return Sent{}, err
		}
		c.log.Warn("cannot fetch a group's chain; sending on the pinned one", "group", gs.name, "err", err)
	}
	st, left, broken := gs.snapshot()
	if broken != "" {
		return Sent{}, fmt.Errorf("%w: %s", ErrGroupBroken, gs.name)
	}
	if _, ok := st.Member(c.me); left || !ok {
		return Sent{}, fmt.Errorf("%w: %s", ErrNotGroupMember, gs.name)
	}
	if err := gs.mustBeAccepted(); err != nil {
		return Sent{}, err
	}
	members := c.groupDevices(ctx, st)
	if err := c.distributeKey(ctx, gs, st, members); err != nil {
		return Sent{}, err
	}
	m := Message{ID: NewMessageID(), SentAt: c.now().Truncate(time.Millisecond), From: c.me, Kind: kind, Body: body}
	if err := m.validate(); err != nil {
		return Sent{}, err
	}
	// Stored, it is this send's to publish until it returns; then, if
	// still pending, the outbox loop's.
	c.outgoing.add(m.ID)
	defer func() {
		c.outgoing.done(m.ID)
		if errors.Is(err, ErrQueued) {
			c.kickOutbox()
		}
	}()
	var devices []kez.PublicKey
	for _, mi := range members {
		for _, d := range mi.current {
			if d != c.devKey {
				devices = append(devices, d)
			}
		}
	}
	env, err := c.sealGroup(ctx, gs, st, &m, devices)
	if err != nil {
		return Sent{}, err
	}
	sent := Sent{ID: m.ID, Handle: gs.name, SentAt: m.SentAt}
	if len(devices) == 0 {
		// The user's only device in a group of one.
		return sent, c.groupOutcome(ctx, m.ID, &wire.MultiAnswer{Stored: 1}, nil)
	}
	ans, err := c.publishGroupMsg(ctx, devices, env, m.ID)
	if oerr := c.groupOutcome(ctx, m.ID, &ans, err); oerr != nil {
		return Sent{}, oerr
	}
	if err != nil {
		return Sent{}, err
	}
	if ans.Stored+ans.Duplicates == 0 {
		return Sent{}, noCopyStored(ans.Refused)
	}
	sent.Duplicate = ans.Stored == 0 && ans.Duplicates > 0
	c.stats.sent.Add(1)
	return sent, nil
}

// groupMember is a member with their current devices, and the targets to
// seal pairwise messages to them.
type groupMember struct {
	m       group.Member
	current []kez.PublicKey
	targets []target // this device excluded
}

// groupDevices takes the current devices of every member of st, at most
// groupMemberFetches at once. A member whose chain cannot be had now is
// left out (logged).
func (c *Client) groupDevices(ctx context.Context, st *group.State) []*groupMember {
	ms := st.Members()
	out := make([]*groupMember, len(ms))
	var wg sync.WaitGroup
	sem := make(chan struct{}, groupMemberFetches)
	for i, m := range ms {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ts, err := c.memberTargets(ctx, m.Key, m.Handle)
			if err != nil {
				c.log.Warn("cannot have a group member's devices now; they get this message later or not", "group", st.Name(), "member", m.Handle, "err", err)
				return
			}
			gm := &groupMember{m: m, targets: ts}
			for _, t := range ts {
				gm.current = append(gm.current, t.key())
			}
			if m.Key == c.me {
				gm.current = append(gm.current, c.devKey)
			}
			out[i] = gm
		})
	}
	wg.Wait()
	kept := out[:0]
	for _, gm := range out {
		if gm != nil {
			kept = append(kept, gm)
		}
	}
	return kept
}

// senderKey loads (or makes and stores) this device's sender key of the
// group at the epoch, in tx.
func (c *Client) senderKey(tx *sql.Tx, gid [32]byte, epoch uint64) (*session.SenderKey, error) {
	var b []byte
	err := tx.QueryRow(`SELECT state FROM group_skeys WHERE gid = ? AND epoch = ?`, gid[:], epoch).Scan(&b)
	if err == nil {
		sk, err := session.ParseSenderKey(b)
		if err != nil {
			return nil, fmt.Errorf("chat: database: a sender key: %w", err)
		}
		return sk, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	sk, err := session.NewSenderKey(rand.Reader, gid, epoch, c.devKey)
	if err != nil {
		return nil, err
	}
	// A new epoch: the keys of earlier ones are never sent with again.
	if _, err := tx.Exec(`DELETE FROM group_skeys WHERE gid = ? AND epoch < ?`, gid[:], epoch); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	return sk, c.saveSenderKey(tx, sk)
}

func (c *Client) saveSenderKey(tx *sql.Tx, sk *session.SenderKey) error {
	b, err := sk.MarshalBinary()
	if err != nil {
		return err
	}
	gid := sk.GID()
	_, err = tx.Exec(`INSERT INTO group_skeys (gid, epoch, state, created) VALUES (?,?,?,?)
		ON CONFLICT (gid, epoch) DO UPDATE SET state = excluded.state`, gid[:], sk.Epoch(), b, c.now().UnixMilli())
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	return nil
}

// distributeKey sends this device's sender key of st's epoch, at the
// iteration it stands at, to every member device that has not had it
// (group-key, sealed pairwise), all of them through fanOut: one
// multi-recipient send for up to 1024 devices, and waits for the gate's
// answer. A device is recorded as having had the key in the transaction
// that seals its copy; one the gate refused is recorded no more, so the
// next send tries it again.
func (c *Client) distributeKey(ctx context.Context, gs *groupState, st *group.State, members []*groupMember) error {
	gs.send.Lock()
	defer gs.send.Unlock()
	gid, epoch := st.ID(), st.Epoch()
	var dist []byte
	had := map[kez.PublicKey]bool{}
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		sk, err := c.senderKey(tx, gid, epoch)
		if err != nil {
			return err
		}
		if dist, err = sk.Distribution().MarshalBinary(); err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT device FROM group_skey_sent WHERE gid = ? AND epoch = ?`, gid[:], epoch)
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		defer rows.Close()
		clear(had)
		for rows.Next() {
			var d string
			if err := rows.Scan(&d); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
			if k, err := kez.ParsePublicKey(d); err == nil {
				had[k] = true
			}
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	var ts []target
	for _, gm := range members {
		for _, t := range gm.targets {
			if !had[t.key()] {
				ts = append(ts, t)
			}
		}
	}
	if len(ts) == 0 {
		return nil
	}
	out, err := c.fanOut(ctx, ts, Message{Kind: KindGroupKey, Body: dist}, func(tx *sql.Tx, sealed []kez.PublicKey) error {
		for _, d := range sealed {
			if _, err := tx.Exec(`INSERT OR IGNORE INTO group_skey_sent (gid, epoch, device) VALUES (?,?,?)`, gid[:], epoch, d.String()); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		return nil
	})
	if len(out.answer.Refused) > 0 {
		werr := c.db.write(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
			for _, r := range out.answer.Refused {
				if _, err := tx.Exec(`DELETE FROM group_skey_sent WHERE gid = ? AND epoch = ? AND device = ?`, gid[:], epoch, r.Device.String()); err != nil {
					return fmt.Errorf("chat: database: %w", err)
				}
			}
			return nil
		})
		if werr != nil {
			c.log.Warn("recording the group keys the gate refused", "group", gs.name, "err", werr)
		}
	}
	if err != nil {
		// The message goes on: who lacks the key holds it until the
		// next send brings the key (or the outbox, at the next start).
		c.log.Warn("cannot send the group key to every member device", "group", gs.name, "devices", len(ts), "err", err)
	}
	return ctx.Err()
}

// sealGroup seals m with the sender key of st's epoch and stores, in one
// transaction, the key's new state, the message (pending) and the
// envelope to publish to devices (the group outbox).
func (c *Client) sealGroup(ctx context.Context, gs *groupState, st *group.State, m *Message, devices []kez.PublicKey) ([]byte, error) {
	gs.send.Lock()
	defer gs.send.Unlock()
	var env []byte
	now := c.now()
	e := &Entry{
		ID: m.ID, From: c.me, SentAt: m.SentAt, ReceivedAt: now, Kind: m.Kind, Body: m.Body,
		Trust: TrustTrusted, Read: true, State: StatePending, Group: gs.name, PeerHandle: gs.name,
	}
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		sk, err := c.senderKey(tx, st.ID(), st.Epoch())
		if err != nil {
			return err
		}
		if env, err = sk.Seal(marshalInnerV2(m)); err != nil {
			return fmt.Errorf("chat: sealing a group message: %w", err)
		}
		if err := c.saveSenderKey(tx, sk); err != nil {
			return err
		}
		if _, err := c.db.insertSent(tx, e, nil); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO group_outbox (msg_id, name, envelope, devices, created_at) VALUES (?,?,?,?,?)`,
			m.ID[:], gs.name, env, keysText(devices), now.UnixMilli())
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		return nil
	})
	return env, err
}

// keysText joins keys with spaces; parseKeysText reads it back.
func keysText(keys []kez.PublicKey) string {
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = k.String()
	}
	return strings.Join(s, " ")
}

func parseKeysText(s string) []kez.PublicKey {
	var out []kez.PublicKey
	for _, f := range strings.Fields(s) {
		if k, err := kez.ParsePublicKey(f); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// groupOutcome records what the gate answered a group send: sent if it
// stored a copy (or had it), failed if it refused every one or the send
// was refused whole. An error that leaves the outcome unknown (the
// client closed, the connection dropped) leaves the envelope in the group
// outbox, published again at the next start.
func (c *Client) groupOutcome(ctx context.Context, id MessageID, ans *wire.MultiAnswer, perr error) error {
	if perr != nil && !isFinal(perr) {
		return nil
	}
	state := StateFailed
	if perr == nil && ans.Stored+ans.Duplicates > 0 {
		state = StateSent
	}
	for _, r := range ans.Refused {
		c.log.Info("the gate refused a copy of a group message", "id", id, "device", r.Device, "code", r.Code)
	}
	return c.db.write(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM group_outbox WHERE msg_id = ?`, id[:]); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		_, err := tx.Exec(`UPDATE messages SET state = ? WHERE from_key = ? AND id = ? AND incoming = 0`, string(state), c.me.String(), id[:])
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		return nil
	})
}

// noCopyStored is the error of a group send the gate refused for every
// device: the error a one-to-one send would return, once per refusal
// code, joined.
func noCopyStored(refused []wire.MultiRefusal) error {
	seen := map[int]bool{}
	var errs []error
	for _, r := range refused {
		if !seen[r.Code] {
			seen[r.Code] = true
			errs = append(errs, multiRefusalError(r))
		}
	}
	if len(errs) == 0 {
		return errNoCopyStored
	}
	return fmt.Errorf("%w: %w", errNoCopyStored, errors.Join(errs...))
}

// errNoCopyStored is the cause of noCopyStored's error.
var errNoCopyStored = errors.New("chat: no member device took the group message")

// isFinal reports a publish error after which publishing the same
// envelope again cannot help: a refusal, not a failure of the connection.
func isFinal(err error) bool {
	return !errors.Is(err, ErrClosed) && !errors.Is(err, ErrQueued) && !errors.Is(err, context.Canceled) &&
		!errors.Is(err, context.DeadlineExceeded) && !transient(err)
}

// publishGroupMsg publishes a group envelope stored in the group outbox
// (publishMulti) and, when that fails for the connection (NATS away, no
// stream or gate answering yet after a reconnect), again once it is back,
// until ctx ends or the client stops taking work: then the error wraps
// ErrQueued, and the envelope, left in the group outbox, is the outbox
// loop's.
func (c *Client) publishGroupMsg(ctx context.Context, devices []kez.PublicKey, env []byte, id MessageID) (wire.MultiAnswer, error) {
	var delay time.Duration
	for {
		ans, err := c.publishMulti(ctx, devices, env, id.String())
		if err == nil || isFinal(err) {
			return ans, err
		}
		if ctx.Err() != nil || !c.waitToRetry(ctx, &delay) {
			if ctx.Err() != nil {
				err = ctx.Err()
			}
			return ans, fmt.Errorf("chat: group message %s: %w: %w", id, ErrQueued, err)
		}
	}
}

// republishGroups publishes again the group keys and updates, then the
// group envelopes, stored but not answered before the client last
// stopped (or, after a reconnect, left for the connection), but those
// this client is publishing now: the same bytes and Nats-Msg-Id, so the
// stream and the receivers keep each once. It reports whether some are
// left for the connection.
func (c *Client) republishGroups(ctx context.Context) (left bool) {
	left = c.republishMulti(ctx)
	type pending struct {
		id      MessageID
		env     []byte
		devices []kez.PublicKey
	}
	rows, err := c.db.db.QueryContext(ctx, `SELECT msg_id, envelope, devices FROM group_outbox ORDER BY created_at`)
	if err != nil {
		c.log.Warn("reading the group outbox", "err", err)
		return
	}
	var ps []pending
	for rows.Next() {
		var p pending
		var id []byte
		var devs string
		if err := rows.Scan(&id, &p.env, &devs); err != nil || len(id) != len(p.id) {
			continue
		}
		copy(p.id[:], id)
		p.devices = parseKeysText(devs)
		ps = append(ps, p)
	}
	rows.Close()
	n := 0
	for _, p := range ps {
		if c.outgoing.busy(p.id) {
			continue
		}
		n++
		if len(p.devices) == 0 {
			_ = c.groupOutcome(ctx, p.id, &wire.MultiAnswer{Stored: 1}, nil)
			continue
		}
		c.outgoing.add(p.id)
		ans, err := c.publishMulti(ctx, p.devices, p.env, p.id.String())
		if oerr := c.groupOutcome(ctx, p.id, &ans, err); oerr != nil {
			c.log.Warn("recording the outcome of a group message", "id", p.id, "err", oerr)
		}
		c.outgoing.done(p.id)
		if err != nil {
			left = left || !isFinal(err)
			c.log.Warn("publishing a group message left pending", "id", p.id, "err", err)
		}
	}
	if n > 0 {
		c.log.Info("published again the group messages left pending", "n", n)
	}
	return left
}
