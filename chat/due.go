package chat

// Copies due (docs/spec/chat.md §8.1). A send seals one copy of a message
// to each current device of its recipient and a sent copy to each of the
// user's other devices. A device whose prekey cannot be had at that
// moment (its sig-server down, the device linked but not run yet, a
// fetch that timed out) gets no envelope then: its copy is recorded as
// due (copies_due) in the transaction that stores the message, and
// sealed later from the message as the history keeps it, in a new step
// of the device's session (never with a message key used before), under
// the Nats-Msg-Id the copy would have had, so the receiver keeps it
// once. A copy due is tried again after a wait that doubles per device
// (kept in chat.db: a start tries those whose wait is over), and at once
// when a message from the device was opened or a copy to it was sealed
// (its prekey, or a session with it, is there now). It is dropped when its device is no
// current device of its person any more (revoked), when the message is
// gone from the history, after dueWindow, and beyond the bounds per
// device and per person.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Bounds of the copies due. A contact whose chain lists devices that
// never publish a prekey costs at most maxDuePerPerson rows of chat.db
// and, per device, one prekey fetch per wait (dueRetry doubling up to
// dueRetryMax).
var (
	// dueWindow is how old a copy due may get: the inbox stream keeps
	// mail no longer, as for resends.
	dueWindow = resendWindow
	// maxDuePerDevice bounds the copies due to one device: beyond it,
	// the oldest are dropped.
	maxDuePerDevice = 1000
	// maxDuePerPerson bounds the copies due to all of one person's
	// devices (the user's own too): a chain may list 32.
	maxDuePerPerson = 4000
	// dueRetry is the first wait before a device's prekey is fetched
	// again; each attempt in vain doubles it, up to dueRetryMax.
	dueRetry    = 10 * time.Second
	dueRetryMax = 15 * time.Minute
)

const (
	// dueBatch is how many copies to one device one transaction seals.
	dueBatch = 256
	// duePassDevices bounds the devices one pass tries; dueParallel of
	// them at once (each may wait RefreshTimeout for its prekey).
	duePassDevices = 64
	dueParallel    = 4
	// maxDueKicks bounds the devices waiting to be tried at once.
	maxDueKicks = 1024
)

// dueWork is the state of the copies due in this process.
type dueWork struct {
	any    atomic.Bool   // some copy may be due (false only once a pass found none)
	wake   chan struct{} // wakes the loop (capacity 1)
	passMu sync.Mutex    // one pass at a time
	first  chan struct{} // closed once the loop's first pass (at the start) ended

	mu    sync.Mutex
	kicks map[kez.PublicKey]bool // devices to try at the next pass, whatever their wait
}

func (c *Client) initDue() {
	c.due.wake = make(chan struct{}, 1)
	c.due.kicks = map[kez.PublicKey]bool{}
	c.due.first = make(chan struct{})
	c.due.any.Store(true) // the first pass finds out
}

// wakeDue has the loop run a pass.
func (c *Client) wakeDue() {
	select {
	case c.due.wake <- struct{}{}:
	default:
	}
}

// dueKick has the next pass try the copies due to these devices, if any,
// at once: a message from one was opened, or a copy to one was sealed, so
// a session with it (or its prekey) is there.
func (c *Client) dueKick(devices ...kez.PublicKey) {
	if !c.due.any.Load() || len(devices) == 0 {
		return
	}
	c.due.mu.Lock()
	for _, d := range devices {
		if len(c.due.kicks) < maxDueKicks {
			c.due.kicks[d] = true
		}
	}
	c.due.mu.Unlock()
	c.wakeDue()
}

// openedFrom returns the devices a session message of items came from
// (there is a session with each now): their copies due are tried at once.
func openedFrom(items []*received) []kez.PublicKey {
	var out []kez.PublicKey
	seen := map[kez.PublicKey]bool{}
	for _, r := range items {
		if r.v2 && r.err == nil && !seen[r.from] {
			seen[r.from] = true
			out = append(out, r.from)
		}
	}
	return out
}

