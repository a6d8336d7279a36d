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
