package chat

// Held envelopes and recorded group-updates (docs/spec/chat.md §10.4,
// §10.5): after the receiving transaction, the envelopes held for a key
// are opened and the group-updates recorded are acted on.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
)

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
	var blocked uint64
	now := c.now()
	err := c.db.write(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		out, blocked = out[:0], 0
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
			if err1 == nil && err2 == nil && c.blocked.has(dev, person) {
				// Held before the sender was blocked (§5.1).
				if _, err := tx.Exec(`DELETE FROM group_held WHERE id = ?`, h.id); err != nil {
					return fmt.Errorf("chat: database: %w", err)
				}
				blocked++
				continue
			}
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
	if err == nil {
		c.stats.blocked.Add(blocked)
	}
	return out, err
}

// nameGroupSenders gives the new group messages from senders whose
// handle was not checked yet the handle their chain confirms: each
// sender's handle (as the group names it) is resolved once and must
