package chat

// Sessions (format v2): one or more Double Ratchet sessions per peer
// (package session), kept in chat.db.
//
// The database is the only copy of a session's state: each message is
// sealed or opened inside the write transaction that reads the state,
// stores the state it leaves and stores the message (a sent message with
// its envelope, before it is published). Transactions take SQLite's write
// lock when they begin (sqlitedb), so two processes sharing one state
// folder never seal with the same message key, a failed transaction
// changes nothing, and a crash leaves the state of the last message
// stored, never of one that was published and not stored.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
)

// sessRow is one stored session, loaded in a transaction.
type sessRow struct {
	peer    kez.PublicKey
	id      [16]byte
	s       *session.Session
	updated int64 // Unix ms: the last message opened from the peer under it, or its creation
	opened  bool  // a message was opened under it in this transaction
	dirty   bool  // its state changed in this transaction
	isNew   bool  // not stored yet
}

// errBadState reports a stored session state that does not parse (written
// by a newer program, or damaged): it cannot seal or open anything.
var errBadState = errors.New("chat: a stored session state does not parse")

// loadSessionRow scans one row of (id, state, updated_at). A state that
// does not parse is returned with errBadState (and row's peer and id).
func loadSessionRow(peer kez.PublicKey, r scanner) (*sessRow, error) {
	var id, state []byte
	row := &sessRow{peer: peer}
	if err := r.Scan(&id, &state, &row.updated); err != nil {
		return nil, err
	}
	copy(row.id[:], id)
	s, err := session.ParseSession(state)
	if err != nil || len(id) != len(row.id) {
		return row, fmt.Errorf("%w: the session %x with %s: %w", errBadState, id, peer, err)
	}
	row.s = s
	return row, nil
}

// loadOrDrop runs load until it gives a session that parses, or none: a
// stored state that does not parse is deleted in tx (and logged), as if
// the session were lost. Its peer's messages in it are then undecryptable,
// which starts a new session.
func (s *store) loadOrDrop(tx *sql.Tx, load func() (*sessRow, error)) (*sessRow, error) {
	for {
		row, err := load()
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil, nil
		case errors.Is(err, errBadState):
			if _, derr := tx.Exec(`DELETE FROM sessions WHERE peer = ? AND id = ?`, row.peer.String(), row.id[:]); derr != nil {
				return nil, fmt.Errorf("chat: database: %w", derr)
			}
			if s.log != nil {
				s.log.Warn("deleted a session whose stored state does not parse", "err", err)
			}
			continue
		}
		return row, err
	}
}

// sessionByID returns the session (peer, id), or nil.
func (s *store) sessionByID(tx *sql.Tx, peer kez.PublicKey, id [16]byte) (*sessRow, error) {
	return s.loadOrDrop(tx, func() (*sessRow, error) {
		return loadSessionRow(peer, tx.Stmt(s.stmts.sessByID).QueryRow(peer.String(), id[:]))
	})
}

// sendingSession returns the session to seal the next message to peer
// with: the newest established one, else the newest this client started
// (docs/spec/chat.md §7), or nil if there is none.
func (s *store) sendingSession(tx *sql.Tx, peer kez.PublicKey) (*sessRow, error) {
	return s.loadOrDrop(tx, func() (*sessRow, error) {
		return loadSessionRow(peer, tx.Stmt(s.stmts.sessSending).QueryRow(peer.String()))
	})
}

// maxSessionsPerPeer bounds the sessions kept with one peer: a new one
// beyond it replaces the one a message of theirs was opened in longest
// ago (a peer, or a stranger, cannot grow chat.db by opening sessions).
const maxSessionsPerPeer = 8

// pruneSessions deletes peer's sessions beyond maxSessionsPerPeer, oldest
// (by updated_at) first, in tx.
func (s *store) pruneSessions(tx *sql.Tx, peer kez.PublicKey) error {
	_, err := tx.Exec(`DELETE FROM sessions WHERE peer = ? AND id NOT IN
		(SELECT id FROM sessions WHERE peer = ? ORDER BY updated_at DESC, rowid DESC LIMIT ?)`,
		peer.String(), peer.String(), maxSessionsPerPeer)
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	return nil
}

