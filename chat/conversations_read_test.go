package chat

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// files returns the names in dir.
func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// A home without a database has no conversations, and reading it creates
// nothing.
func TestReadConversationsNoDatabase(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	for _, home := range []string{dir, filepath.Join(dir, "missing")} {
		cs, err := ReadConversations(ctx, home)
		if cs != nil || err != nil {
			t.Errorf("%s: %v, %v", home, cs, err)
		}
	}
	if got := files(t, dir); len(got) != 0 {
		t.Errorf("reading created %v", got)
	}
}

// A chat.db that is no database is reported, and left byte for byte as it
// was, with no journal beside it.
func TestReadConversationsGarbage(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, DBFileName)
	garbage := bytes.Repeat([]byte("not a database, but 4 KiB of something else. "), 100)
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	cs, err := ReadConversations(testCtx(t), home)
	if err == nil || cs != nil {
		t.Fatalf("garbage read as %v", cs)
	}
	if !bytes.Contains([]byte(err.Error()), []byte("not a database")) || !bytes.Contains([]byte(err.Error()), []byte(path)) {
		t.Errorf("the error does not say what is wrong: %v", err)
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, garbage) {
		t.Errorf("the file changed: %v", err)
	}
	if got := files(t, home); len(got) != 1 {
		t.Errorf("files beside it: %v", got)
	}
}

// migrated makes a database at schema version v, with a contact and a
// message where its schema has room for them.
func migrated(t *testing.T, v int) (home, path string) {
	t.Helper()
	home = t.TempDir()
	path = filepath.Join(home, DBFileName)
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := sqlitedb.Migrate(db, migrations[:v]); err != nil {
		t.Fatal(err)
	}
	return home, path
}

