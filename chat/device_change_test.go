package chat

import (
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/session"
)

// A state folder whose install becomes another device of the same person
// ("kez recover --force" makes a new device key in place) keeps its
// history and contacts, drops the old device's prekeys and sessions, and
// works as the new device: it publishes its own prekey, so a contact's
// message reaches it. Before, the old device's prekeys made every
// rotation fail (session.ErrRingOwner) and the new device never published
// one.
func TestFolderTakenOverByNewDevice(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	home := filepath.Join(t.TempDir(), "alice")
	alice := openClientIn(t, st, au, home)
	// bob checks alice's chain on every message, so that he seals to her
	// new device at once.
	bob := openClient(t, st, bu, func(c *Config) { c.RefreshInterval = -1 })
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	before := mustSend(t, alice, "bob", "before")
	// Two envelopes the old device sealed and never published: a copy of
	// a sent message (due again after the takeover) and a receipt (not
	// kept in the history: dropped).
	receipt := NewMessageID()
	err := alice.db.write(testCtx(t), func(tx *sql.Tx) error {
		for _, id := range []MessageID{before.ID, receipt} {
			if _, err := tx.Exec(`INSERT INTO outbox (msg_id, device, envelope, publish_id, counts, created_at) VALUES (?, ?, x'00', 'x', 1, ?)`,
				id[:], bu.Key.String(), time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}

	dev := st.AddDevice(t, au, "restored")
	restored := openClientIn(t, st, au, home, func(c *Config) { c.Client.Device = dev })
	if !contains(restored.log.String(), "sessions and prekeys of the one before were dropped") {
		t.Fatalf("no word of the takeover in the log:\n%s", restored.log.String())
	}
	if n := countRows(t, restored, `SELECT COUNT(*) FROM messages WHERE body = ?`, []byte("before")); n != 1 {
		t.Fatalf("the history went with the old device: %d", n)
	}
	keys := func() []string {
		rows, err := restored.db.db.Query(`SELECT private FROM prekeys`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var owners []string
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				t.Fatal(err)
			}
			k, err := session.ParsePrekeyPrivate(b)
			if err != nil {
				t.Fatal(err)
			}
			owners = append(owners, k.Public.Owner.String())
		}
		return owners
	}()
	if len(keys) != 1 || keys[0] != dev.PublicKey().String() {
		t.Fatalf("prekeys of %v, want only the new device's %s", keys, dev.PublicKey())
	}

	if n := countRows(t, restored, `SELECT COUNT(*) FROM outbox`); n != 0 {
		t.Fatalf("%d envelopes of the old device left to publish", n)
	}
	if n := countRows(t, restored, `SELECT COUNT(*) FROM copies_due WHERE msg_id = ? AND device = ? AND person = ? AND counts = 1`,
		before.ID[:], bu.Key.String(), bu.Key.String()); n != 1 {
		t.Fatalf("the sent message's unpublished copy is not due again (%d)", n)
	}
	if n := countRows(t, restored, `SELECT COUNT(*) FROM copies_due WHERE msg_id = ?`, receipt[:]); n != 0 {
		t.Fatal("a receipt became a copy due")
	}

	mustSend(t, bob, "alice", "after")
	receiveUntil(t, restored, "bob's message", func(int) bool {
		return countRows(t, restored, `SELECT COUNT(*) FROM messages WHERE body = ?`, []byte("after")) == 1
	})
}