// saveSession stores row's state. A session a message was opened under
// becomes the newest of its peer: its updated_at is now, or one more
// than the newest other session's if that is later (clocks in two
// processes, or two messages within a millisecond).
func (s *store) saveSession(tx *sql.Tx, row *sessRow, now time.Time) error {
	state, err := row.s.MarshalBinary()
	if err != nil {
		return fmt.Errorf("chat: the session with %s: %w", row.peer, err)
	}
	if row.opened {
		var newest int64
		if err := tx.Stmt(s.stmts.sessNewest).QueryRow(row.peer.String(), row.id[:]).Scan(&newest); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		row.updated = max(now.UnixMilli(), newest+1)
	}
	if _, err := tx.Stmt(s.stmts.sessPut).Exec(row.peer.String(), row.id[:], state, row.updated, boolInt(row.s.Established())); err != nil {
		return fmt.Errorf("chat: storing the session with %s: %w", row.peer, err)
	}
	if row.isNew {
		if err := s.pruneSessions(tx, row.peer); err != nil {
			return err
		}
	}
	row.dirty, row.isNew = false, false
	return nil
}

// establishedWith reports whether a session with peer is established.
func (s *store) establishedWith(tx *sql.Tx, peer kez.PublicKey) (bool, error) {
	var n int
	if err := tx.Stmt(s.stmts.sessEstablished).QueryRow(peer.String()).Scan(&n); err != nil {
		return false, fmt.Errorf("chat: database: %w", err)
	}
	return n != 0, nil
}

