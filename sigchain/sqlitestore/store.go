// Package sqlitestore is the sig-server's SQLite [sigchain.Store]: one file,
// WAL journal, FULL synchronous commits, and an atomic head check inside
// each append transaction, so concurrent appends to one chain store
// exactly one link per seqno and nothing acknowledged is lost when the
// process is killed.
//
//	st, err := sqlitestore.Open("kez-sig.db")
//	defer st.Close()
//	http.Handle("/", sigchain.NewHandler(st))
//
// It uses the pure-Go modernc.org/sqlite driver (no cgo). Several
// processes may open the same file; writers wait for each other up to the
// busy timeout.
//
// The store keeps a table of orphan chains (none of whose links named a
// handle, see [sigchain.OrphanCollector]) with the time each was made,
// updated in the transaction of each append, and [Store.CollectOrphans]
// deletes the old ones (with their prekeys). Opening a file of schema
// version 1 lists its existing orphans as made at that moment.
//
// It is also a [sigchain.PrekeyStore]: a table of one signed prekey
// record per key (schema version 3), written only for a key with a chain
// (or a current device of one) and only with a newer record, both
// checked in the statement that writes.
//
// And it is a [sigchain.DeviceStore] and a [sigchain.LinkRequestStore]
// (schema version 4): a table of device key → person, revoked, written
// in the transaction of the append that adds or revokes the device, and
// a table of pending link requests by code, which
// [Store.SweepLinkRequests] empties of expired ones.
//
// The file also holds the groups' membership chains (schema version 5),
// which package sigchain/sqlitestore/groupstore keeps through
// [Store.ReadTx] and [Store.WriteTx].
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
)

// schema is version 1 of the store's schema (PRAGMA user_version); a
// change is a second migration (see sqlitedb.Migrate), not an edit.
const schema = `
CREATE TABLE IF NOT EXISTS links (
	chain TEXT    NOT NULL, -- the chain's key, nkey text (U…)
	seqno INTEGER NOT NULL,
	id    TEXT    NOT NULL, -- link ID, CID text
	link  BLOB    NOT NULL, -- the link's exact canonical bytes
	PRIMARY KEY (chain, seqno)
) WITHOUT ROWID;
`

// orphans is version 2: the chains none of whose links named a handle,
// with when their eldest link was stored (Unix seconds). Chains already
// stored count from the migration on.
const orphans = `
CREATE TABLE orphans (
	chain TEXT    NOT NULL PRIMARY KEY,
	since INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX orphans_since ON orphans (since);
INSERT INTO orphans (chain, since)
	SELECT chain, CAST(strftime('%s', 'now') AS INTEGER) FROM links GROUP BY chain
	HAVING SUM(json_extract(CAST(link AS TEXT), '$.type') IN ('eldest', 'set_handle')
	           AND json_extract(CAST(link AS TEXT), '$.body.handle') != '') = 0;
`

// prekeys is version 3: the prekey directory, one signed record per key
// that has a chain.
const prekeys = `
CREATE TABLE prekeys (
	chain      TEXT    NOT NULL PRIMARY KEY, -- the owner's key, nkey text (U…)
	created_ms INTEGER NOT NULL,             -- the record's creation time, Unix milliseconds
	record     BLOB    NOT NULL              -- the record's exact bytes
) WITHOUT ROWID;
`

// devices is version 4: the device index and the pending link requests.
const devices = `
CREATE TABLE devices (
	device  TEXT    NOT NULL PRIMARY KEY, -- the device key, nkey text (U…)
	person  TEXT    NOT NULL,             -- the key of the chain that added (or revoked) it
	revoked INTEGER NOT NULL              -- 1 once a revoke_device link named it
) WITHOUT ROWID;
CREATE INDEX devices_person ON devices (person);
CREATE TABLE link_requests (
	code    TEXT    NOT NULL PRIMARY KEY, -- the link code's text
	expires INTEGER NOT NULL,             -- the request's expiry, Unix seconds
	request BLOB    NOT NULL              -- the request's exact bytes
) WITHOUT ROWID;
CREATE INDEX link_requests_expires ON link_requests (expires);
`