// putDue records in tx that the copy of message id to t's device is due:
// tried again after dueRetry (the send's fetch was the first attempt),
// unless the device has copies due already and keeps their wait. The oldest copies
// beyond the bounds per device and per person are dropped; it returns how
// many.
func (c *Client) putDue(tx *sql.Tx, id MessageID, t target, counts bool, now time.Time) (int64, error) {
	dev, person := t.key().String(), t.person.String()
	_, err := tx.Exec(`INSERT INTO copies_due (msg_id, device, person, counts, created_at, attempts, next_at)
		SELECT ?, ?, ?, ?, ?, COALESCE(MAX(attempts), 1), MAX(COALESCE(MAX(next_at), 0), ?) FROM copies_due WHERE device = ?
		ON CONFLICT (msg_id, device) DO NOTHING`,
		id[:], dev, person, boolInt(counts), now.UnixMilli(), now.Add(dueRetry).UnixMilli(), dev)
	if err != nil {
		return 0, fmt.Errorf("chat: recording a copy due: %w", err)
	}
	var dropped int64
	for _, q := range []struct {
		col, val string
		max      int
	}{{"device", dev, maxDuePerDevice}, {"person", person, maxDuePerPerson}} {
		res, err := tx.Exec(`DELETE FROM copies_due WHERE rowid IN (SELECT rowid FROM copies_due WHERE `+q.col+` = ?
			ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?)`, q.val, q.max)
		if err != nil {
			return 0, fmt.Errorf("chat: recording a copy due: %w", err)
		}
		n, _ := res.RowsAffected()
		dropped += n
	}
	return dropped, nil
}

// clearDue deletes, in tx, the copy due of message id to device.
func clearDue(tx *sql.Tx, id MessageID, device kez.PublicKey) error {
	if _, err := tx.Exec(`DELETE FROM copies_due WHERE msg_id = ? AND device = ?`, id[:], device.String()); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	return nil
}

// copiesDue counts and logs the copies of a send recorded as due (keep:
// the send records them) and those dropped over a bound (trimmed), has
// the loop plan their retry, and has it try at once the devices a copy
// was sealed to (they may have copies due from earlier sends).
func (c *Client) copiesDue(copies []*outCopy, keep bool, trimmed int64) {
	if trimmed > 0 {
		c.stats.dueDropped.Add(uint64(trimmed))
		c.log.Warn("dropped the oldest copies due to devices over the bound per device or per person", "n", trimmed)
	}
	var due int
	var sealed []kez.PublicKey
	for _, cp := range copies {
		switch {
		case cp.env != nil:
			sealed = append(sealed, cp.t.key())
		case keep:
			due++
		}
	}
	c.dueKick(sealed...)
	if due == 0 {
		return
	}
	c.stats.copiesDue.Add(uint64(due))
	c.log.Info("copies of a message are due: their devices' prekeys could not be had; they are sealed once they can be",
		"id", copies[0].m.ID, "due", due)
	c.due.any.Store(true)
	c.wakeDue()
}

