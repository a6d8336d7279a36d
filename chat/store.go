package chat

// The client's local database: one SQLite file (chat.db in the client's
// state folder) holding the message history, the contacts with their pinned
// chains, and a little metadata. All writes go through one goroutine that
// commits whatever is queued in a single transaction (group commit), so a
// burst of sends or a fetched batch of messages costs one commit, and
// writers in this process never contend for SQLite's lock.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/internal/sqlitedb"
)

// DBFileName is the name of the client's database inside its state folder.
const DBFileName = "chat.db"

// schemaVersion is kept in PRAGMA user_version: len(migrations).
// migrations[i] brings a database from version i to i+1 (see
// sqlitedb.Migrate).
const schemaVersion = 13

var migrations = []string{
	// 0 → 1
	`
CREATE TABLE messages (
	id           BLOB    NOT NULL,            -- MessageID, 16 bytes
	from_key     TEXT    NOT NULL,            -- sender's key, U…
	to_key       TEXT    NOT NULL,            -- recipient's key, U…
	peer_key     TEXT    NOT NULL,            -- the other party of the conversation
	peer_handle  TEXT    NOT NULL DEFAULT '', -- contact's handle, or the handle a request's chain claims
	incoming     INTEGER NOT NULL,            -- 1 received, 0 sent
	sent_at      INTEGER NOT NULL,            -- sender's clock, Unix ms (signed)
	received_at  INTEGER NOT NULL,            -- this client's clock, Unix ms: stored
	kind         TEXT    NOT NULL,
	ref          BLOB,                        -- MessageID or NULL
	body         BLOB    NOT NULL,
	stream_seq   INTEGER NOT NULL DEFAULT 0,  -- JetStream sequence (delivery or publish ack)
	trust        TEXT    NOT NULL,            -- trusted | held | request
	state        TEXT    NOT NULL DEFAULT '', -- sent messages: sent | failed
	read         INTEGER NOT NULL DEFAULT 0,  -- shown to the user (inbox) or own message
	delivered_at INTEGER,                     -- sent messages: the receipt's signed time, Unix ms
	PRIMARY KEY (from_key, id)
) STRICT;
CREATE INDEX messages_conversation ON messages (peer_key, sent_at, stream_seq);
CREATE INDEX messages_unread ON messages (trust, sent_at, stream_seq) WHERE read = 0;

CREATE TABLE contacts (
	handle       TEXT    PRIMARY KEY,         -- canonical, alice@kez.lat
	key          TEXT    NOT NULL UNIQUE,     -- pinned primary key, U…
	enc_key      BLOB    NOT NULL,            -- X25519 key from the pinned chain
	generation   INTEGER NOT NULL,
	sig_server   TEXT    NOT NULL,            -- base URL the chain is fetched from
	pin_seqno    INTEGER NOT NULL,
	pin_head     TEXT    NOT NULL,            -- link ID (CID) at pin_seqno
	added_at     INTEGER NOT NULL,
	refreshed_at INTEGER NOT NULL,
	verified_at  INTEGER,                     -- fingerprint compared out of band
	flag         TEXT    NOT NULL DEFAULT '', -- '' | key_changed | chain_rewritten
	flag_detail  TEXT    NOT NULL DEFAULT '',
	flag_key     TEXT    NOT NULL DEFAULT '', -- key_changed: the key the handle now names
	flagged_at   INTEGER
) STRICT;

-- The pinned chain of each contact, link by link (exact canonical bytes),
-- so the verified state can be rebuilt and extended without trusting the
-- server for the part already seen.
CREATE TABLE chain_links (
	key   TEXT    NOT NULL,
	seqno INTEGER NOT NULL,
	link  BLOB    NOT NULL,
	PRIMARY KEY (key, seqno)
) STRICT, WITHOUT ROWID;

-- What happened to a contact's pin: added, encryption key rotated, flagged,
-- accepted, verified.
CREATE TABLE contact_events (
	handle TEXT    NOT NULL,
	at     INTEGER NOT NULL,
	event  TEXT    NOT NULL,
	detail TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX contact_events_handle ON contact_events (handle, at);

CREATE TABLE meta (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
) STRICT;
`,
	// 1 → 2: message requests are counted against their caps in every
	// received batch that holds one.
	`CREATE INDEX messages_requests ON messages (from_key) WHERE trust = 'request';`,
	// 2 → 3: sessions (format v2, docs/spec/chat.md §6). A sent message is
	// stored with its sealed envelope before it is published, in the
	// transaction that stores the session state its sealing produced.
	`
ALTER TABLE messages ADD COLUMN envelope BLOB;                    -- sent, not yet acknowledged by the stream: the exact bytes published
ALTER TABLE messages ADD COLUMN resends INTEGER NOT NULL DEFAULT 0; -- times sealed again under a newer session (after the recipient's reset)
CREATE INDEX messages_pending ON messages (to_key) WHERE incoming = 0 AND state = 'pending';

-- One Double Ratchet session with one peer (package session), its state
-- serialised. updated_at: Unix ms of the last message opened from the peer
-- under it, or of its creation; the newest established session is the one
-- used for sending.
CREATE TABLE sessions (
	peer        TEXT    NOT NULL,
	id          BLOB    NOT NULL,  -- session ID, 16 bytes
	state       BLOB    NOT NULL,
	updated_at  INTEGER NOT NULL,
	established INTEGER NOT NULL,  -- 1 once a message from the peer was opened under it
	PRIMARY KEY (peer, id)
) STRICT;

-- This device's prekeys (private halves, never leave the device).
CREATE TABLE prekeys (
	id      INTEGER PRIMARY KEY,  -- prekey ID
	private BLOB    NOT NULL,
	created INTEGER NOT NULL,     -- Unix ms
	expires INTEGER NOT NULL      -- Unix ms
) STRICT;

-- Messages that could not be decrypted (no session: this device lost its
-- state), per sender, and whether a new session to them is still due.
CREATE TABLE undecryptable (
	peer      TEXT    PRIMARY KEY,
	count     INTEGER NOT NULL,
	last_at   INTEGER NOT NULL,
	reset_due INTEGER NOT NULL
) STRICT;

-- Peers that started a new session while one with them was established
-- (they lost theirs): what was sent to them without a receipt is due to
-- be sent again.
CREATE TABLE resend_due (
	peer TEXT    PRIMARY KEY,
	at   INTEGER NOT NULL
) STRICT;
`,
	// 3 → 4: the last prekey record fetched for each peer (verified when
	// fetched), so that a session can start while the peer's sig-server is
	// unreachable, as sending to a pinned contact never needed it.
	`
CREATE TABLE peer_prekeys (
	peer       TEXT    PRIMARY KEY,
	record     BLOB    NOT NULL,
	fetched_at INTEGER NOT NULL
) STRICT;
`,
	// 4 → 5: devices (docs/spec/chat.md §8). A message is sealed to each
	// device of its recipient, and a sent copy to each of the user's
	// other devices: every envelope sealed and not yet acknowledged by
	// the stream waits in the outbox (the pending envelopes of the
	// messages table move there). The devices of each contact's pinned
	// chain; the sync-contact messages not yet applied.
	`
CREATE TABLE outbox (
	msg_id     BLOB    NOT NULL,  -- the message ID (of a history message, or of a message not kept: a sync message)
	device     TEXT    NOT NULL,  -- the device it is sealed to: the send subject's recipient
	envelope   BLOB    NOT NULL,  -- the exact bytes to publish
	publish_id TEXT    NOT NULL,  -- its Nats-Msg-Id
	counts     INTEGER NOT NULL,  -- 1: a copy to the message's recipient, whose outcome is the message's
	created_at INTEGER NOT NULL,  -- Unix ms
	PRIMARY KEY (msg_id, device)
) STRICT;
INSERT INTO outbox (msg_id, device, envelope, publish_id, counts, created_at)
	SELECT id, to_key, envelope, lower(hex(id)) || CASE WHEN resends > 0 THEN '.' || resends ELSE '' END, 1, received_at
	FROM messages WHERE incoming = 0 AND state = 'pending' AND envelope IS NOT NULL;
UPDATE messages SET envelope = NULL WHERE envelope IS NOT NULL;

CREATE TABLE contact_devices (
	person         TEXT    NOT NULL,  -- the contact's primary key
	device         TEXT    NOT NULL,
	name           TEXT    NOT NULL,
	primary_device INTEGER NOT NULL,
	added_seqno    INTEGER NOT NULL,
	revoked        INTEGER NOT NULL,
	PRIMARY KEY (person, device)
) STRICT;

CREATE TABLE contact_sync (
	id   INTEGER PRIMARY KEY,
	body BLOB    NOT NULL,  -- a sync-contact body from one of the user's devices
	at   INTEGER NOT NULL
) STRICT;
`,
	// 5 → 6: the person's encryption keys on every device
	// (docs/spec/chat.md §8.6): those this device received, the
	// sync-keys bodies waiting for a fresher chain, and (on an install
	// holding the primary key) the generation sent to each device.
	`
CREATE TABLE encryption_keys (
	generation  INTEGER PRIMARY KEY,
	private     BLOB    NOT NULL,  -- X25519 private key, 32 bytes
	public      BLOB    NOT NULL,  -- its public key, as the chain published it
	from_device TEXT    NOT NULL,  -- the device that sent it
	received_at INTEGER NOT NULL   -- Unix ms
) STRICT;

CREATE TABLE keys_sync (
	id     INTEGER PRIMARY KEY,
	device TEXT    NOT NULL,
	body   BLOB    NOT NULL,  -- a sync-keys body naming a generation newer than the chain known
	at     INTEGER NOT NULL
) STRICT;

CREATE TABLE keys_sent (
	device     TEXT    PRIMARY KEY,
	generation INTEGER NOT NULL,  -- the highest generation sent to it
	at         INTEGER NOT NULL
) STRICT;
`,
	// 6 → 7: copies due (docs/spec/chat.md §8.1): a copy of a message in
	// the history that could not be sealed to one of the devices it was
	// for (its prekey could not be fetched), recorded in the transaction
	// that stores the message, and sealed from the history once it can be.
	`
CREATE TABLE copies_due (
	msg_id     BLOB    NOT NULL,  -- the message ID (a message this user sent: from_key is the user's)
	device     TEXT    NOT NULL,  -- the device the copy is for
	person     TEXT    NOT NULL,  -- that device's person (the user's own key: a sent copy)
	counts     INTEGER NOT NULL,  -- 1: a copy to the message's recipient, whose outcome is the message's
	created_at INTEGER NOT NULL,  -- Unix ms
	attempts   INTEGER NOT NULL,  -- the device's prekey was fetched this many times in vain
	next_at    INTEGER NOT NULL,  -- Unix ms: when it is tried again
	PRIMARY KEY (msg_id, device)
) STRICT;
CREATE INDEX copies_due_device ON copies_due (device, created_at);
CREATE INDEX copies_due_person ON copies_due (person, created_at);
`,
	// 7 → 8: the user's own chain, pinned (docs/spec/chat.md §8.7): the
	// newest state of it this install verified or appended, link by link
	// (exact canonical bytes), which every later fetch must extend.
	`
CREATE TABLE own_chain_links (
	seqno INTEGER PRIMARY KEY,
	link  BLOB    NOT NULL
) STRICT;
`,
	// 8 → 9: groups (docs/spec/chat.md §10): the pinned membership
	// chains, this device's sender keys and where they went, the
	// receiving keys, envelopes waiting for a key, group sends not yet
	// answered and read receipts.
	`
ALTER TABLE messages ADD COLUMN grp TEXT NOT NULL DEFAULT ''; -- a group message: the group's name
CREATE INDEX messages_group ON messages (grp, sent_at, stream_seq) WHERE grp != '';

CREATE TABLE groups (
	name         TEXT    PRIMARY KEY,         -- name@domain
	gid          BLOB    NOT NULL UNIQUE,     -- 32 bytes
	sig_server   TEXT    NOT NULL,
	left_at      INTEGER,                     -- Unix ms: the user was removed or left
	broken       TEXT    NOT NULL DEFAULT '', -- a fork: both heads
	refreshed_at INTEGER NOT NULL,
	joined_at    INTEGER NOT NULL
) STRICT;

CREATE TABLE group_links (
	name  TEXT    NOT NULL,
	seqno INTEGER NOT NULL,
	link  BLOB    NOT NULL,
	PRIMARY KEY (name, seqno)
) STRICT, WITHOUT ROWID;

CREATE TABLE group_events (
	name   TEXT    NOT NULL,
	at     INTEGER NOT NULL,
	seqno  INTEGER NOT NULL,
	event  TEXT    NOT NULL,
	detail TEXT    NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX group_events_name ON group_events (name, at);

CREATE TABLE group_skeys (
	gid     BLOB    NOT NULL,
	epoch   INTEGER NOT NULL,
	state   BLOB    NOT NULL,  -- session.SenderKey, stored form
	created INTEGER NOT NULL,
	PRIMARY KEY (gid, epoch)
) STRICT;

CREATE TABLE group_skey_sent (
	gid    BLOB    NOT NULL,
	epoch  INTEGER NOT NULL,
	device TEXT    NOT NULL,
	PRIMARY KEY (gid, epoch, device)
) STRICT, WITHOUT ROWID;

CREATE TABLE group_rkeys (
	gid      BLOB    NOT NULL,
	epoch    INTEGER NOT NULL,
	device   TEXT    NOT NULL,
	person   TEXT    NOT NULL,
	signing  BLOB    NOT NULL,  -- the sender key's signing key
	state    BLOB    NOT NULL,  -- session.ReceiverKey, stored form
	checked  INTEGER NOT NULL,  -- 0: waits for a fresher chain
	at       INTEGER NOT NULL,
	PRIMARY KEY (gid, epoch, device)
) STRICT;

CREATE TABLE group_held (
	id       INTEGER PRIMARY KEY,
	gid      BLOB    NOT NULL,
	epoch    INTEGER NOT NULL,
	device   TEXT    NOT NULL,
	person   TEXT    NOT NULL,
	envelope BLOB    NOT NULL,
	seq      INTEGER NOT NULL,
	at       INTEGER NOT NULL
) STRICT;
CREATE INDEX group_held_key ON group_held (gid, epoch, device);

CREATE TABLE group_outbox (
	msg_id     BLOB    PRIMARY KEY,
	name       TEXT    NOT NULL,
	envelope   BLOB    NOT NULL,
	devices    TEXT    NOT NULL,  -- the recipient devices, U… separated by spaces
	created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE group_reads (
	msg_id BLOB    NOT NULL,
	reader TEXT    NOT NULL,
	at     INTEGER NOT NULL,
	PRIMARY KEY (msg_id, reader)
) STRICT, WITHOUT ROWID;
`,
	// 9 → 10: groups that scale (docs/spec/chat.md §10.3, §10.5): the
	// envelopes of a pairwise message to many devices (a group key, a
	// group-update) published with one multi-recipient send wait in the
	// outbox marked multi, and each group-update received waits in
	// group_updates until the client acted on it.
	`
ALTER TABLE outbox ADD COLUMN multi INTEGER NOT NULL DEFAULT 0; -- 1: published with a multi-recipient send, a payload per recipient; publish_id is <msg id>-<device>

CREATE TABLE group_updates (
	name TEXT    PRIMARY KEY,  -- the group, name@domain
	body BLOB    NOT NULL,     -- the last group-update body received for it
	at   INTEGER NOT NULL      -- Unix ms: received
) STRICT;
`,
	// 10 → 11: group invitations (docs/spec/chat.md §10.9): who added the
	// user to a group it has not accepted yet.
	`
ALTER TABLE groups ADD COLUMN invited_by TEXT NOT NULL DEFAULT ''; -- U…: an invitation not accepted yet
`,
	// 11 → 12: log views (docs/spec/chat.md §11): the last one sent to
	// each contact, and the split views recorded.
	`
CREATE TABLE log_views_sent (
	peer    TEXT    PRIMARY KEY,  -- the contact's primary key, U…
	digest  BLOB    NOT NULL,     -- SHA-256 of the body last sent
	sent_at INTEGER NOT NULL      -- Unix ms
) STRICT;

CREATE TABLE split_views (
	origin  TEXT    NOT NULL,             -- the log
	ours    BLOB    NOT NULL,             -- the checkpoint this client had accepted (signed note)
	theirs  BLOB    NOT NULL,             -- the one that contradicts it
	contact TEXT    NOT NULL DEFAULT '',  -- U…: the contact whose log-view showed it; '': this client's own fetch
	handle  TEXT    NOT NULL DEFAULT '',
	at      INTEGER NOT NULL,             -- Unix ms
	reason  TEXT    NOT NULL,
	PRIMARY KEY (origin, ours, theirs)
) STRICT;
`,
	// 12 → 13: blocking and read receipts (docs/spec/chat.md §5.1, §4.1):
	// the keys the user blocked, and when a sent message was read.
	`
CREATE TABLE blocked (
	key        TEXT    PRIMARY KEY,  -- U…: a person's key (or a device's)
	blocked_at INTEGER NOT NULL      -- Unix ms
) STRICT;

ALTER TABLE messages ADD COLUMN read_at INTEGER; -- sent messages: the read receipt's signed time, Unix ms
`,
}

