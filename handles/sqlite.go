package handles

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/kez"
	"modernc.org/sqlite"
)

// SQLiteStore is the embedded [Store]: one SQLite file in WAL mode. It is
// safe for concurrent use, also by several processes sharing the file.
type SQLiteStore struct {
	db *sql.DB
	// Lookups run once per NATS login (the auth callout asks by key):
	// prepared once, they skip SQLite's parse and plan on every call.
	byKey, byName *sql.Stmt
}

var _ Store = (*SQLiteStore)(nil)

// schema is version 1 of the registry's schema (PRAGMA user_version); a
// change is another migration (see sqlitedb.Migrate), not an edit.
const schema = `
CREATE TABLE IF NOT EXISTS handles (
	domain         TEXT    NOT NULL,
	name           TEXT    NOT NULL,
	skeleton       TEXT    NOT NULL,
	key            TEXT    NOT NULL,
	enc_key        BLOB,
	enc_generation INTEGER NOT NULL DEFAULT 0,
	claimed_at     INTEGER NOT NULL,
	updated_at     INTEGER NOT NULL,
	suspended      INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (domain, name)
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS handles_skeleton ON handles (domain, skeleton);
CREATE UNIQUE INDEX IF NOT EXISTS handles_key ON handles (key);
`

// schemaV2 lets several names share a skeleton, which happens when a new
// skeleton rule folds names registered under an older one together: they
// all stay valid, and Claim (in a write transaction) keeps new claims of
// a held skeleton out. skeleton_rule says which [SkeletonVersion] computed
// the skeleton column; OpenSQLite recomputes it when it is older.
const schemaV2 = `
DROP INDEX handles_skeleton;
CREATE INDEX handles_skeleton ON handles (domain, skeleton);
CREATE TABLE skeleton_rule (version INTEGER NOT NULL) STRICT;
INSERT INTO skeleton_rule (version) VALUES (1);
`