// hasSession reports, outside any transaction, whether a session with
// peer is stored: a send to a peer with none fetches their prekey first.
func (s *store) hasSession(ctx context.Context, peer kez.PublicKey) (bool, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM sessions WHERE peer = ?)`, peer.String()).Scan(&n); err != nil {
		return false, fmt.Errorf("chat: database: %w", err)
	}
	return n != 0, nil
}

// target is the device a message is sealed to: the device key (rcpt.Key),
// what sealing v1 needs (for a person's primary device that publishes no
// prekey yet), its person, and where its prekey is.
type target struct {
	rcpt    Recipient
	person  kez.PublicKey // the device's person (rcpt.Key for a primary device)
	handle  string        // the contact's handle, or "" for a key that is no contact
	sigBase string        // the contact's sig-server; "" the user's own
	// chain: the person's current devices as the chain the copy is
	// sealed with lists them (nil: unknown); sent with the copy as its
	// digest, the Kez-Devices header (send_stale.go).
	chain []kez.PublicKey
}

func (t target) key() kez.PublicKey { return t.rcpt.Key }

// sealPlan is how the next message to a peer is sealed, settled before
// the transaction that seals it (finding a prekey asks a server).
type sealPlan struct {
	prekey *session.Prekey // start a session with this prekey, unless one exists (or fresh)
	fresh  bool            // start a new session even if one exists (a reset)
	v1     []byte          // the peer publishes no prekey: this format v1 envelope
}

// errNoSession: the session a plan counted on is gone (it is never
// deleted while the client runs: only a wiped state folder loses one).
var errNoSession = errors.New("chat: no session with the recipient")

// planSeal settles how m is sealed to t: in an existing session (the
// plan is empty), in a new one with the peer's verified prekey, or, for a
// peer with no session and no prekey published (a client of an earlier
// release), as a format v1 envelope. fresh asks for a new session even
// if one exists; it fails for a peer with no prekey.
func (c *Client) planSeal(ctx context.Context, t target, m *Message, fresh bool) (*sealPlan, error) {
	if !fresh {
		ok, err := c.db.hasSession(ctx, t.key())
		if err != nil {
			return nil, err
		}
		if ok {
			return &sealPlan{}, nil
		}
	}
	pk, err := c.peerPrekey(ctx, t)
	if err != nil {
		return nil, err
	}
	if pk != nil {
		return &sealPlan{prekey: pk, fresh: fresh}, nil
	}
	if fresh || !c.mayV1(t) {
		return nil, fmt.Errorf("chat: starting a session with %s: %w", t.key(), ErrNoPrekey)
	}
	v1 := *m
	v1.From, v1.To = c.me, t.key()
	env, err := Seal(c.id, t.rcpt, v1)
	if err != nil {
		return nil, err
	}
	return &sealPlan{v1: env}, nil
}

// mayV1 reports whether a message to t may be sealed as format 1: only
// between two persons' primary devices (the format names persons' keys
// and seals to the chain's encryption key).
func (c *Client) mayV1(t target) bool {
	return c.id != nil && c.devKey == c.me && t.key() == t.person && t.rcpt.EncryptionKey != nil
}

// ErrNoPrekey reports a peer whose sig-server holds no prekey: a session
// cannot be started with them (their client is of an earlier release, or
// has never run).
var ErrNoPrekey = errors.New("chat: the peer publishes no prekey")

// sealTx seals m to t as plan says, inside tx: the state the sealing
// leaves is stored in tx, before anything is published.
func (c *Client) sealTx(tx *sql.Tx, t target, plan *sealPlan, m *Message) ([]byte, error) {
	now := c.now()
	if !plan.fresh {
		row, err := c.db.sendingSession(tx, t.key())
		if err != nil {
			return nil, err
		}
		if row != nil {
			return c.sealIn(tx, row, m, now)
		}
	}
	if plan.prekey == nil {
		if plan.v1 != nil {
			return plan.v1, nil
		}
		return nil, errNoSession
	}
	s, err := session.Initiate(rand.Reader, c.dev, plan.prekey, now)
	if err != nil {
		return nil, fmt.Errorf("chat: starting a session with %s: %w", t.key(), err)
	}
	return c.sealIn(tx, &sessRow{peer: t.key(), id: s.ID(), s: s, updated: now.UnixMilli(), isNew: true}, m, now)
}

// sealIn seals m in row's session and stores the state it leaves.
func (c *Client) sealIn(tx *sql.Tx, row *sessRow, m *Message, now time.Time) ([]byte, error) {
	env, err := row.s.Seal(rand.Reader, marshalInnerV2(m))
	if err != nil {
		return nil, fmt.Errorf("chat: sealing message %s: %w", m.ID, sessionError(err))
	}
	if err := c.db.saveSession(tx, row, now); err != nil {
		return nil, err
	}
	return env, nil
}

// noPrekeyFor is how long a peer whose sig-server had no prekey is sent
// v1 envelopes before it is asked again.
func (c *Client) noPrekeyFor() time.Duration { return max(c.cfg.RefreshInterval, 0) }

// peerPrekeys remembers the peers whose sig-server had no prekey, and
// shares one fetch among the sends that need the same peer's prekey at
// once (a burst of sends to a new peer asks their sig-server once).
type peerPrekeys struct {
	mu       sync.Mutex
	none     map[kez.PublicKey]time.Time
	inflight map[kez.PublicKey]*prekeyFetch
}

type prekeyFetch struct {
	done chan struct{}
	pk   *session.Prekey
	err  error
}

// peerPrekey fetches t's current prekey from their sig-server, verified
// to be signed by t's key (the pinned key, for a contact) and not
// expired; nil when the sig-server has none.
func (c *Client) peerPrekey(ctx context.Context, t target) (*session.Prekey, error) {
	key := t.key()
	pp := &c.peerPrekeys
	pp.mu.Lock()
	if at, none := pp.none[key]; none && c.now().Sub(at) < c.noPrekeyFor() {
		pp.mu.Unlock()
		return nil, nil
	}
	if f, ok := pp.inflight[key]; ok {
		pp.mu.Unlock()
		select {
		case <-f.done:
			return f.pk, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f := &prekeyFetch{done: make(chan struct{})}
	if pp.inflight == nil {
		pp.inflight = map[kez.PublicKey]*prekeyFetch{}
	}
	pp.inflight[key] = f
	pp.mu.Unlock()

	f.pk, f.err = c.fetchPrekey(ctx, t)
	pp.mu.Lock()
	delete(pp.inflight, key)
	if f.err == nil && f.pk == nil {
		if pp.none == nil || len(pp.none) >= maxKeyChains {
			pp.none = map[kez.PublicKey]time.Time{}
		}
		pp.none[key] = c.now()
	} else if f.err == nil {
		delete(pp.none, key)
	}
	pp.mu.Unlock()
	close(f.done)
	return f.pk, f.err
}

// fetchPrekey asks t's sig-server for their prekey; nil if it has none.
func (c *Client) fetchPrekey(ctx context.Context, t target) (*session.Prekey, error) {
	key := t.key()
	sc, err := c.sigClient(domainOf(t.handle), t.sigBase)
	if err != nil {
		return nil, fmt.Errorf("chat: the sig-server of %s: %w", key, err)
	}
	fctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	pk, err := sc.FetchPrekey(fctx, key)
	cancel()
	// ErrNotFound: a sig-server of an earlier release, without prekeys.
	none := errors.Is(err, sigchain.ErrNoPrekey) || errors.Is(err, sigchain.ErrNotFound)
	if none || errors.Is(err, sigchain.ErrUnreachable) {
		// The last record fetched, if it is still valid: sending to a
		// pinned contact never needed their sig-server, and a sig-server
		// that withholds a record it served cannot make this client
		// send format v1.
		if cached, cerr := c.db.peerPrekey(ctx, key, c.now()); cerr == nil && cached != nil {
			return cached, nil
		}
	}
	if none {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chat: fetching the prekey of %s: %w", key, err)
	}
	if pk.Owner != key {
		return nil, fmt.Errorf("chat: fetching the prekey of %s: %w: it is signed by %s", key, session.ErrPrekeyOwner, pk.Owner)
	}
	// No rollback: a record older than one kept (still valid) loses to it.
	if kept, kerr := c.db.peerPrekey(ctx, key, c.now()); kerr == nil && kept != nil && kept.Created.After(pk.Created) {
		return kept, nil
	}
	if err := c.db.savePeerPrekey(ctx, pk, c.now()); err != nil {
		c.log.Debug("cannot keep a peer's prekey", "peer", key, "err", err)
	}
	return pk, nil
}

// batchSessions are the sessions one receiving transaction touched: a
// session is loaded once per transaction and stored once at its end.
type batchSessions struct {
	rows  map[sessKey]*sessRow
	order []*sessRow
	// reset: peers that started a new session while one with them was
	// established (they lost theirs): what was sent to them without a
	// receipt is sent again once the transaction committed.
	reset map[kez.PublicKey]bool
	// stored: whether a stored session with a peer is established, read
	// once per transaction (the rows above are only stored at its end).
	stored map[kez.PublicKey]bool
}

type sessKey struct {
	peer kez.PublicKey
	id   [16]byte
}

func newBatchSessions() *batchSessions {
	return &batchSessions{rows: map[sessKey]*sessRow{}, reset: map[kez.PublicKey]bool{}, stored: map[kez.PublicKey]bool{}}
}

func (bs *batchSessions) get(tx *sql.Tx, db *store, peer kez.PublicKey, id [16]byte) (*sessRow, error) {
	k := sessKey{peer, id}
	if row, ok := bs.rows[k]; ok {
		return row, nil
	}
	row, err := db.sessionByID(tx, peer, id)
	delete(bs.stored, peer) // loading may have dropped a state that does not parse
	if err != nil || row == nil {
		return nil, err
	}
	bs.add(row)
	return row, nil
}

func (bs *batchSessions) add(row *sessRow) {
	bs.rows[sessKey{row.peer, row.id}] = row
	bs.order = append(bs.order, row)
}

// established reports whether a session with peer is established, as of
// this transaction.
func (bs *batchSessions) established(tx *sql.Tx, db *store, peer kez.PublicKey) (bool, error) {
	for _, row := range bs.order {
		if row.peer == peer && row.s.Established() {
			return true, nil
		}
	}
	if ok, seen := bs.stored[peer]; seen {
		return ok, nil
	}
	ok, err := db.establishedWith(tx, peer)
	if err == nil {
		bs.stored[peer] = ok
	}
	return ok, err
}

// save stores every session whose state changed.
func (bs *batchSessions) save(tx *sql.Tx, db *store, now time.Time) error {
	for _, row := range bs.order {
		if row.dirty {
			if err := db.saveSession(tx, row, now); err != nil {
				return err
			}
		}
	}
	return nil
}

// openV2 opens a session envelope that came from `from` (the subject's
// sender), inside the receiving transaction: in the session it names, or,
// for the handshake of a session this client does not know, by accepting
// it with one of this device's prekeys. Errors wrap this package's
// sentinels (and package session's): ErrUnknownSession for a session or
// prekey this client does not have, ErrReplay for a message key already
// used.
func (c *Client) openV2(tx *sql.Tx, bs *batchSessions, data []byte, from kez.PublicKey, now time.Time) (*Message, error) {
	h, err := session.ParseHeader(data)
	if err != nil {
		return nil, sessionError(err)
	}
	if h.Recipient != c.devKey {
		return nil, fmt.Errorf("%w: it is for %s, not %s", ErrNotForMe, h.Recipient, c.devKey)
	}
	if h.Sender != from {
		return nil, fmt.Errorf("%w: the envelope says it is from %s, but it came from %s", ErrSenderMismatch, h.Sender, from)
	}
	row, err := bs.get(tx, c.db, from, h.SessionID)
	if err != nil {
		return nil, err
	}
	var pt []byte
	switch {
	case row != nil:
		if pt, err = row.s.Open(data, now); err != nil {
			return nil, sessionError(err)
		}
	case h.Type == session.TypeHandshake:
		had, err := bs.established(tx, c.db, from)
		if err != nil {
			return nil, err
		}
		var s *session.Session
		var dbErr error
		s, pt, err = session.Accept(c.dev, data, func(id uint32) (*session.PrekeyPrivate, bool) {
			k, ok, err := c.db.prekey(tx, id)
			if err != nil {
				dbErr = err
			}
			return k, ok
		}, now)
		if dbErr != nil {
			return nil, dbErr
		}
		if err != nil {
			return nil, sessionError(err)
		}
		row = &sessRow{peer: from, id: s.ID(), s: s, isNew: true}
		bs.add(row)
		if had {
			bs.reset[from] = true
		}
	default:
		return nil, fmt.Errorf("%w: session %x with %s", ErrUnknownSession, h.SessionID, from)
	}
	row.opened, row.dirty = true, true
	// The session authenticated it: its key is used up even if it does
	// not parse.
	return parseInnerV2(pt, h.Sender, h.Recipient)
}