// ErrClosed reports a call on a [Client] after [Client.Close].
var ErrClosed = errors.New("chat: the client is closed")

// maxBatchOps bounds the write operations committed in one transaction.
const maxBatchOps = 512

// writeOp is one unit of work for the writer: fn runs inside the batch's
// transaction; done (if not nil) gets its outcome after the commit.
type writeOp struct {
	fn   func(tx *sql.Tx) error
	done func(error)
}

// store is the client's database.
type store struct {
	log    *slog.Logger // may be nil
	db     *sql.DB
	stmts  statements
	ops    chan writeOp
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.RWMutex // guards closed against sends on ops
	closed bool
}

// openStore opens (creating if needed) the database at path and migrates it
// to schemaVersion.
func openStore(path string) (*store, error) {
	// The history, the session states and the private prekeys are
	// secret: the file is made 0600 like the identity, and a file (or its
	// -wal and -shm) that others may read is made 0600 again.
	if err := privateFiles(path); err != nil {
		return nil, fmt.Errorf("chat: the database %s: %w", path, err)
	}
	db, err := sqlitedb.Open(path, sqlitedb.Options{FileMode: 0o600, SecureDelete: true})
	if err != nil {
		return nil, fmt.Errorf("chat: opening the database %s: %w", path, explainStoreError(filepath.Dir(path), err))
	}
	if err := sqlitedb.Migrate(db, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("chat: preparing the database %s: %w", path, explainStoreError(filepath.Dir(path), err))
	}
	s := &store{db: db, ops: make(chan writeOp, maxBatchOps), stop: make(chan struct{})}
	if err := s.prepare(); err != nil {
		db.Close()
		return nil, fmt.Errorf("chat: preparing the database %s: %w", path, err)
	}
	s.wg.Add(1)
	go s.writer()
	return s, nil
}