// groups is version 5: the groups' membership chains (package group),
// one row a link like the chains' links, and the creator of each group,
// for the sig-server's cap on the groups one person creates. Package
// groupstore reads and writes them.
const groups = `
CREATE TABLE group_links (
	grp   TEXT    NOT NULL, -- the group's name, name@domain
	seqno INTEGER NOT NULL,
	id    TEXT    NOT NULL, -- link ID, CID text
	link  BLOB    NOT NULL, -- the link's exact canonical bytes
	PRIMARY KEY (grp, seqno)
) WITHOUT ROWID;
CREATE TABLE group_creators (
	grp     TEXT NOT NULL PRIMARY KEY, -- the group's name
	creator TEXT NOT NULL              -- the person key that signed its create link, nkey text (U…)
) WITHOUT ROWID;
CREATE INDEX group_creators_creator ON group_creators (creator);
`

// Store is a SQLite-backed [sigchain.Store], [sigchain.PrekeyStore],
// [sigchain.OrphanCollector], [sigchain.DeviceStore] and
// [sigchain.LinkRequestStore]. It is safe for concurrent use.
type Store struct {
	db  *sql.DB
	mu  sync.Mutex // serialises this process's writers; SQLite locks across processes
	now func() time.Time
}

var (
	_ sigchain.OrphanCollector  = (*Store)(nil)
	_ sigchain.PrekeyStore      = (*Store)(nil)
	_ sigchain.DeviceStore      = (*Store)(nil)
	_ sigchain.LinkRequestStore = (*Store)(nil)
)

// Option configures [Open].
type Option func(*Store)

// WithClock sets the clock that dates new orphan chains (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Open opens or creates the database file at path and prepares its schema.
func Open(path string, opts ...Option) (*Store, error) {
	// FULL: an append the sig-server acknowledged survives a power loss.
	db, err := sqlitedb.Open(path, sqlitedb.Options{FullSync: true})
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: opening %s: %w", path, err)
	}
	if err := sqlitedb.Migrate(db, []string{schema, orphans, prekeys, devices, groups}); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitestore: preparing %s: %w", path, err)
	}
	s := &Store{db: db, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// ReadTx runs f in one read-only transaction on the store's file: for
// the stores of other records kept in the same file (package
// sigchain/sqlitestore/groupstore), whose tables this package's schema
// makes.
func (s *Store) ReadTx(ctx context.Context, f func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("sqlitestore: %w", err)
	}
	defer tx.Rollback()
	return f(tx)
}