func userVersion(t *testing.T, path string) int {
	t.Helper()
	db, err := sqlitedb.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A database a newer program wrote, or one too old to have the list's
// columns, is refused with ErrSchemaVersion and not migrated; one older
// than this program that has them is read.
func TestReadConversationsSchemaVersions(t *testing.T) {
	ctx := testCtx(t)
	home, path := migrated(t, schemaVersion)
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = ReadConversations(ctx, home)
	var newer *sqlitedb.NewerSchemaError
	if !errors.Is(err, ErrSchemaVersion) || !errors.As(err, &newer) || newer.Version != 99 || newer.Known != schemaVersion {
		t.Errorf("a newer schema: %v", err)
	}

	home, path = migrated(t, 8) // before groups: no messages.grp
	if _, err := ReadConversations(ctx, home); !errors.Is(err, ErrSchemaVersion) || !bytes.Contains([]byte(err.Error()), []byte("has no column")) {
		t.Errorf("schema 8: %v", err)
	}
	if v := userVersion(t, path); v != 8 {
		t.Errorf("reading migrated the file to %d", v)
	}

	// Version 11 has every column the list needs; a column of a message
	// added later reads as none.
	home, path = migrated(t, 11)
	bob := stacktest.Identity("bob").PublicKey()
	db, err = sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC).UnixMilli()
	for _, q := range [][]any{
		{`INSERT INTO contacts (handle, key, enc_key, generation, sig_server, pin_seqno, pin_head, added_at, refreshed_at) VALUES ('bob@kez.test', ?, x'00', 0, '', 1, 'x', 0, 0)`, bob.String()},
		{`INSERT INTO messages (id, from_key, to_key, peer_key, peer_handle, incoming, sent_at, received_at, kind, body, trust, grp) VALUES (x'0102030405060708090a0b0c0d0e0f10', ?, ?, ?, 'bob@kez.test', 1, ?, ?, 'text', CAST('hi' AS BLOB), 'trusted', '')`,
			bob.String(), stacktest.Identity("alice").PublicKey().String(), bob.String(), at, at},
	} {
		if _, err := db.Exec(q[0].(string), q[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	cs, err := ReadConversations(ctx, home)
	if err != nil || len(cs) != 1 || cs[0].Peer != bob || cs[0].Unread != 1 || cs[0].Last == nil || cs[0].Last.Text() != "hi" {
		t.Errorf("schema 11: %+v, %v", cs, err)
	}
	if v := userVersion(t, path); v != 11 {
		t.Errorf("reading migrated the file to %d", v)
	}

	// Version 12 has no messages.read_at (13): read as never read.
	home, path = migrated(t, 12)
	db, err = sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	peer := stacktest.Identity("bob").PublicKey().String()
	if _, err := db.Exec(`INSERT INTO messages (id, incoming, peer_key, from_key, to_key, sent_at, received_at, kind, body, trust, state)
		VALUES (?, 1, ?, ?, ?, 1, 1, 'text', ?, 'request', '')`, make([]byte, 16), peer, peer, stacktest.Identity("alice").PublicKey().String(), []byte("hi")); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if cs, err := ReadConversations(ctx, home); err != nil || len(cs) != 1 || cs[0].Last == nil || cs[0].Last.Text() != "hi" || !cs[0].Last.ReadAt.IsZero() {
		t.Errorf("schema 12: %+v, %v", cs, err)
	}
	if v := userVersion(t, path); v != 12 {
		t.Errorf("reading migrated the file to %d", v)
	}
}

// ReadConversations on a database a client writes meanwhile sees each
// transaction whole: two peers' messages stored together are counted
// together, in every read.
func TestReadConversationsWhileWritten(t *testing.T) {
	c := openOffline(t, "alice")
	ctx := testCtx(t)
	ann, ben := stacktest.Identity("ann").PublicKey(), stacktest.Identity("ben").PublicKey()
	const rounds = 150
	done := make(chan error, 1)
	go func() {
		at := time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)
		for i := range rounds {
			err := c.db.write(ctx, func(tx *sql.Tx) error {
				for _, p := range []kez.PublicKey{ann, ben} {
					e := &Entry{ID: NewMessageID(), Incoming: true, Peer: p, From: p, To: c.me, SentAt: at.Add(time.Duration(i) * time.Second),
						ReceivedAt: at, Kind: KindText, Body: []byte("hi"), Trust: TrustRequest}
					if _, err := c.db.insertEntry(tx, e); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	reads := 0
	for finished := false; !finished; reads++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
		cs, err := ReadConversations(ctx, c.cc.Home)
		if err != nil {
			t.Fatal(err)
		}
		n := map[kez.PublicKey]int{}
		for _, cv := range cs {
			if !cv.Request || cv.Last == nil || cv.Last.Peer != cv.Peer {
				t.Fatalf("row %+v", cv)
			}
			n[cv.Peer] = cv.Unread
		}
		if n[ann] != n[ben] || (finished && n[ann] != rounds) {
			t.Fatalf("read %d saw %d and %d unread of one transaction's pairs", reads, n[ann], n[ben])
		}
	}
	if cs, err := c.Conversations(context.Background()); err != nil || len(cs) != 2 || cs[0].Unread != rounds {
		t.Errorf("the client's list: %+v, %v", cs, err)
	}
}

// FuzzReadConversations reads damaged databases: a real one with a
// conversation, mutated. Whatever the bytes, it returns rows or an error,
// and never writes the file.
func FuzzReadConversations(f *testing.F) {
	c, err := Open(context.Background(), Config{Client: client.Config{Identity: stacktest.Identity("alice"), Home: f.TempDir(), Domain: "kez.test"}})
	if err != nil {
		f.Fatal(err)
	}
	bob := stacktest.Identity("bob").PublicKey()
	storeEntries(f, c, asRequests(conversationOf(c.me, bob, 4, time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), "")))
	home := c.cc.Home
	if err := c.Close(); err != nil {
		f.Fatal(err)
	}
	real, err := os.ReadFile(filepath.Join(home, DBFileName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(real)
	f.Add(real[:len(real)/2])
	f.Add([]byte("SQLite format 3\x00"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		home := t.TempDir()
		path := filepath.Join(home, DBFileName)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		cs, err := ReadConversations(context.Background(), home)
		if err == nil {
			for _, cv := range cs {
				if cv.Group == "" && cv.Peer.IsZero() {
					t.Fatalf("a row names nobody: %+v", cv)
				}
			}
		}
		if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, b) {
			t.Fatalf("the file changed: %v", err)
		}
	})
}

// Reading a closed client's database leaves the file byte for byte as it
// was; the files SQLite's readers share beside it are the owner's only.
func TestReadConversationsLeavesTheFile(t *testing.T) {
	c := openOffline(t, "alice")
	bob := stacktest.Identity("bob").PublicKey()
	es := asRequests(conversationOf(c.me, bob, 9, time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC), ""))
	// Stored newest first, so that the order of storage is not the
	// display order.
	rev := slices.Clone(es)
	slices.Reverse(rev)
	storeEntries(t, c, rev)
	home := c.cc.Home
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home, DBFileName)
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ReadConversations(testCtx(t), home)
	if err != nil || len(cs) != 1 || cs[0].Peer != bob || !cs[0].Request || cs[0].Unread != 5 {
		t.Fatalf("%+v, %v", cs, err)
	}
	// The last three share their send time, sequence and arrival: the
	// newest is the last in the display order, by ID.
	if cs[0].Last.ID != es[8].ID {
		t.Errorf("last %s, want %s", cs[0].Last.ID, es[8].ID)
	}
	if after, err := os.ReadFile(path); err != nil || !bytes.Equal(after, before) {
		t.Errorf("the database changed: %v", err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm() != 0o600 {
			t.Errorf("%s is mode %v", p, st.Mode())
		}
	}
}

// asRequests makes the received messages among es requests: bob is no
// contact of the offline client, so his conversation is listed as one.
func asRequests(es []*Entry) []*Entry {
	for _, e := range es {
		if e.Incoming {
			e.Trust = TrustRequest
		}
	}
	return es
}