// privateFiles makes the database file at path and its -wal and -shm
// files, those that exist, readable by their owner only.
func privateFiles(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		if st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(p, st.Mode().Perm()&0o700); err != nil {
				return err
			}
		}
	}
	return nil
}

// close stops the writer after it committed everything queued, then closes
// the database.
func (s *store) close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	s.stmts.close()
	return s.db.Close()
}

// statements are the writes done once per message, prepared once (the
// database/sql pool keeps them prepared per connection).
type statements struct {
	insert    *sql.Stmt // insertEntry
	delivered *sql.Stmt // a receipt

	sessByID        *sql.Stmt // sessionByID
	sessSending     *sql.Stmt // sendingSession
	sessNewest      *sql.Stmt // saveSession
	sessPut         *sql.Stmt // saveSession
	sessEstablished *sql.Stmt // establishedWith
}

func (s *store) prepare() error {
	var err error
	prep := func(q string) *sql.Stmt {
		if err != nil {
			return nil
		}
		var st *sql.Stmt
		st, err = s.db.Prepare(q)
		return st
	}
	s.stmts = statements{
		insert:    prep(`INSERT INTO messages (` + entryColumns + `, envelope) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (from_key, id) DO NOTHING`),
		delivered: prep(`UPDATE messages SET delivered_at = ? WHERE from_key = ? AND id = ? AND to_key = ? AND incoming = 0 AND delivered_at IS NULL`),

		sessByID:    prep(`SELECT id, state, updated_at FROM sessions WHERE peer = ? AND id = ?`),
		sessSending: prep(`SELECT id, state, updated_at FROM sessions WHERE peer = ? ORDER BY established DESC, updated_at DESC, rowid DESC LIMIT 1`),
		sessNewest:  prep(`SELECT COALESCE(MAX(updated_at), 0) FROM sessions WHERE peer = ? AND id != ?`),
		sessPut: prep(`INSERT INTO sessions (peer, id, state, updated_at, established) VALUES (?,?,?,?,?)
			ON CONFLICT (peer, id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at, established = excluded.established`),
		sessEstablished: prep(`SELECT EXISTS (SELECT 1 FROM sessions WHERE peer = ? AND established = 1)`),
	}
	if err != nil {
		s.stmts.close()
	}
	return err
}