// WriteTx runs f in one write transaction on the store's file,
// serialised with the store's own writers, and commits it if f returns
// nil: for the stores of other records kept in the same file, like
// [Store.ReadTx].
func (s *Store) WriteTx(ctx context.Context, f func(*sql.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: %w", err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: committing: %w", err)
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Ping checks that the database answers; use it as a readiness check.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	return s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func head(ctx context.Context, q querier, key string) (sigchain.Head, error) {
	var seqno uint64
	var id string
	err := q.QueryRowContext(ctx, "SELECT seqno, id FROM links WHERE chain = ? ORDER BY seqno DESC LIMIT 1", key).Scan(&seqno, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return sigchain.Head{}, sigchain.ErrNotFound
	}
	if err != nil {
		return sigchain.Head{}, fmt.Errorf("sqlitestore: reading head: %w", err)
	}
	c, err := cid.Decode(id)
	if err != nil {
		return sigchain.Head{}, fmt.Errorf("sqlitestore: stored head ID %q: %w", id, err)
	}
	return sigchain.Head{Seqno: seqno, ID: c}, nil
}

// Head implements [sigchain.Store].
func (s *Store) Head(ctx context.Context, key kez.PublicKey) (sigchain.Head, error) {
	return head(ctx, s.db, key.String())
}

// Links implements [sigchain.Store]. The links and the head are read in
// one transaction.
func (s *Store) Links(ctx context.Context, key kez.PublicKey, since uint64, limit int) ([][]byte, sigchain.Head, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, sigchain.Head{}, fmt.Errorf("sqlitestore: %w", err)
	}
	defer tx.Rollback()
	k := key.String()
	h, err := head(ctx, tx, k)
	if err != nil {
		return nil, sigchain.Head{}, err
	}
	rows, err := tx.QueryContext(ctx, "SELECT link FROM links WHERE chain = ? AND seqno > ? ORDER BY seqno LIMIT ?", k, int64(min(since, 1<<62)), max(limit, 0))
	if err != nil {
		return nil, sigchain.Head{}, fmt.Errorf("sqlitestore: reading links: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, sigchain.Head{}, fmt.Errorf("sqlitestore: reading links: %w", err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, sigchain.Head{}, fmt.Errorf("sqlitestore: reading links: %w", err)
	}
	return out, h, nil
}

// Append implements [sigchain.Store] and keeps the device index
// ([sigchain.DeviceStore]): inside one IMMEDIATE transaction it reads the
// head, checks that link follows it, inserts, lists a new chain without a
// handle as an orphan or takes a chain whose link names a handle off the
// list, and adds a device to the index (refusing one already there, or
// one that has a chain, with [sigchain.ErrDeviceKnown]) or marks it
// revoked and deletes its prekey; an eldest link of a key in the index is
// refused with [sigchain.ErrDeviceKnown].
func (s *Store) Append(ctx context.Context, link *sigchain.Link) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: %w", err)
	}
	defer tx.Rollback()
	k := link.Key().String()
	h, err := head(ctx, tx, k)
	if err != nil && !errors.Is(err, sigchain.ErrNotFound) {
		return err
	}
	follows := h.Seqno == 0 && link.Seqno() == 1 ||
		h.Seqno > 0 && link.Seqno() == h.Seqno+1 && link.Prev() == h.ID
	if !follows {
		return &sigchain.ConflictError{Head: h}
	}
	if link.Seqno() == 1 { // a device key never starts a chain of its own
		if known, err := exists(ctx, tx, "SELECT 1 FROM devices WHERE device = ?", k); err != nil {
			return fmt.Errorf("sqlitestore: reading the device index: %w", err)
		} else if known {
			return fmt.Errorf("sqlitestore: a chain of %s: %w", k, sigchain.ErrDeviceKnown)
		}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO links (chain, seqno, id, link) VALUES (?, ?, ?, ?)",
		k, int64(link.Seqno()), link.ID().String(), link.Bytes()); err != nil {
		return fmt.Errorf("sqlitestore: storing link: %w", err)
	}
	switch {
	case link.NamedHandle() != "":
		_, err = tx.ExecContext(ctx, "DELETE FROM orphans WHERE chain = ?", k)
	case link.Seqno() == 1:
		_, err = tx.ExecContext(ctx, "INSERT INTO orphans (chain, since) VALUES (?, ?) ON CONFLICT (chain) DO UPDATE SET since = excluded.since", k, s.now().Unix())
	}
	if err != nil {
		return fmt.Errorf("sqlitestore: storing link: %w", err)
	}
	if err := indexDevice(ctx, tx, link); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: storing link: %w", err)
	}
	return nil
}

