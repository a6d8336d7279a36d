package chat

// Log views (docs/spec/chat.md §11): before a message to a contact the
// client now and then sends the checkpoints of the sig-servers' logs it
// accepted and its own chain's head; the contact checks them against its
// own. Two views of one log that cannot both be true are a split view:
// a sig-server showed the two people different histories.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog"
)

// Timing of log views.
const (
	// logViewMin: at most one view per contact per this, sent or received.
	logViewMin = time.Minute
	// maxSplitViews bounds the split views recorded.
	maxSplitViews = 100
)

// SplitView is a contradiction between two checkpoints of one sig-server
// log, or between a contact's own chain head and the one pinned here: a
// sig-server showed two people different histories (docs/spec/chat.md
// §11). It is evidence: both notes are signed by the log's key.
type SplitView struct {
	Origin string // the log (a checkpoint's origin line)
	// Ours is the checkpoint this client had accepted and Theirs the one
	// that contradicts it (signed notes, C2SP tlog-checkpoint); Theirs is
	// empty for a head mismatch whose contact sent no checkpoint of the
	// log.
	Ours, Theirs []byte
	// Contact is the contact whose log-view showed it (zero: this
	// client's own fetch met it), Handle its handle.
	Contact kez.PublicKey
	Handle  string
	At      time.Time
	Reason  string // why both cannot be true
}

// String says what the split view is, in one line.
func (s SplitView) String() string {
	who := "a fetch of this client"
	if s.Handle != "" {
		who = s.Handle
	} else if !s.Contact.IsZero() {
		who = s.Contact.String()
	}
	return fmt.Sprintf("split view of log %q seen through %s at %s: %s", s.Origin, who, s.At.UTC().Format(time.RFC3339), s.Reason)
}

// SplitViews returns the split views recorded, oldest first. While there
// is any, the user's sig-server (or a contact's) has been caught showing
// people different histories; see docs/spec/chat.md §11.
func (c *Client) SplitViews(ctx context.Context) ([]SplitView, error) {
	return c.db.splitViews(ctx)
}

// splitViews reads the split views recorded, oldest first.
func (s *store) splitViews(ctx context.Context) ([]SplitView, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT origin, ours, theirs, contact, handle, at, reason FROM split_views ORDER BY at, rowid`)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []SplitView
	for rows.Next() {
		var sv SplitView
		var contact string
		var at int64
		if err := rows.Scan(&sv.Origin, &sv.Ours, &sv.Theirs, &contact, &sv.Handle, &at, &sv.Reason); err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		if contact != "" {
			if sv.Contact, err = kez.ParsePublicKey(contact); err != nil {
				return nil, fmt.Errorf("chat: database: split view contact %q: %w", contact, err)
			}
		}
		sv.At = time.UnixMilli(at)
		out = append(out, sv)
	}
	return out, rows.Err()
}

// recordSplitView stores s (the same pair of notes once, and at most
// maxSplitViews in all) and, if it is new, logs it as an error with both
// notes and tells Config.OnSplitView.
func (c *Client) recordSplitView(ctx context.Context, s SplitView) {
	var added bool
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO split_views (origin, ours, theirs, contact, handle, at, reason)
			SELECT ?,?,?,?,?,?,? WHERE (SELECT COUNT(*) FROM split_views) < ?
			ON CONFLICT (origin, ours, theirs) DO NOTHING`,
			s.Origin, nonNil(s.Ours), nonNil(s.Theirs), keyText(s.Contact), s.Handle, s.At.UnixMilli(), s.Reason, maxSplitViews)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		added = n == 1
		return err
	})
	if err != nil {
		c.log.Warn("could not record a split view", "err", err)
	}
	if err != nil || !added {
		return
	}
	c.log.Error("SPLIT VIEW: a sig-server showed you and a contact different histories; do not trust the keys it serves until this is explained",
		"origin", s.Origin, "contact", s.Handle, "reason", s.Reason, "ours", string(s.Ours), "theirs", string(s.Theirs))
	c.stats.splitViews.Add(1)
	if f := c.cfg.OnSplitView; f != nil {
		f(s)
	}
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// noteSplit records err's split view, if it is one, met by this client's
// own fetch (contact: the contact whose chain was fetched, if any).
func (c *Client) noteSplit(ctx context.Context, err error, ct *Contact) {
	var sv *translog.SplitViewError
	if !errors.As(err, &sv) {
		return
	}
	s := SplitView{Origin: sv.Origin, Ours: sv.Ours, Theirs: sv.Theirs, At: c.now(), Reason: sv.Reason}
	if ct != nil {
		s.Contact, s.Handle = ct.Key, ct.Handle
	}
	c.recordSplitView(context.WithoutCancel(ctx), s)
}

// originOf returns the origin line of a signed note.
func originOf(note []byte) string {
	o, _, _ := bytes.Cut(note, []byte("\n"))
	return string(o)
}

// logViews is the client's log-view state.
type logViews struct {
	mu   sync.Mutex
	sent map[kez.PublicKey]*viewSent // per contact: the last view sent
	seen map[kez.PublicKey]time.Time // per contact: the last view processed
}