func (st *statements) close() {
	for _, s := range []*sql.Stmt{st.insert, st.delivered, st.sessByID, st.sessSending, st.sessNewest, st.sessPut, st.sessEstablished} {
		if s != nil {
			s.Close()
		}
	}
}

// writeAsync queues fn; done, if not nil, is called with the outcome once
// the transaction holding fn committed (or failed). Operations commit in the
// order they were queued.
func (s *store) writeAsync(fn func(tx *sql.Tx) error, done func(error)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		if done != nil {
			done(ErrClosed)
		}
		return
	}
	s.ops <- writeOp{fn: fn, done: done}
}

// write runs fn in a write transaction and returns once it committed. It
// does not stop waiting when ctx ends after fn was queued, since the
// transaction may still commit; ctx only bounds waiting for the queue.
func (s *store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	ch := make(chan error, 1)
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return ErrClosed
	}
	select {
	case s.ops <- writeOp{fn: fn, done: func(err error) { ch <- err }}:
	case <-ctx.Done():
		s.mu.RUnlock()
		return ctx.Err()
	}
	s.mu.RUnlock()
	return <-ch
}

// writer commits queued operations in batches until close, and scrubs
// the write-ahead log once writes pause (scrubWAL).
func (s *store) writer() {
	defer s.wg.Done()
	batch := make([]writeOp, 0, maxBatchOps)
	scrub := time.NewTimer(0)
	scrub.Stop()
	var first time.Time // the first batch not scrubbed yet, if any
	for {
		select {
		case op := <-s.ops:
			batch = append(batch, op)
		case <-scrub.C:
			if s.scrubWAL() {
				first = time.Time{}
			} else {
				// A reader holds an older snapshot: try again in a
				// while, not after every batch meanwhile.
				first = time.Now()
				scrub.Reset(scrubMax)
			}
			continue
		case <-s.stop:
			// close holds mu, so nothing more is queued: commit the rest.
			for {
				batch = s.fill(batch)
				if len(batch) == 0 {
					s.scrubWAL()
					return
				}
				s.commit(batch)
				batch = batch[:0]
			}
		}
		batch = s.fill(batch)
		s.commit(batch)
		batch = batch[:0]
		now := time.Now()
		if first.IsZero() {
			first = now
		}
		scrub.Reset(max(0, min(scrubIdle, first.Add(scrubMax).Sub(now))))
	}
}

