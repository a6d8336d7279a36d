// Package sqlitepins keeps a client's [translog.Pins] in a SQLite file
// (by convention "log.db" in the client's home directory): each
// sig-server's pinned log and the newest checkpoint accepted per log (named
// by its verifier key text, see [translog.Pins]). Several processes may
// share the file.
package sqlitepins

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"

	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/translog"
)

// FileName is the conventional name of the file in a client's home.
const FileName = "log.db"

// migrations[i] moves the schema from version i to i+1.
var migrations = []string{`
CREATE TABLE logs (
	server TEXT PRIMARY KEY,
	origin TEXT NOT NULL,
	vkey   TEXT NOT NULL
);
CREATE TABLE latest (
	origin TEXT PRIMARY KEY, -- the log's verifier key text (translog.Pins)
	size   INTEGER NOT NULL,
	note   BLOB NOT NULL
);`}

// Pins is a [translog.Pins] in a SQLite file. It is safe for concurrent
// use.
type Pins struct {
	db *sql.DB
}

var _ translog.Pins = (*Pins)(nil)

// Open opens (creating if needed) the pins file at path.
func Open(path string) (*Pins, error) {
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		return nil, fmt.Errorf("sqlitepins: %w", err)
	}
	if err := sqlitedb.Migrate(db, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitepins: preparing %s: %w", path, err)
	}
	return &Pins{db: db}, nil
}

// Close closes the file.
func (p *Pins) Close() error { return p.db.Close() }

// LogOf returns the log pinned for server.
func (p *Pins) LogOf(ctx context.Context, server string) (translog.LogInfo, bool, error) {
	var li translog.LogInfo
	err := p.db.QueryRowContext(ctx, `SELECT origin, vkey FROM logs WHERE server = ?`, server).Scan(&li.Origin, &li.Key)
	if errors.Is(err, sql.ErrNoRows) {
		return li, false, nil
	}
	if err != nil {
		return li, false, fmt.Errorf("sqlitepins: %w", err)
	}
	return li, true, nil
}

// SetLogOf pins the log of server, replacing any earlier pin.
func (p *Pins) SetLogOf(ctx context.Context, server string, li translog.LogInfo) error {
	_, err := p.db.ExecContext(ctx, `INSERT INTO logs (server, origin, vkey) VALUES (?, ?, ?)
		ON CONFLICT (server) DO UPDATE SET origin = excluded.origin, vkey = excluded.vkey`,
		server, li.Origin, li.Key)
	if err != nil {
		return fmt.Errorf("sqlitepins: %w", err)
	}
	return nil
}

// Latest returns the newest accepted checkpoint of the log whose verifier
// key text is origin.
func (p *Pins) Latest(ctx context.Context, origin string) ([]byte, bool, error) {
	var n []byte
	err := p.db.QueryRowContext(ctx, `SELECT note FROM latest WHERE origin = ?`, origin).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("sqlitepins: %w", err)
	}
	return n, true, nil
}

// SetLatest records note as the newest accepted checkpoint of the log
// whose verifier key text is origin. A
// note of a smaller tree than the one recorded (another process accepted a
// newer one meanwhile) leaves the record as it is.
func (p *Pins) SetLatest(ctx context.Context, origin string, note []byte) error {
	size, err := noteSize(note)
	if err != nil {
		return err
	}
	_, err = p.db.ExecContext(ctx, `INSERT INTO latest (origin, size, note) VALUES (?, ?, ?)
		ON CONFLICT (origin) DO UPDATE SET size = excluded.size, note = excluded.note
		WHERE excluded.size >= latest.size`, origin, int64(size), note)
	if err != nil {
		return fmt.Errorf("sqlitepins: %w", err)
	}
	return nil
}

// noteSize reads the tree size, the second line of a checkpoint note.
func noteSize(note []byte) (uint64, error) {
	_, rest, _ := bytes.Cut(note, []byte("\n"))
	line, _, ok := bytes.Cut(rest, []byte("\n"))
	n, err := strconv.ParseUint(string(line), 10, 63)
	if !ok || err != nil {
		return 0, fmt.Errorf("sqlitepins: %w: no tree size", translog.ErrBadCheckpoint)
	}
	return n, nil
}
