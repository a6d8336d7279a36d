package sqlitedb

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var twoVersions = []string{
	`CREATE TABLE a (id INTEGER PRIMARY KEY, v TEXT NOT NULL) STRICT;`,
	`CREATE TABLE b (a_id INTEGER NOT NULL REFERENCES a(id)) STRICT;`,
}

func open(t *testing.T, path string, o Options) *sql.DB {
	t.Helper()
	db, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func pragma(t *testing.T, db *sql.DB, name string) string {
	t.Helper()
	var v string
	if err := db.QueryRow("PRAGMA " + name).Scan(&v); err != nil {
		t.Fatalf("PRAGMA %s: %v", name, err)
	}
	return v
}

func TestOpenSettings(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		sync string
	}{{Options{}, "1"}, {Options{FullSync: true}, "2"}} {
		db := open(t, filepath.Join(t.TempDir(), "s.db"), tc.o)
		db.SetMaxOpenConns(3)
		// Every connection of the pool has the settings, not only the first.
		conns := make([]*sql.Conn, 3)
		for i := range conns {
			c, err := db.Conn(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns[i] = c
		}
		for _, c := range conns {
			for name, want := range map[string]string{"journal_mode": "wal", "busy_timeout": "10000", "foreign_keys": "1", "synchronous": tc.sync} {
				var got string
				if err := c.QueryRowContext(t.Context(), "PRAGMA "+name).Scan(&got); err != nil || got != want {
					t.Errorf("%+v: PRAGMA %s = %q, %v; want %q", tc.o, name, got, err, want)
				}
			}
		}
	}
}

// A new file is 0600 unless Options say otherwise, and SQLite gives its
// -wal and -shm files the same mode; an existing file keeps its own.
func TestOpenFileMode(t *testing.T) {
	dir := t.TempDir()
	for name, tc := range map[string]struct {
		o    Options
		want os.FileMode
	}{
		"default.db": {Options{}, 0o600},
		"chosen.db":  {Options{FileMode: 0o640}, 0o640},
	} {
		path := filepath.Join(dir, name)
		db := open(t, path, tc.o)
		if err := Migrate(db, twoVersions); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, path + "-wal", path + "-shm"} {
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != tc.want {
				t.Errorf("%s has mode %v, want %v", filepath.Base(p), st.Mode().Perm(), tc.want)
			}
		}
	}
	existing := filepath.Join(dir, "existing.db")
	if err := os.WriteFile(existing, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(existing, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := Migrate(open(t, existing, Options{}), twoVersions); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(existing); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("an existing file's mode changed: %v, %v", st.Mode(), err)
	}
	if _, err := Open(filepath.Join(dir, "no-such-folder", "x.db"), Options{}); err == nil {
		t.Error("a file in a missing folder was opened")
	}
}

func TestOpenRefusesURIPaths(t *testing.T) {
	for _, p := range []string{"", "a.db?mode=ro", "a#b.db"} {
		if _, err := Open(p, Options{}); err == nil || !strings.Contains(err.Error(), "? or #") {
			t.Errorf("Open(%q): %v", p, err)
		}
	}
}

func TestMigrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.db")
	db := open(t, path, Options{})
	if err := Migrate(db, twoVersions[:1]); err != nil {
		t.Fatal(err)
	}
	if v := pragma(t, db, "user_version"); v != "1" {
		t.Fatalf("user_version %s after one migration", v)
	}
	// Again: nothing runs (re-running a CREATE TABLE would fail).
	if err := Migrate(db, twoVersions[:1]); err != nil {
		t.Fatal(err)
	}
	// A newer program adds the next migration.
	if err := Migrate(db, twoVersions); err != nil {
		t.Fatal(err)
	}
	if v := pragma(t, db, "user_version"); v != "2" {
		t.Fatalf("user_version %s after two migrations", v)
	}
	// Foreign keys are enforced.
	if _, err := db.Exec(`INSERT INTO b (a_id) VALUES (42)`); err == nil {
		t.Error("a row referring to nothing was stored")
	}
	// An older program refuses the file and changes nothing.
	err := Migrate(db, twoVersions[:1])
	var ne *NewerSchemaError
	if !errors.As(err, &ne) || ne.Version != 2 || ne.Known != 1 || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("an older program: %v", err)
	}
	if v := pragma(t, db, "user_version"); v != "2" {
		t.Fatalf("user_version %s after a refusal", v)
	}
}

// A failing migration leaves the file as it was, earlier steps included.
func TestMigrateAllOrNothing(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "m.db"), Options{})
	bad := []string{twoVersions[0], `CREATE TABLE broken (`}
	if err := Migrate(db, bad); err == nil || !strings.Contains(err.Error(), "schema version 2") {
		t.Fatalf("a broken migration: %v", err)
	}
	if v := pragma(t, db, "user_version"); v != "0" {
		t.Errorf("user_version %s after a failed migration", v)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM sqlite_schema WHERE name = 'a'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("the first step of a failed migration stayed: %d, %v", n, err)
	}
}

func TestOpenReadOnly(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.db")
	db, err := OpenReadOnly(missing)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`SELECT 1`); err == nil {
		t.Error("a missing file was opened")
	}
	db.Close()
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenReadOnly created the file: %v", err)
	}

	path := filepath.Join(dir, "m.db")
	w := open(t, path, Options{})
	if err := Migrate(w, twoVersions); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Exec(`INSERT INTO a (id, v) VALUES (7, 'x')`); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	var n int
	if err := r.QueryRow(`SELECT count(*) FROM a`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("reading: %d, %v", n, err)
	}
	// The writer goes on while the reader is open; the reader sees it.
	if _, err := w.Exec(`INSERT INTO a (id, v) VALUES (8, 'y')`); err != nil {
		t.Fatal(err)
	}
	if err := r.QueryRow(`SELECT count(*) FROM a`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("reading after a write: %d, %v", n, err)
	}
	// Attacker's view: nothing written through it reaches the file, not
	// even a PRAGMA that would turn writes back on.
	for _, q := range []string{`INSERT INTO a (id, v) VALUES (9, 'z')`, `PRAGMA user_version = 99`, `PRAGMA query_only = 0; DELETE FROM a`} {
		if _, err := r.Exec(q); err == nil {
			t.Errorf("%s: written through a read-only handle", q)
		}
	}
	if v := pragma(t, w, "user_version"); v != "2" {
		t.Errorf("user_version %s", v)
	}
	for _, p := range []string{"", "a.db?mode=rw", "a#b.db"} {
		if _, err := OpenReadOnly(p); err == nil || !strings.Contains(err.Error(), "? or #") {
			t.Errorf("OpenReadOnly(%q): %v", p, err)
		}
	}
}