// The write-ahead log is scrubbed once no write came for scrubIdle, and
// at least every scrubMax while writes keep coming.
const (
	scrubIdle = 100 * time.Millisecond
	scrubMax  = time.Second
)

// scrubWAL moves the write-ahead log into the database file and truncates
// it to nothing, and reports whether it could. Until then the log holds
// every page as it was before each transaction since the last
// checkpoint, and with it the session states and private prekeys that
// forward secrecy says are gone: a copy of the files would open what was
// sent before (TestWireForwardSecrecy). The database file, written with
// secure_delete, keeps no earlier version of a row. A checkpoint costs
// two fsyncs, so it waits for a pause in the writes (scrubIdle) rather
// than following each transaction, but no longer than scrubMax. It fails
// while another connection reads an older snapshot (or another process
// writes): the writer tries again.
func (s *store) scrubWAL() bool {
	var busy, frames, moved int
	err := s.db.QueryRow(`PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &frames, &moved)
	return err == nil && busy == 0
}

// fill adds queued operations to batch without waiting, up to maxBatchOps.
func (s *store) fill(batch []writeOp) []writeOp {
	for len(batch) < maxBatchOps {
		select {
		case op := <-s.ops:
			batch = append(batch, op)
		default:
			return batch
		}
	}
	return batch
}

// commit runs a batch in one transaction. If the transaction fails as a
// whole, each operation is retried in its own, so one bad operation does
// not fail the others.
func (s *store) commit(batch []writeOp) {
	if len(batch) == 0 {
		return
	}
	errs := make([]error, len(batch))
	err := s.runTx(func(tx *sql.Tx) error {
		for i, op := range batch {
			if err := op.fn(tx); err != nil {
				errs[i] = err
				return err
			}
		}
		return nil
	})
	if err != nil && len(batch) > 1 {
		for i, op := range batch {
			errs[i] = s.runTx(op.fn)
		}
	} else if err != nil {
		errs[0] = err
	}
	for i, op := range batch {
		if op.done != nil {
			op.done(errs[i])
		}
	}
}

func (s *store) runTx(fn func(tx *sql.Tx) error) error {
	tx, err := s.db.Begin()
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("chat: database commit: %w", err)
	}
	return nil
}

// getMeta returns the value of name, or "" if unset.
func (s *store) getMeta(ctx context.Context, name string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// setMeta sets name to value.
func (s *store) setMeta(ctx context.Context, name, value string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value`, name, value)
		return err
	})
}