// OpenSQLite opens (creating if needed) the registry in the SQLite file at
// path. Close it when done.
func OpenSQLite(path string) (*SQLiteStore, error) {
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		return nil, fmt.Errorf("handles: opening registry %s: %w", path, err)
	}
	s := &SQLiteStore{db: db}
	if err := sqlitedb.Migrate(db, []string{schema, schemaV2}); err != nil {
		db.Close()
		return nil, fmt.Errorf("handles: preparing registry %s: %w", path, err)
	}
	if err := reskeleton(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("handles: preparing registry %s: %w", path, err)
	}
	if s.byKey, err = db.Prepare(`SELECT ` + recordColumns + ` FROM handles WHERE key = ?`); err == nil {
		s.byName, err = db.Prepare(`SELECT ` + recordColumns + ` FROM handles WHERE domain = ? AND name = ?`)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("handles: preparing registry %s: %w", path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *SQLiteStore) Close() error {
	s.byKey.Close()
	s.byName.Close()
	return s.db.Close()
}

// Ping checks that the database answers; use it as a readiness check.
func (s *SQLiteStore) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

const recordColumns = `domain, name, key, enc_key, enc_generation, claimed_at, updated_at, suspended`

// Claim implements [Store.Claim] in one immediate (write-locked)
// transaction, so concurrent claims are serialised by SQLite.
func (s *SQLiteStore) Claim(ctx context.Context, rec Record) (bool, error) {
	if rec.Handle.IsZero() || rec.Key.IsZero() {
		return false, fmt.Errorf("handles: a claim needs a handle and a key")
	}
	now := rec.UpdatedAt
	if now.IsZero() {
		now = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("handles: registry: %w", err)
	}
	defer tx.Rollback()

	// Who holds the name or its skeleton? After a change of the skeleton
	// rule several names may share one: the name itself first, then the
	// earliest claim.
	rows, err := tx.QueryContext(ctx,
		`SELECT `+recordColumns+` FROM handles WHERE domain = ? AND (name = ? OR skeleton = ?)
		 ORDER BY name = ? DESC, claimed_at, name`,
		rec.Handle.Domain, rec.Handle.Name, Skeleton(rec.Handle.Name), rec.Handle.Name)
	if err != nil {
		return false, fmt.Errorf("handles: registry: %w", err)
	}
	holders, err := scanRecords(rows)
	if err != nil {
		return false, err
	}
	if len(holders) > 0 && holders[0].Handle == rec.Handle {
		held := holders[0]
		switch {
		case held.Key != rec.Key:
			return false, taken(rec.Handle, held.Handle)
		case held.Suspended:
			return false, fmt.Errorf("%w: %s", ErrSuspended, rec.Handle)
		}
		// The same key claims its own handle again: refresh.
		if _, err := tx.ExecContext(ctx,
			`UPDATE handles SET enc_key = ?, enc_generation = ?, updated_at = ? WHERE domain = ? AND name = ?`,
			rec.EncryptionKey, rec.Generation, now.UnixMilli(), rec.Handle.Domain, rec.Handle.Name); err != nil {
			return false, fmt.Errorf("handles: registry: %w", err)
		}
		return false, commit(tx)
	}
	for _, held := range holders {
		if held.Key == rec.Key {
			return false, fmt.Errorf("%w: it holds %s", ErrKeyHasHandle, held.Handle)
		}
	}
	if len(holders) > 0 {
		return false, taken(rec.Handle, holders[0].Handle)
	}

	own, err := scanRecord(tx.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM handles WHERE key = ?`, rec.Key.String()))
	switch {
	case errors.Is(err, ErrNotFound):
	case err != nil:
		return false, err
	default:
		return false, fmt.Errorf("%w: it holds %s", ErrKeyHasHandle, own.Handle)
	}

	_, err = tx.ExecContext(ctx,
		`INSERT INTO handles (domain, name, skeleton, key, enc_key, enc_generation, claimed_at, updated_at, suspended)
		 VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)`,
		rec.Handle.Domain, rec.Handle.Name, Skeleton(rec.Handle.Name), rec.Key.String(),
		rec.EncryptionKey, rec.Generation, now.UnixMilli(), now.UnixMilli())
	if isConstraint(err) {
		return false, fmt.Errorf("%w: %s (%w)", ErrTaken, rec.Handle, err)
	}
	if err != nil {
		return false, fmt.Errorf("handles: registry: %w", err)
	}
	return true, commit(tx)
}

func commit(tx *sql.Tx) error {
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("handles: registry: %w", err)
	}
	return nil
}

// Lookup implements [Store.Lookup].
func (s *SQLiteStore) Lookup(ctx context.Context, h Handle) (Record, error) {
	return scanRecord(s.byName.QueryRowContext(ctx, h.Domain, h.Name))
}

// LookupKey implements [Store.LookupKey].
func (s *SQLiteStore) LookupKey(ctx context.Context, key kez.PublicKey) (Record, error) {
	return scanRecord(s.byKey.QueryRowContext(ctx, key.String()))
}

// SetSuspended implements [Store.SetSuspended].
func (s *SQLiteStore) SetSuspended(ctx context.Context, h Handle, suspended bool) error {
	return s.execOne(ctx, `UPDATE handles SET suspended = ?, updated_at = ? WHERE domain = ? AND name = ?`,
		suspended, time.Now().UnixMilli(), h.Domain, h.Name)
}

// Release implements [Store.Release].
func (s *SQLiteStore) Release(ctx context.Context, h Handle) error {
	return s.execOne(ctx, `DELETE FROM handles WHERE domain = ? AND name = ?`, h.Domain, h.Name)
}

func (s *SQLiteStore) execOne(ctx context.Context, q string, args ...any) error {
	res, err := s.db.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("handles: registry: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("handles: registry: %w", err)
	} else if n == 0 {
		return ErrNotFound
	}
	return nil
}

func scanRecord(row *sql.Row) (Record, error) {
	return scanInto(row.Scan)
}

// scanRecords reads and closes rows of recordColumns.
func scanRecords(rows *sql.Rows) ([]Record, error) {
	defer rows.Close()
	var out []Record
	for rows.Next() {
		r, err := scanInto(rows.Scan)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("handles: registry: %w", err)
	}
	return out, nil
}

func scanInto(scan func(...any) error) (Record, error) {
	var (
		r                 Record
		key               string
		claimed, updated  int64
		suspended, genInt int64
	)
	err := scan(&r.Handle.Domain, &r.Handle.Name, &key, &r.EncryptionKey, &genInt, &claimed, &updated, &suspended)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("handles: registry: %w", err)
	}
	if r.Key, err = kez.ParsePublicKey(key); err != nil {
		return Record{}, fmt.Errorf("handles: registry holds a bad key for %s: %w", r.Handle, err)
	}
	r.Generation = uint32(genInt)
	r.ClaimedAt = time.UnixMilli(claimed)
	r.UpdatedAt = time.UnixMilli(updated)
	r.Suspended = suspended != 0
	return r, nil
}

// isConstraint reports a SQLite constraint violation (SQLITE_CONSTRAINT
// and its extended codes).
func isConstraint(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == 19
}

// reskeleton recomputes the skeleton column if an older [SkeletonVersion]
// computed it, in one transaction: names registered under the old rule
// then block their look-alikes under the new one.
func reskeleton(db *sql.DB) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRow(`SELECT version FROM skeleton_rule`).Scan(&v); err != nil {
		return err
	}
	switch {
	case v == SkeletonVersion:
		return nil
	case v > SkeletonVersion:
		return fmt.Errorf("%w (rule %d; this program knows %d)", ErrNewerSkeletonRule, v, SkeletonVersion)
	}
	rows, err := tx.Query(`SELECT rowid, name, skeleton FROM handles`)
	if err != nil {
		return err
	}
	type change struct {
		id int64
		sk string
	}
	var changes []change
	for rows.Next() {
		var c change
		var name, old string
		if err := rows.Scan(&c.id, &name, &old); err != nil {
			rows.Close()
			return err
		}
		if c.sk = Skeleton(name); c.sk != old {
			changes = append(changes, c)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, c := range changes {
		if _, err := tx.Exec(`UPDATE handles SET skeleton = ? WHERE rowid = ?`, c.sk, c.id); err != nil {
			return err
		}
	}
	if _, err := tx.Exec(`UPDATE skeleton_rule SET version = ?`, SkeletonVersion); err != nil {
		return err
	}
	return tx.Commit()
}
