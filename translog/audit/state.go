package audit

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/internal/sqlitedb"
)

// migrations is the state file's schema, one entry a version
// (sqlitedb.Migrate): append a migration, never edit one.
var migrations = []string{`
CREATE TABLE logs (
	server     TEXT PRIMARY KEY, -- the sig-server's base URL, no trailing /
	origin     TEXT NOT NULL,    -- the pinned log's origin
	vkey       TEXT NOT NULL,    -- the pinned note verifier key
	size       INTEGER NOT NULL, -- entries audited: [0, size)
	root       BLOB NOT NULL,    -- their Merkle tree hash (empty while size is 0)
	range      BLOB NOT NULL,    -- their compact range: its hashes, 32 bytes each, left to right
	checkpoint BLOB NOT NULL     -- the newest checkpoint audited in full (empty: none)
);
CREATE TABLE entries (
	server TEXT NOT NULL REFERENCES logs(server) ON DELETE CASCADE,
	key    TEXT NOT NULL,    -- the chain's key
	seqno  INTEGER NOT NULL,
	id     TEXT NOT NULL,    -- the first link ID logged at that seqno
	idx    INTEGER NOT NULL, -- its index in the log
	PRIMARY KEY (server, key, seqno)
) WITHOUT ROWID;
CREATE TABLE pending ( -- chains with new entries, not yet compared with the chain endpoint
	server TEXT NOT NULL REFERENCES logs(server) ON DELETE CASCADE,
	key    TEXT NOT NULL,
	PRIMARY KEY (server, key)
) WITHOUT ROWID;
`}

// logState is what the state file holds of one server's log.
type logState struct {
	origin, vkey string
	size         uint64
	root         []byte
	hashes       [][]byte // the compact range of [0, size)
	checkpoint   []byte
}

// state is the audit's SQLite file.
type state struct{ db *sql.DB }

func openState(path string) (*state, error) {
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if err := sqlitedb.Migrate(db, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	return &state{db: db}, nil
}

func (s *state) close() error { return s.db.Close() }

// load returns the state of server's log, false if it has none.
func (s *state) load(ctx context.Context, server string) (*logState, bool, error) {
	var ls logState
	var rng []byte
	err := s.db.QueryRowContext(ctx, `SELECT origin, vkey, size, root, range, checkpoint FROM logs WHERE server = ?`, server).
		Scan(&ls.origin, &ls.vkey, &ls.size, &ls.root, &rng, &ls.checkpoint)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("audit: state file: %w", err)
	}
	if len(rng)%32 != 0 || (ls.size > 0) != (len(ls.root) == 32) {
		return nil, false, fmt.Errorf("audit: state file: %w", errDamaged)
	}
	for i := 0; i < len(rng); i += 32 {
		ls.hashes = append(ls.hashes, rng[i:i+32])
	}
	return &ls, true, nil
}

var errDamaged = errors.New("the saved state of the log is damaged")

// pin records server's log, audited up to size 0.
func (s *state) pin(ctx context.Context, server, origin, vkey string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO logs (server, origin, vkey, size, root, range, checkpoint) VALUES (?, ?, ?, 0, x'', x'', x'')`, server, origin, vkey)
	if err != nil {
		return fmt.Errorf("audit: state file: %w", err)
	}
	return nil
}

// batch is one transaction: the entries of a batch of bundles and the log
// state after them.
type batch struct {
	tx                                *sql.Tx
	server                            string
	maxSeqno, idAt, insert, del, mark *sql.Stmt
}

func (s *state) begin(ctx context.Context, server string) (*batch, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	b := &batch{tx: tx, server: server}
	for _, p := range []struct {
		st **sql.Stmt
		q  string
	}{
		{&b.maxSeqno, `SELECT COALESCE(MAX(seqno), 0) FROM entries WHERE server = ? AND key = ?`},
		{&b.idAt, `SELECT id, idx FROM entries WHERE server = ? AND key = ? AND seqno = ?`},
		{&b.insert, `INSERT INTO entries (server, key, seqno, id, idx) VALUES (?, ?, ?, ?, ?)`},
		{&b.del, `DELETE FROM entries WHERE server = ? AND key = ?`},
		{&b.mark, `INSERT OR IGNORE INTO pending (server, key) VALUES (?, ?)`},
	} {
		if *p.st, err = tx.PrepareContext(ctx, p.q); err != nil {
			tx.Rollback()
			return nil, fmt.Errorf("audit: state file: %w", err)
		}
	}
	return b, nil
}

func (b *batch) rollback() { b.tx.Rollback() }

// commit records the log's new state and commits the batch.
func (b *batch) commit(ctx context.Context, ls *logState) error {
	var rng []byte
	for _, h := range ls.hashes {
		rng = append(rng, h...)
	}
	_, err := b.tx.ExecContext(ctx, `UPDATE logs SET size = ?, root = ?, range = ?, checkpoint = ? WHERE server = ?`,
		ls.size, nonNil(ls.root), nonNil(rng), nonNil(ls.checkpoint), b.server)
	if err == nil {
		err = b.tx.Commit()
	}
	if err != nil {
		b.tx.Rollback()
		return fmt.Errorf("audit: state file: %w", err)
	}
	return nil
}

// logged is one entry of a key's logged history.
type logged struct {
	seqno, idx uint64
	id         string
}

// history returns the logged history of key, by seqno.
func (s *state) history(ctx context.Context, server, key string) ([]logged, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seqno, id, idx FROM entries WHERE server = ? AND key = ? ORDER BY seqno`, server, key)
	if err != nil {
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	defer rows.Close()
	var out []logged
	for rows.Next() {
		var l logged
		if err := rows.Scan(&l.seqno, &l.id, &l.idx); err != nil {
			return nil, fmt.Errorf("audit: state file: %w", err)
		}
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	return out, nil
}

// pending returns the keys whose chains are still to be compared.
func (s *state) pending(ctx context.Context, server string) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key FROM pending WHERE server = ? ORDER BY key`, server)
	if err != nil {
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("audit: state file: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	return out, nil
}

// done records that key's chain was compared.
func (s *state) done(ctx context.Context, server, key string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM pending WHERE server = ? AND key = ?`, server, key); err != nil {
		return fmt.Errorf("audit: state file: %w", err)
	}
	return nil
}

// nonNil returns b, or an empty slice for nil (SQLite stores nil as NULL).
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
