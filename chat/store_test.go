package chat

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
)

// offlineClient opens a client with no servers: history and contacts only.
func offlineClient(t *testing.T, home string) *Client {
	t.Helper()
	c, err := Open(context.Background(), Config{Client: client.Config{Identity: vectorid.Identity(t, "bob"), Home: home}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestStoreSchemaVersion(t *testing.T) {
	home := t.TempDir()
	c := offlineClient(t, home)
	var v int
	if err := c.db.db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil || v != schemaVersion {
		t.Fatalf("user_version %d, %v", v, err)
	}
	c.Close()
	// Reopening an up-to-date file migrates nothing and works.
	offlineClient(t, home).Close()

	db, err := sql.Open("sqlite", filepath.Join(home, DBFileName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(context.Background(), Config{Client: client.Config{Identity: vectorid.Identity(t, "bob"), Home: home}})
	if err == nil || !strings.Contains(err.Error(), "schema version 99") || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("a newer schema: %v", err)
	}
}

// History and the inbox order a conversation by the signed send time, then
// by stream sequence, whatever order the messages were stored in; the
// inbox shows each message once.
func TestHistoryOrderAndInbox(t *testing.T) {
	c := offlineClient(t, t.TempDir())
	ctx := context.Background()
	alice, carol := vectorid.Identity(t, "alice").PublicKey(), vectorid.Identity(t, "carol").PublicKey()
	base := time.UnixMilli(1_780_000_000_000)
	mk := func(from, to string, sent time.Duration, seq uint64, text string) *Entry {
		e := &Entry{ID: NewMessageID(), Incoming: true, Peer: alice, From: alice, To: c.me, SentAt: base.Add(sent), ReceivedAt: base,
			Kind: KindText, Body: []byte(text), Seq: seq, Trust: TrustTrusted}
		if from == "carol" {
			e.Peer, e.From = carol, carol
		}
		if from == "me" {
			e.Incoming, e.From, e.To, e.Read, e.State = false, c.me, alice, true, StateSent
		}
		return e
	}
	es := []*Entry{
		mk("alice", "me", 3*time.Second, 10, "third"),
		mk("alice", "me", time.Second, 9, "first"),
		mk("me", "alice", 2*time.Second, 8, "second (mine)"),
		mk("alice", "me", 3*time.Second, 8, "third, earlier in the stream"),
		mk("carol", "me", 0, 1, "carol's"),
	}
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		for _, e := range es {
			if isNew, err := c.db.insertEntry(tx, e); err != nil || !isNew {
				t.Errorf("insert %q: new %v, %v", e.Body, isNew, err)
			}
		}
		// The same sender and ID again is not new.
		isNew, err := c.db.insertEntry(tx, es[0])
		if isNew || err != nil {
			t.Errorf("duplicate insert: new %v, %v", isNew, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.History(ctx, alice.String(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"first", "second (mine)", "third, earlier in the stream", "third"}; !slices.Equal(texts(h), want) {
		t.Errorf("history %q, want %q", texts(h), want)
	}
	if h, _ := c.History(ctx, alice.String(), 2); !slices.Equal(texts(h), []string{"third, earlier in the stream", "third"}) {
		t.Errorf("last two: %q", texts(h))
	}
	if _, err := c.History(ctx, "dave@kez.test", 0); err == nil {
		t.Error("history of a non-contact handle")
	}
	un, err := c.Unread(ctx)
	if err != nil || len(un) != 4 {
		t.Fatalf("unread: %d, %v", len(un), err)
	}
	first := mustInboxOf(t, c, false)
	if want := []string{"carol's", "first", "third, earlier in the stream", "third"}; !slices.Equal(texts(first), want) {
		t.Errorf("inbox %q, want %q", texts(first), want)
	}
	if again := mustInboxOf(t, c, false); len(again) != 0 {
		t.Errorf("the inbox shows %q again", texts(again))
	}
	if all := mustInboxOf(t, c, true); len(all) != 4 || !all[0].Read {
		t.Errorf("inbox --all: %+v", all)
	}
	if e, err := c.Message(ctx, alice, es[1].ID); err != nil || e.Text() != "first" || !e.Read || e.Seq != 9 || !e.SentAt.Equal(es[1].SentAt) {
		t.Errorf("message: %+v, %v", e, err)
	}
}

func mustInboxOf(t *testing.T, c *Client, all bool) []*Entry {
	t.Helper()
	es, err := c.Inbox(context.Background(), all)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// A write queued when the client closes is committed, not lost.
func TestStoreCloseCommitsQueuedWrites(t *testing.T) {
	home := t.TempDir()
	c := offlineClient(t, home)
	alice := vectorid.Identity(t, "alice").PublicKey()
	done := make(chan error, 100)
	for i := 0; i < 100; i++ {
		e := &Entry{ID: NewMessageID(), Incoming: true, Peer: alice, From: alice, To: c.me, SentAt: time.UnixMilli(int64(i)), ReceivedAt: time.Now(), Kind: KindText, Body: []byte("x"), Trust: TrustTrusted}
		c.db.writeAsync(func(tx *sql.Tx) error { _, err := c.db.insertEntry(tx, e); return err }, func(err error) { done <- err })
	}
	c.Close()
	for i := 0; i < 100; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	c2 := offlineClient(t, home)
	if un, err := c2.Unread(context.Background()); err != nil || len(un) != 100 {
		t.Fatalf("after reopening: %d, %v", len(un), err)
	}
	c2.Close()
	c2.db.writeAsync(func(*sql.Tx) error { return nil }, func(err error) { done <- err })
	if err := <-done; err != ErrClosed {
		t.Errorf("write after close: %v", err)
	}
}

// The history is as private as the identity: chat.db is created 0600.
func TestStoreFileIsPrivate(t *testing.T) {
	home := t.TempDir()
	offlineClient(t, home)
	st, err := os.Stat(filepath.Join(home, "chat.db"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := st.Mode().Perm(); perm != 0o600 {
		t.Fatalf("chat.db has mode %o, want 600", perm)
	}
}

// A chat.db others could read (made by hand, or copied with a loose
// umask) is made private again when it is opened: it holds the session
// states and the private prekeys.
func TestStoreFileMadePrivate(t *testing.T) {
	home := t.TempDir()
	offlineClient(t, home).Close()
	if err := os.Chmod(filepath.Join(home, DBFileName), 0o644); err != nil {
		t.Fatal(err)
	}
	// A -wal file left by a process that crashed (empty: nothing to replay).
	if err := os.WriteFile(filepath.Join(home, DBFileName+"-wal"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c := offlineClient(t, home)
	if v, err := c.db.getMeta(context.Background(), "none"); err != nil || v != "" {
		t.Fatalf("the database after it was made private: %q, %v", v, err)
	}
	for _, f := range []string{DBFileName, DBFileName + "-wal"} {
		st, err := os.Stat(filepath.Join(home, f))
		if err != nil {
			t.Fatal(err)
		}
		if perm := st.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s has mode %o after opening, want 600", f, perm)
		}
	}
}
