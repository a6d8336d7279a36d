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
	byKey, byName, byDevice *sql.Stmt
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

// schemaV3 adds the devices of persons (docs/spec/handles.md, "Devices"):
// one row per device key, revoked_at set once revoked (a person's own key
// has a row only once revoked as a device).
const schemaV3 = `
CREATE TABLE devices (
	device     TEXT    NOT NULL PRIMARY KEY,
	person     TEXT    NOT NULL,
	name       TEXT    NOT NULL,
	added_at   INTEGER NOT NULL,
	revoked_at INTEGER
) STRICT;
CREATE INDEX devices_person ON devices (person);
`

// OpenSQLite opens (creating if needed) the registry in the SQLite file at
// path. Close it when done.
func OpenSQLite(path string) (*SQLiteStore, error) {
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		return nil, fmt.Errorf("handles: opening registry %s: %w", path, err)
	}
	s := &SQLiteStore{db: db}
	if err := sqlitedb.Migrate(db, []string{schema, schemaV2, schemaV3}); err != nil {
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
	if err == nil {
		s.byDevice, err = db.Prepare(`SELECT ` + deviceColumns + ` FROM devices WHERE device = ?`)
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
	s.byDevice.Close()
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
	if d, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE device = ?`, rec.Key.String()).Scan); err == nil && d.Person != rec.Key {
		return false, fmt.Errorf("%w: it is a device of %s", ErrKeyHasHandle, d.Person)
	} else if err != nil && !errors.Is(err, ErrNotFound) {
		return false, err
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

// LookupKey implements [Store.LookupKey]: the device table first, then
// the handles.
func (s *SQLiteStore) LookupKey(ctx context.Context, key kez.PublicKey) (Record, error) {
	d, err := scanDevice(s.byDevice.QueryRowContext(ctx, key.String()).Scan)
	switch {
	case errors.Is(err, ErrNotFound):
		return scanRecord(s.byKey.QueryRowContext(ctx, key.String()))
	case err != nil:
		return Record{}, err
	}
	return deviceLookup(d, func() (Record, error) { return scanRecord(s.byKey.QueryRowContext(ctx, d.Person.String())) })
}

// deviceLookup is LookupKey's answer for a key with the device record d:
// the person's entry (read by person) with Device set, or a
// *DeviceRevokedError.
func deviceLookup(d DeviceRecord, person func() (Record, error)) (Record, error) {
	rec, err := person()
	if err != nil && !(d.Revoked && errors.Is(err, ErrNotFound)) {
		return Record{}, err
	}
	rec.Key, rec.Device = d.Person, d.Device
	if d.Revoked {
		return Record{}, &DeviceRevokedError{Record: rec}
	}
	return rec, nil
}

// AddDevice implements [Store.AddDevice] in one write transaction.
func (s *SQLiteStore) AddDevice(ctx context.Context, d DeviceRecord) (bool, error) {
	if err := d.Check(); err != nil {
		return false, err
	}
	if d.Added.IsZero() {
		d.Added = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("handles: registry: %w", err)
	}
	defer tx.Rollback()
	if err := s.holdsHandle(ctx, tx, d.Person, true); err != nil {
		return false, err
	}
	switch err := s.holdsHandle(ctx, tx, d.Device, false); {
	case err == nil:
		return false, fmt.Errorf("%w: %s holds a handle", ErrDeviceTaken, d.Device)
	case !errors.Is(err, ErrNotFound):
		return false, err
	}
	old, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE device = ?`, d.Device.String()).Scan)
	switch {
	case err == nil && old.Person != d.Person:
		return false, fmt.Errorf("%w: %s is a device of another person", ErrDeviceTaken, d.Device)
	case err == nil && old.Revoked:
		return false, fmt.Errorf("%w: %s", ErrDeviceRevoked, d.Device)
	case err == nil:
		return false, nil
	case !errors.Is(err, ErrNotFound):
		return false, err
	}
	var n int
	if err := tx.QueryRowContext(ctx,
		`SELECT (SELECT COUNT(*) FROM devices WHERE person = ?1 AND device != ?1 AND revoked_at IS NULL) +
		        (SELECT COUNT(*) = 0 FROM devices WHERE device = ?1)`, d.Person.String()).Scan(&n); err != nil {
		return false, fmt.Errorf("handles: registry: %w", err)
	}
	if n >= MaxDevices {
		return false, fmt.Errorf("%w: %s has %d current devices", ErrTooManyDevices, d.Person, n)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO devices (device, person, name, added_at) VALUES (?, ?, ?, ?)`,
		d.Device.String(), d.Person.String(), d.Name, d.Added.UnixMilli()); err != nil {
		return false, fmt.Errorf("handles: registry: %w", err)
	}
	return true, commit(tx)
}

// holdsHandle returns nil when key holds a handle, [ErrNotFound] when it
// does not, and with person set, [ErrSuspended] when its entry is
// suspended.
func (s *SQLiteStore) holdsHandle(ctx context.Context, tx *sql.Tx, key kez.PublicKey, person bool) error {
	rec, err := scanRecord(tx.QueryRowContext(ctx, `SELECT `+recordColumns+` FROM handles WHERE key = ?`, key.String()))
	switch {
	case err != nil:
		return err
	case person && rec.Suspended:
		return fmt.Errorf("%w: %s", ErrSuspended, rec.Handle)
	}
	return nil
}

// RevokeDevice implements [Store.RevokeDevice] in one write transaction.
// A device this registry never saw added is recorded as revoked too, so
// that its add link, posted later, is refused.
func (s *SQLiteStore) RevokeDevice(ctx context.Context, person, device kez.PublicKey, at time.Time) error {
	if person.IsZero() || device.IsZero() {
		return errors.New("handles: a revocation needs a person and a device key")
	}
	if at.IsZero() {
		at = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("handles: registry: %w", err)
	}
	defer tx.Rollback()
	if err := s.holdsHandle(ctx, tx, person, false); err != nil {
		return err
	}
	if device != person {
		switch err := s.holdsHandle(ctx, tx, device, false); {
		case err == nil:
			return fmt.Errorf("%w: %s holds a handle, it is no device of %s", ErrNotFound, device, person)
		case !errors.Is(err, ErrNotFound):
			return err
		}
	}
	old, err := scanDevice(tx.QueryRowContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE device = ?`, device.String()).Scan)
	switch {
	case err == nil && old.Person != person:
		return fmt.Errorf("%w: %s is a device of another person", ErrNotFound, device)
	case err == nil && old.Revoked:
		return nil
	case err == nil:
		_, err = tx.ExecContext(ctx, `UPDATE devices SET revoked_at = ? WHERE device = ?`, at.UnixMilli(), device.String())
	case errors.Is(err, ErrNotFound):
		name := ""
		if device == person {
			name = PrimaryName
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO devices (device, person, name, added_at, revoked_at) VALUES (?, ?, ?, ?, ?)`,
			device.String(), person.String(), name, at.UnixMilli(), at.UnixMilli())
	}
	if err != nil {
		return fmt.Errorf("handles: registry: %w", err)
	}
	return commit(tx)
}

// Devices implements [Store.Devices]: every record, revoked ones included.
func (s *SQLiteStore) Devices(ctx context.Context, person kez.PublicKey) ([]DeviceRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+deviceColumns+` FROM devices WHERE person = ? ORDER BY added_at, rowid`, person.String())
	if err != nil {
		return nil, fmt.Errorf("handles: registry: %w", err)
	}
	defer rows.Close()
	var out []DeviceRecord
	for rows.Next() {
		d, err := scanDevice(rows.Scan)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("handles: registry: %w", err)
	}
	return out, nil
}

const deviceColumns = `device, person, name, added_at, revoked_at`

func scanDevice(scan func(...any) error) (DeviceRecord, error) {
	var (
		d              DeviceRecord
		device, person string
		added          int64
		revoked        sql.NullInt64
	)
	err := scan(&device, &person, &d.Name, &added, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return DeviceRecord{}, ErrNotFound
	}
	if err != nil {
		return DeviceRecord{}, fmt.Errorf("handles: registry: %w", err)
	}
	if d.Device, err = kez.ParsePublicKey(device); err != nil {
		return DeviceRecord{}, fmt.Errorf("handles: registry holds a bad device key: %w", err)
	}
	if d.Person, err = kez.ParsePublicKey(person); err != nil {
		return DeviceRecord{}, fmt.Errorf("handles: registry holds a bad person key for %s: %w", device, err)
	}
	d.Added = time.UnixMilli(added)
	if revoked.Valid {
		d.Revoked, d.RevokedAt = true, time.UnixMilli(revoked.Int64)
	}
	return d, nil
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