// indexDevice updates the device index for link, inside the append's
// transaction.
func indexDevice(ctx context.Context, tx *sql.Tx, link *sigchain.Link) error {
	d, revoke, ok := link.NamedDevice()
	if !ok {
		return nil
	}
	dk, person := d.String(), link.Key().String()
	if revoke {
		if _, err := tx.ExecContext(ctx, `INSERT INTO devices (device, person, revoked) VALUES (?, ?, 1)
			ON CONFLICT (device) DO UPDATE SET revoked = 1 WHERE devices.person = excluded.person`, dk, person); err != nil {
			return fmt.Errorf("sqlitestore: revoking a device: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM prekeys WHERE chain = ?", dk); err != nil {
			return fmt.Errorf("sqlitestore: deleting a revoked device's prekey: %w", err)
		}
		return nil
	}
	if own, err := exists(ctx, tx, "SELECT 1 FROM links WHERE chain = ? LIMIT 1", dk); err != nil {
		return fmt.Errorf("sqlitestore: adding a device: %w", err)
	} else if own {
		return fmt.Errorf("sqlitestore: adding %s, which has a chain: %w", dk, sigchain.ErrDeviceKnown)
	}
	res, err := tx.ExecContext(ctx, "INSERT INTO devices (device, person, revoked) VALUES (?, ?, 0) ON CONFLICT (device) DO NOTHING", dk, person)
	if err != nil {
		return fmt.Errorf("sqlitestore: adding a device: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("sqlitestore: adding a device: %w", err)
	} else if n == 0 {
		return fmt.Errorf("sqlitestore: adding %s: %w", dk, sigchain.ErrDeviceKnown)
	}
	return nil
}

// exists reports whether query finds a row.
func exists(ctx context.Context, tx *sql.Tx, query string, args ...any) (bool, error) {
	var one int
	err := tx.QueryRowContext(ctx, query, args...).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil, err
}

// Device implements [sigchain.DeviceStore].
func (s *Store) Device(ctx context.Context, device kez.PublicKey) (sigchain.DeviceEntry, error) {
	var person string
	var revoked bool
	err := s.db.QueryRowContext(ctx, "SELECT person, revoked FROM devices WHERE device = ?", device.String()).Scan(&person, &revoked)
	if errors.Is(err, sql.ErrNoRows) {
		return sigchain.DeviceEntry{}, sigchain.ErrNoDevice
	}
	if err != nil {
		return sigchain.DeviceEntry{}, fmt.Errorf("sqlitestore: reading a device: %w", err)
	}
	p, err := kez.ParsePublicKey(person)
	if err != nil {
		return sigchain.DeviceEntry{}, fmt.Errorf("sqlitestore: the stored person of %s: %w", device, err)
	}
	return sigchain.DeviceEntry{Person: p, Revoked: revoked}, nil
}

// collectBatch bounds the chains one transaction of CollectOrphans
// deletes, so appends do not wait long behind it.
const collectBatch = 256

// CollectOrphans implements [sigchain.OrphanCollector]: it deletes the
// orphan chains made before cutoff, up to 256 chains per transaction.
func (s *Store) CollectOrphans(ctx context.Context, cutoff time.Time) (int, error) {
	total := 0
	for {
		n, err := s.collectBatch(ctx, cutoff.Unix())
		total += n
		if err != nil || n < collectBatch {
			return total, err
		}
	}
}

func (s *Store) collectBatch(ctx context.Context, cutoff int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("sqlitestore: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, "SELECT chain FROM orphans WHERE since < ? ORDER BY since LIMIT ?", cutoff, collectBatch)
	if err != nil {
		return 0, fmt.Errorf("sqlitestore: listing orphans: %w", err)
	}
	var chains []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return 0, fmt.Errorf("sqlitestore: listing orphans: %w", err)
		}
		chains = append(chains, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("sqlitestore: listing orphans: %w", err)
	}
	for _, c := range chains {
		if _, err := tx.ExecContext(ctx, "DELETE FROM prekeys WHERE chain IN (SELECT device FROM devices WHERE person = ?)", c); err != nil {
			return 0, fmt.Errorf("sqlitestore: deleting an orphan chain's devices: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM devices WHERE person = ?", c); err != nil {
			return 0, fmt.Errorf("sqlitestore: deleting an orphan chain's devices: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM links WHERE chain = ?", c); err != nil {
			return 0, fmt.Errorf("sqlitestore: deleting an orphan chain: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM orphans WHERE chain = ?", c); err != nil {
			return 0, fmt.Errorf("sqlitestore: deleting an orphan chain: %w", err)
		}
		if _, err := tx.ExecContext(ctx, "DELETE FROM prekeys WHERE chain = ?", c); err != nil {
			return 0, fmt.Errorf("sqlitestore: deleting an orphan chain's prekey: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("sqlitestore: deleting orphan chains: %w", err)
	}
	return len(chains), nil
}

// Prekey implements [sigchain.PrekeyStore].
func (s *Store) Prekey(ctx context.Context, key kez.PublicKey) ([]byte, error) {
	var rec []byte
	err := s.db.QueryRowContext(ctx, "SELECT record FROM prekeys WHERE chain = ?", key.String()).Scan(&rec)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, sigchain.ErrNoPrekey
	}
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: reading a prekey: %w", err)
	}
	return rec, nil
}

// PutPrekey implements [sigchain.PrekeyStore] in one statement, which
// stores the record only if the owner has a chain or is a current device
// of one, is not a revoked device, and the record is newer than the
// stored one.
func (s *Store) PutPrekey(ctx context.Context, p *session.Prekey) error {
	rec, err := p.MarshalBinary()
	if err != nil {
		return fmt.Errorf("sqlitestore: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := p.Owner.String()
	res, err := s.db.ExecContext(ctx, `INSERT INTO prekeys (chain, created_ms, record)
		SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM devices WHERE device = ?1 AND revoked)
			AND (EXISTS (SELECT 1 FROM links WHERE chain = ?1) OR EXISTS (SELECT 1 FROM devices WHERE device = ?1))
		ON CONFLICT (chain) DO UPDATE SET created_ms = excluded.created_ms, record = excluded.record
		WHERE excluded.created_ms > prekeys.created_ms`, k, p.Created.UnixMilli(), rec)
	if err != nil {
		return fmt.Errorf("sqlitestore: storing a prekey: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	// Nothing stored: say why.
	switch e, err := s.Device(ctx, p.Owner); {
	case err == nil && e.Revoked:
		return sigchain.ErrDeviceRevoked
	case err == nil:
		return sigchain.ErrStalePrekey
	case !errors.Is(err, sigchain.ErrNoDevice):
		return err
	}
	if _, err := head(ctx, s.db, k); err != nil {
		return err // sigchain.ErrNotFound, or a read error
	}
	return sigchain.ErrStalePrekey
}

// PutLinkRequest implements [sigchain.LinkRequestStore] in one
// statement, which counts the pending requests and inserts.
func (s *Store) PutLinkRequest(ctx context.Context, req *sigchain.LinkRequest, now time.Time, max int) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	code := req.Code().String()
	res, err := s.db.ExecContext(ctx, `INSERT INTO link_requests (code, expires, request)
		SELECT ?1, ?2, ?3 WHERE ?5 < 0 OR (SELECT COUNT(*) FROM link_requests WHERE expires >= ?4) < ?5
		ON CONFLICT (code) DO NOTHING`, code, req.Expires().Unix(), req.Bytes(), now.Unix(), max)
	if err != nil {
		return false, fmt.Errorf("sqlitestore: storing a link request: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return false, fmt.Errorf("sqlitestore: storing a link request: %w", err)
	} else if n == 1 {
		return true, nil
	}
	if _, err := s.LinkRequest(ctx, req.Code()); err == nil {
		return false, nil
	} else if !errors.Is(err, sigchain.ErrNoLinkRequest) {
		return false, err
	}
	return false, sigchain.ErrLinkRequestsFull
}

// LinkRequest implements [sigchain.LinkRequestStore].
func (s *Store) LinkRequest(ctx context.Context, code sigchain.LinkCode) ([]byte, error) {
	var req []byte
	err := s.db.QueryRowContext(ctx, "SELECT request FROM link_requests WHERE code = ?", code.String()).Scan(&req)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, sigchain.ErrNoLinkRequest
	}
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: reading a link request: %w", err)
	}
	return req, nil
}

// SweepLinkRequests implements [sigchain.LinkRequestStore].
func (s *Store) SweepLinkRequests(ctx context.Context, now time.Time) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	res, err := s.db.ExecContext(ctx, "DELETE FROM link_requests WHERE expires < ?", now.Unix())
	if err != nil {
		return 0, fmt.Errorf("sqlitestore: sweeping link requests: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}
