// Package sqlitedb opens the SQLite files of KEZ (a client's chat.db and
// shares.db, a chat-server's registry, a sig-server's chains) the one way
// they all need, and migrates their schemas.
//
//	db, err := sqlitedb.Open(path, sqlitedb.Options{})
//	if err == nil {
//		err = sqlitedb.Migrate(db, migrations) // migrations[i]: version i → i+1
//	}
//
// [Open] creates the file mode 0600 (its -wal and -shm files take the
// same mode), and sets, on every connection of the pool: a WAL journal (readers do
// not block the writer, and several processes may share the file), a busy
// timeout of 10 s (writers wait for each other instead of failing),
// foreign-key enforcement, synchronous NORMAL (durable against a crash of
// the process; FULL with [Options.FullSync], durable against a power loss
// too) and BEGIN IMMEDIATE transactions (a transaction takes the write lock
// when it starts, so it never fails half-way to upgrade its lock).
// [Migrate] keys the schema on PRAGMA user_version and refuses a file
// written by a newer program. Each store keeps its schema beside its code.
// [OpenReadOnly] reads an existing file without ever writing it.
//
// It uses the pure-Go modernc.org/sqlite driver ("sqlite", no cgo).
package sqlitedb

import (
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// BusyTimeout is how long a connection waits for another writer's lock
// before it reports SQLITE_BUSY.
const BusyTimeout = 10 * time.Second

// Options adjust [Open].
type Options struct {
	// FullSync makes every commit wait until it is on the disk (PRAGMA
	// synchronous = FULL): nothing acknowledged is lost even by a power
	// loss. Without it (NORMAL), only the last commits before a power loss
	// may be undone, and commits are cheaper.
	FullSync bool
	// FileMode is the mode a new file is created with, before SQLite
	// would create it (0644, less the umask); zero means 0600. SQLite
	// gives the -wal and -shm files the database file's mode. An existing
	// file keeps its mode.
	FileMode os.FileMode
	// SecureDelete overwrites with zeros what a write deletes or replaces
	// (PRAGMA secure_delete = ON), so that the database file keeps no
	// earlier version of a row once the write-ahead log is checkpointed:
	// for files holding keys that must be forgotten.
	SecureDelete bool
}

// Open opens the SQLite file at path, creating it if needed, with the
// settings the package comment lists. Like sql.Open it connects lazily:
// an unreadable file is reported by the first query (usually [Migrate]).
// path is a file path, not a URI: one with "?" or "#" is refused.
func Open(path string, o Options) (*sql.DB, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	mode := o.FileMode
	if mode == 0 {
		mode = 0o600
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, mode)
	if err != nil {
		return nil, fmt.Errorf("creating the database file: %w", err)
	}
	f.Close()
	sync := "NORMAL"
	if o.FullSync {
		sync = "FULL"
	}
	q := url.Values{}
	// The busy timeout first: switching to WAL needs a lock another
	// process may hold.
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous("+sync+")")
	q.Add("_pragma", "foreign_keys(ON)")
	if o.SecureDelete {
		q.Add("_pragma", "secure_delete(ON)")
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	return db, nil
}

// OpenReadOnly opens the existing SQLite file at path for reading only
// (SQLite's mode=ro): it never creates the file, changes its journal mode
// or migrates it, and every write on it fails. A file in WAL mode is read
// as a snapshot per transaction while another process writes it. Like
// [Open] it connects lazily, and path is a file path, not a URI.
func OpenReadOnly(path string) (*sql.DB, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	return sql.Open("sqlite", "file:"+path+"?"+q.Encode())
}

// checkPath refuses a path that is empty or would be read as a URI's
// query or fragment ("?", "#"): Open and OpenReadOnly take file paths.
func checkPath(path string) error {
	if path == "" || strings.ContainsAny(path, "?#") {
		return fmt.Errorf("the database path %q is empty or has ? or #", path)
	}
	return nil
}

// NewerSchemaError reports a file whose schema version is newer than the
// program knows: a newer program wrote it, and this one must not touch it.
type NewerSchemaError struct {
	Version int // the file's PRAGMA user_version
	Known   int // the newest version this program knows
}

// Error says which versions and what to do.
func (e *NewerSchemaError) Error() string {
	return fmt.Sprintf("the file has schema version %d, newer than this program's %d; upgrade the program", e.Version, e.Known)
}

// Migrate brings db to schema version len(migrations): migrations[i] is
// the SQL that takes a file from version i to i+1, and the version is kept
// in PRAGMA user_version. The missing migrations run in one transaction,
// so a failure leaves the file as it was; a file already at the version
// runs none. A file at a newer version is refused with a
// *[NewerSchemaError]. Migrations are append-only: never edit one that
// has shipped, add the next.
func Migrate(db *sql.DB, migrations []string) error {
	tx, err := db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var v int
	if err := tx.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		return err
	}
	switch {
	case v == len(migrations):
		return nil
	case v > len(migrations):
		return &NewerSchemaError{Version: v, Known: len(migrations)}
	}
	for ; v < len(migrations); v++ {
		if _, err := tx.Exec(migrations[v]); err != nil {
			return fmt.Errorf("migrating to schema version %d: %w", v+1, err)
		}
	}
	if _, err := tx.Exec(fmt.Sprintf("PRAGMA user_version = %d", len(migrations))); err != nil {
		return err
	}
	return tx.Commit()
}