type viewSent struct {
	loaded  bool
	digest  [32]byte
	sentAt  time.Time
	checked time.Time // the view was last computed
}

// ownView returns the log-view body for a contact pinned with the
// sig-server ct.SigServer, or nil when there is none to send (no log
// monitor, or no pinned chain of the user's own).
func (c *Client) ownView(ctx context.Context, ct *Contact) []byte {
	own := c.pinnedOwnChain()
	if c.cc.Log == nil || own == nil {
		return nil
	}
	v := logView{HeadSeqno: own.Seqno(), Head: own.Head()}
	for _, server := range distinct(c.cc.SigServerURL, ct.SigServer) {
		n, err := c.cc.Log.Latest(ctx, server)
		if err != nil {
			c.log.Debug("reading the newest checkpoint of a log", "server", server, "err", err)
			continue
		}
		if len(n) == 0 || len(n) > maxLogViewNoteSize || len(v.Checkpoints) == maxLogViewNotes || slices.ContainsFunc(v.Checkpoints, func(o []byte) bool { return bytes.Equal(o, n) }) {
			continue
		}
		v.Checkpoints = append(v.Checkpoints, n)
	}
	return marshalLogView(v)
}

// distinct returns the non-empty strings of ss, each once, in order.
func distinct(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// sendLogView sends the user's log view to the contact's devices ts
// before a message, if it is due: it changed since the last one sent
// to the contact and logViewMin passed, or Config.LogViewInterval passed. Failures
// are logged: the message is sent anyway.
func (c *Client) sendLogView(ctx context.Context, ct *Contact, ts []target) {
	if c.cc.Log == nil || len(ts) == 0 || c.cfg.LogViewInterval < 0 {
		return
	}
	now := c.now()
	lv := &c.logViews
	lv.mu.Lock()
	if lv.sent == nil {
		lv.sent = map[kez.PublicKey]*viewSent{}
	}
	st := lv.sent[ct.Key]
	if st == nil {
		st = &viewSent{}
		lv.sent[ct.Key] = st
	}
	if now.Sub(st.checked) < logViewMin {
		lv.mu.Unlock()
		return
	}
	st.checked = now
	if !st.loaded {
		var sentAt int64
		var digest []byte
		err := c.db.db.QueryRowContext(ctx, `SELECT digest, sent_at FROM log_views_sent WHERE peer = ?`, ct.Key.String()).Scan(&digest, &sentAt)
		switch {
		case err == nil && len(digest) == len(st.digest):
			copy(st.digest[:], digest)
			st.sentAt = time.UnixMilli(sentAt)
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			lv.mu.Unlock()
			c.log.Warn("reading the last log view sent", "handle", ct.Handle, "err", err)
			return
		}
		st.loaded = true
	}
	body := c.ownView(ctx, ct)
	digest := sha256.Sum256(body)
	if body == nil || digest == st.digest && now.Sub(st.sentAt) < c.cfg.LogViewInterval || now.Sub(st.sentAt) < logViewMin {
		lv.mu.Unlock()
		return
	}
	lv.mu.Unlock()
	if _, err := c.publishIn(ctx, ts, Message{Kind: KindLogView, Body: body}, false, false, false, nil); err != nil {
		c.log.Warn("could not send your log view to a contact", "handle", ct.Handle, "err", err)
		return
	}
	lv.mu.Lock()
	st.digest, st.sentAt = digest, now
	lv.mu.Unlock()
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO log_views_sent (peer, digest, sent_at) VALUES (?,?,?)
			ON CONFLICT (peer) DO UPDATE SET digest = excluded.digest, sent_at = excluded.sent_at`, ct.Key.String(), digest[:], now.UnixMilli())
		return err
	})
	if err != nil {
		c.log.Warn("recording the log view sent", "handle", ct.Handle, "err", err)
	}
	c.stats.logViewsSent.Add(1)
}

// afterLogViews processes the log-views of a stored batch: of each
// contact, the last one, if none was processed within logViewMin; others
// (and those of anyone but a contact) are dropped and counted.
func (c *Client) afterLogViews(ctx context.Context, items []*received) {
	last := map[kez.PublicKey]*logView{}
	var order []kez.PublicKey
	for _, r := range items {
		if r.logView == nil || r.err != nil {
			continue
		}
		if _, ok := last[r.who.person]; ok {
			c.stats.logViewsDropped.Add(1)
		} else {
			order = append(order, r.who.person)
		}
		last[r.who.person] = r.logView
	}
	now := c.now()
	for _, person := range order {
		c.mu.Lock()
		cs := c.byKey[person]
		c.mu.Unlock()
		lv := &c.logViews
		lv.mu.Lock()
		if lv.seen == nil {
			lv.seen = map[kez.PublicKey]time.Time{}
		}
		at, seen := lv.seen[person]
		due := cs != nil && c.cc.Log != nil && (!seen || now.Sub(at) >= logViewMin)
		if due {
			lv.seen[person] = now
		}
		lv.mu.Unlock()
		if !due {
			c.stats.logViewsDropped.Add(1)
			continue
		}
		c.stats.logViews.Add(1)
		wctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
		c.checkLogView(wctx, cs, last[person])
		cancel()
	}
}

// checkLogView checks a contact's log view against this client's: each
// checkpoint is witnessed with the server of its log as pinned here (the
// user's own sig-server, or the one the contact was pinned with), and the
// contact's own head is compared with the pin.
func (c *Client) checkLogView(ctx context.Context, cs *contactState, v *logView) {
	c.mu.Lock()
	ct := cs.c
	c.mu.Unlock()
	mon := c.cc.Log
	var theirs []byte // their checkpoint of the contact's sig-server's log
	var contactOrigin string
	ours, _ := mon.Latest(ctx, ct.SigServer)
	if ours != nil {
		contactOrigin = originOf(ours)
	}
	for _, note := range v.Checkpoints {
		origin := originOf(note)
		for _, server := range distinct(ct.SigServer, c.cc.SigServerURL) {
			latest, err := mon.Latest(ctx, server)
			if err != nil || latest == nil || originOf(latest) != origin {
				continue
			}
			if server == ct.SigServer {
				theirs = note
			}
			err = mon.Witness(ctx, server, note)
			var sv *translog.SplitViewError
			switch {
			case errors.As(err, &sv):
				c.recordSplitView(ctx, SplitView{Origin: sv.Origin, Ours: sv.Ours, Theirs: sv.Theirs,
					Contact: ct.Key, Handle: ct.Handle, At: c.now(), Reason: sv.Reason})
				if origin == contactOrigin {
					// The contact's pinned chain came from a server caught
					// showing two histories.
					_ = c.flagChainRewritten(ctx, cs, fmt.Errorf("the log of %s showed %s a history that contradicts yours: %s", ct.SigServer, ct.Handle, sv.Reason))
				}
			case err != nil:
				c.log.Warn("a contact's log view does not check", "handle", ct.Handle, "origin", origin, "err", err)
			}
			break
		}
	}
	c.checkViewHead(ctx, cs, v, ours, theirs, contactOrigin)
}

// checkViewHead compares the contact's own chain head, as its client
// sent it, with the pin: another link at a seqno the pin holds flags the
// contact and is recorded as a split view; a longer chain makes the
// client check the contact now.
func (c *Client) checkViewHead(ctx context.Context, cs *contactState, v *logView, ours, theirs []byte, origin string) {
	c.mu.Lock()
	ct := cs.c
	c.mu.Unlock()
	if ct.Flag != FlagNone {
		return
	}
	if v.HeadSeqno > ct.Pin.Seqno {
		if err := c.refreshContact(ctx, cs, false, true); err != nil {
			c.log.Warn("checking a contact whose client shows a longer chain", "handle", ct.Handle, "err", err)
			return
		}
		c.mu.Lock()
		ct = cs.c
		c.mu.Unlock()
		if v.HeadSeqno > ct.Pin.Seqno {
			c.log.Info("a contact's client shows more of its chain than its sig-server showed here", "handle", ct.Handle, "theirs", v.HeadSeqno, "pinned", ct.Pin.Seqno)
			return
		}
	}
	id, err := c.pinnedLinkID(ctx, ct, v.HeadSeqno)
	if err != nil {
		c.log.Warn("reading a contact's pinned chain", "handle", ct.Handle, "err", err)
		return
	}
	if !id.Defined() || id.Equals(v.Head) {
		return
	}
	reason := fmt.Sprintf("%s's own client shows link %s at seqno %d of its chain, the sig-server showed you %s", ct.Handle, v.Head, v.HeadSeqno, id)
	c.recordSplitView(ctx, SplitView{Origin: origin, Ours: ours, Theirs: theirs, Contact: ct.Key, Handle: ct.Handle, At: c.now(), Reason: reason})
	_ = c.flagChainRewritten(ctx, cs, errors.New(reason))
}

// pinnedLinkID returns the ID of the link at seqno of the contact's
// pinned chain (undefined if it is not stored).
func (c *Client) pinnedLinkID(ctx context.Context, ct Contact, seqno uint64) (cid.Cid, error) {
	if seqno == ct.Pin.Seqno {
		return ct.Pin.Head, nil
	}
	var b []byte
	err := c.db.db.QueryRowContext(ctx, `SELECT link FROM chain_links WHERE key = ? AND seqno = ?`, ct.Key.String(), int64(seqno)).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return cid.Undef, nil
	}
	if err != nil {
		return cid.Undef, fmt.Errorf("chat: database: %w", err)
	}
	l, err := sigchain.ParseLink(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("chat: database: the pinned link %d of %s: %w", seqno, ct.Handle, err)
	}
	return l.ID(), nil
}

// RecordedSplitViews returns the split views recorded in the chat
// database of the state folder home (see [Client.SplitViews]), for a
// program that opens no Client; none if the folder has no database.
func RecordedSplitViews(ctx context.Context, home string) ([]SplitView, error) {
	path, ok, err := homeDatabase(home)
	if err != nil || !ok {
		return nil, err
	}
	db, err := openStore(path)
	if err != nil {
		return nil, err
	}
	defer db.close()
	return db.splitViews(ctx)
}