// dueLoop tries the copies due while the client runs: at the start, then
// each device when its wait (kept in chat.db, so across restarts) is over
// or it is kicked.
func (c *Client) dueLoop(ctx context.Context) {
	first := true
	for {
		var next time.Time
		if c.work.Enter() {
			var err error
			if next, _, err = c.duePass(ctx, false); err != nil && ctx.Err() == nil {
				c.log.Debug("sending the copies due", "err", err)
			}
			c.work.Leave()
		}
		if first {
			close(c.due.first)
			first = false
		}
		wait := dueRetryMax // none due: until one is recorded (a wake)
		if !next.IsZero() {
			wait = min(max(next.Sub(c.now()), 0), dueRetryMax)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
		case <-c.bg.Stopped():
		case <-c.due.wake:
		case <-t.C:
		}
		t.Stop()
		select {
		case <-c.bg.Stopped():
			return
		default:
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// SendDueCopies seals and publishes now the copies due (docs/spec/chat.md
// §8.1: copies of messages sent earlier to devices whose prekeys could
// not be had then) to every device whose prekey can be had now, whatever
// its wait. It returns how many it published and how many are still due.
// The client does this by itself while it runs; this is for a program
// that wants it done now.
func (c *Client) SendDueCopies(ctx context.Context) (sent, left int, err error) {
	if !c.work.Enter() {
		return 0, 0, ErrClosed
	}
	defer c.work.Leave()
	if c.nc == nil {
		return 0, 0, ErrOffline
	}
	_, sent, err = c.duePass(ctx, true)
	if err != nil {
		return sent, 0, err
	}
	err = c.db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM copies_due`).Scan(&left)
	if err != nil {
		return sent, 0, fmt.Errorf("chat: database: %w", err)
	}
	return sent, left, nil
}

// dueDevice is a device with copies due.
type dueDevice struct {
	device, person kez.PublicKey
	next           time.Time
}

// duePass drops the copies due too old, then tries the devices whose wait
// is over (force: every device) or that were kicked, at most
// duePassDevices, and returns when the next one is due (zero: none), and
// how many copies it published.
func (c *Client) duePass(ctx context.Context, force bool) (next time.Time, sent int, err error) {
	d := &c.due
	d.passMu.Lock()
	defer d.passMu.Unlock()
	d.mu.Lock()
	kicks := d.kicks
	d.kicks = map[kez.PublicKey]bool{}
	d.mu.Unlock()
	d.any.Store(false) // before reading: a send that records one after sets it again
	now := c.now()
	var aged int64
	err = c.db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM copies_due WHERE created_at < ?`, now.Add(-dueWindow).UnixMilli())
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		aged, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		d.any.Store(true)
		return now.Add(dueRetry), 0, err
	}
	if aged > 0 {
		c.stats.dueDropped.Add(uint64(aged))
		c.log.Info("dropped copies due older than the inbox keeps mail", "n", aged)
	}
	devs, err := c.dueDevices(ctx)
	if err != nil {
		d.any.Store(true)
		return now.Add(dueRetry), 0, err
	}
	if len(devs) == 0 {
		return time.Time{}, 0, nil
	}
	d.any.Store(true)
	var ready []dueDevice
	for _, dd := range devs {
		if (force || kicks[dd.device] || !dd.next.After(now)) && len(ready) < duePassDevices {
			ready = append(ready, dd)
		}
	}
	var mu sync.Mutex
	var errs []error
	sem := make(chan struct{}, dueParallel)
	var wg sync.WaitGroup
	for _, dd := range ready {
		if c.closingDown() {
			break // Shutdown waits for this pass: the rest wait for the next start
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			n, err := c.sendDue(ctx, dd)
			mu.Lock()
			sent += n
			if err != nil {
				errs = append(errs, err)
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if sent > 0 {
		c.log.Info("sealed and published copies that were due", "n", sent)
	}
	var first sql.NullInt64
	if err := c.db.db.QueryRowContext(ctx, `SELECT MIN(next_at) FROM copies_due`).Scan(&first); err != nil {
		return now.Add(dueRetry), sent, errors.Join(append(errs, fmt.Errorf("chat: database: %w", err))...)
	}
	if first.Valid {
		next = time.UnixMilli(first.Int64)
	}
	return next, sent, errors.Join(errs...)
}

// closingDown reports whether Shutdown or Close began.
func (c *Client) closingDown() bool {
	select {
	case <-c.work.Stopped():
		return true
	default:
		return false
	}
}

// dueDevices lists the devices with copies due, the one due first first.
func (c *Client) dueDevices(ctx context.Context) ([]dueDevice, error) {
	rows, err := c.db.db.QueryContext(ctx, `SELECT device, person, MIN(next_at) FROM copies_due GROUP BY device ORDER BY MIN(next_at), device`)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []dueDevice
	for rows.Next() {
		var dev, person string
		var next int64
		if err := rows.Scan(&dev, &person, &next); err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		dk, err1 := kez.ParsePublicKey(dev)
		pk, err2 := kez.ParsePublicKey(person)
		if err1 != nil || err2 != nil {
			continue
		}
		out = append(out, dueDevice{device: dk, person: pk, next: time.UnixMilli(next)})
	}
	return out, rows.Err()
}

// dueVerdict is what becomes of a device's copies due.
type dueVerdict int

const (
	dueSeal dueVerdict = iota // seal them now
	dueWait                   // not now (its person's chain cannot be checked, a flagged contact)
	dueDrop                   // never: no current device of its person any more
)

// dueTarget returns the target of dd's device if it is still a current
// device of its person, as the chains known here say (a contact's pinned
// chain, checked again when due; the user's own; a key's fetched one).
func (c *Client) dueTarget(ctx context.Context, dd dueDevice) (target, dueVerdict) {
	dev, person := dd.device, dd.person
	if dev == c.devKey {
		return target{}, dueDrop
	}
	if person == c.me {
		devs := c.ownDevices(ctx, false)
		c.devs.mu.Lock()
		known := c.devs.own != nil
		c.devs.mu.Unlock()
		switch d, ok := findDevice(devs, dev); {
		case ok && !d.Revoked:
			return c.ownTarget(dev), dueSeal
		case !ok && !known:
			return target{}, dueWait
		}
		return target{}, dueDrop
	}
	var ts []target
	if cs := c.contactByKey(person); cs != nil {
		if err := c.refreshContact(ctx, cs, false, false); err != nil {
			c.log.Debug("checking a contact with copies due", "person", person, "err", err)
		}
		c.mu.Lock()
		ct, devs := cs.c, cs.devices
		c.mu.Unlock()
		if ct.Err() != nil {
			return target{}, dueWait // flagged: nothing is sealed to them until the user decides
		}
		ts = c.contactTargets(&ct, devs)
	} else {
		var err error
		if ts, err = c.strangerTargets(ctx, person); err != nil {
			c.log.Debug("fetching the chain of a key with copies due", "person", person, "err", err)
			return target{}, dueWait
		}
	}
	for _, t := range ts {
		if t.key() == dev {
			return t, dueSeal
		}
	}
	return target{}, dueDrop
}

// dueCopy is one copy due, with its message as the history keeps it.
type dueCopy struct {
	m      Message // as sealed to the device (a sent copy's kind and body differ)
	counts bool
}

// sendDue seals and publishes the copies due to dd's device (at most
// dueBatch; if there are more, it has the next pass come at once), or,
// if the device's prekey cannot be had, makes it wait longer.
func (c *Client) sendDue(ctx context.Context, dd dueDevice) (int, error) {
	n, err := c.sealDue(ctx, dd)
	if err != nil && ctx.Err() == nil {
		// Whatever failed (the database, sealing), the device waits as
		// after a fetch in vain: never tried in a loop.
		err = errors.Join(err, c.dueLater(ctx, dd.device))
	}
	return n, err
}

// sealDue is sendDue but for the wait after an error.
func (c *Client) sealDue(ctx context.Context, dd dueDevice) (int, error) {
	dev := dd.device
	t, verdict := c.dueTarget(ctx, dd)
	switch verdict {
	case dueDrop:
		return 0, c.dropDue(ctx, dev, "it is no current device of its person")
	case dueWait:
		return 0, c.dueLater(ctx, dev)
	}
	copies, err := c.loadDue(ctx, dev)
	if err != nil || len(copies) == 0 {
		return 0, err
	}
	// A new fetch, whatever an earlier one found.
	c.peerPrekeys.mu.Lock()
	delete(c.peerPrekeys.none, dev)
	c.peerPrekeys.mu.Unlock()
	plan, err := c.planSeal(ctx, t, &copies[0].m, false)
	if err != nil {
		c.log.Debug("a device with copies due still has no prekey", "device", dev, "person", dd.person, "err", err)
		return 0, c.dueLater(ctx, dev)
	}
	type out struct {
		id     MessageID
		env    []byte
		pubID  string
		counts bool
	}
	var outs []out
	err = c.db.write(ctx, func(tx *sql.Tx) error {
		outs = outs[:0]
		now := c.now()
		for i, dc := range copies {
			// Claimed: a copy due is sealed once, whichever process
			// (sharing this state folder) gets to it first.
			res, err := tx.Exec(`DELETE FROM copies_due WHERE msg_id = ? AND device = ?`, dc.m.ID[:], dev.String())
			if err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
			if n, _ := res.RowsAffected(); n == 0 {
				continue
			}
			var env []byte
			switch {
			case plan.v1 != nil && i == 0:
				env = plan.v1
			case plan.v1 != nil:
				v1 := dc.m
				v1.From, v1.To = c.me, dev
				if env, err = Seal(c.id, t.rcpt, v1); err != nil {
					return err
				}
			default:
				if env, err = c.sealTx(tx, t, plan, &dc.m); err != nil {
					return err
				}
			}
			pubID := publishID(dc.m.ID, 0, dev, dc.counts && dev == t.person)
			if err := putOutbox(tx, dc.m.ID, dev, env, pubID, dc.counts, now); err != nil {
				return err
			}
			outs = append(outs, out{id: dc.m.ID, env: env, pubID: pubID, counts: dc.counts})
		}
		return nil
	})
	if errors.Is(err, errNoSession) {
		// The session planned on was gone: planned again at the next pass.
		return 0, c.dueLater(ctx, dev)
	}
	if err != nil {
		return 0, err
	}
	sent := 0
	for _, o := range outs {
		p := &Pending{c: c, done: make(chan struct{}), sent: Sent{ID: o.id, To: dd.person}}
		close(p.done)
		f := &flight{p: p, msgID: o.id, device: dev, pubID: o.pubID, counts: o.counts, durable: true, late: true}
		if err := c.publishEnvelope(f, o.env); err != nil {
			// Stored in the outbox: published again at the next start.
			return sent, err
		}
		sent++
		c.stats.dueSent.Add(1)
	}
	if len(copies) == dueBatch {
		c.dueKick(dev)
	}
	return sent, nil
}

// loadDue reads the oldest copies due to dev (at most dueBatch), rebuilt
// from the messages in the history: the message to its recipient, or,
// for one of the user's devices, its sent copy. Copies whose message is
// gone from the history are dropped.
func (c *Client) loadDue(ctx context.Context, dev kez.PublicKey) ([]dueCopy, error) {
	var gone int64
	if err := c.db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM copies_due WHERE device = ? AND NOT EXISTS
			(SELECT 1 FROM messages WHERE from_key = ? AND id = copies_due.msg_id AND incoming = 0)`, dev.String(), c.me.String())
		if err == nil {
			gone, _ = res.RowsAffected()
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	if gone > 0 {
		c.stats.dueDropped.Add(uint64(gone))
		c.log.Info("dropped copies due whose messages are no longer in the history", "device", dev, "n", gone)
	}
	rows, err := c.db.db.QueryContext(ctx, `SELECT d.counts, `+prefixed("m.", entryColumns)+` FROM copies_due d
		JOIN messages m ON m.from_key = ? AND m.id = d.msg_id AND m.incoming = 0
		WHERE d.device = ? ORDER BY d.created_at, d.rowid LIMIT ?`, c.me.String(), dev.String(), dueBatch)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []dueCopy
	for rows.Next() {
		var counts bool
		e, err := scanEntry(scanFunc(func(dest ...any) error { return rows.Scan(append([]any{&counts}, dest...)...) }))
		if err != nil {
			return nil, err
		}
		m := Message{ID: e.ID, From: c.me, To: e.To, SentAt: e.SentAt, Kind: e.Kind, Ref: e.Ref, Body: e.Body}
		if !counts {
			m = Message{ID: e.ID, From: c.me, To: c.me, SentAt: e.SentAt, Kind: KindSyncSent, Ref: e.Ref, Body: marshalSyncSent(e.To, &m)}
		}
		out = append(out, dueCopy{m: m, counts: counts})
	}
	return out, rows.Err()
}

// prefixed puts p before each of the columns (separated by ", ").
func prefixed(p, columns string) string { return p + strings.ReplaceAll(columns, ", ", ", "+p) }

// dueLater makes dev's copies due wait longer: dueRetry doubled per
// attempt in vain, up to dueRetryMax.
func (c *Client) dueLater(ctx context.Context, dev kez.PublicKey) error {
	now := c.now()
	return c.db.write(ctx, func(tx *sql.Tx) error {
		var attempts int64
		if err := tx.QueryRow(`SELECT COALESCE(MAX(attempts), 0) FROM copies_due WHERE device = ?`, dev.String()).Scan(&attempts); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		_, err := tx.Exec(`UPDATE copies_due SET attempts = ?, next_at = ? WHERE device = ?`,
			attempts+1, now.Add(dueBackoff(attempts)).UnixMilli(), dev.String())
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		return nil
	})
}

// dueBackoff is the wait after attempts+1 fetches of a device's prekey
// in vain: dueRetry, doubled per attempt, at most dueRetryMax.
func dueBackoff(attempts int64) time.Duration {
	if attempts < 0 {
		attempts = 0
	}
	if attempts >= 20 {
		return dueRetryMax
	}
	return min(dueRetry<<attempts, dueRetryMax)
}

// dropDue deletes every copy due to dev.
func (c *Client) dropDue(ctx context.Context, dev kez.PublicKey, why string) error {
	var n int64
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM copies_due WHERE device = ?`, dev.String())
		if err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err == nil && n > 0 {
		c.stats.dueDropped.Add(uint64(n))
		c.log.Info("dropped the copies due to a device: "+why, "device", dev, "n", n)
	}
	return err
}
