package chat

import (
	"path/filepath"
	"testing"

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
	mustSend(t, alice, "bob", "before")
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

	mustSend(t, bob, "alice", "after")
	receiveUntil(t, restored, "bob's message", func(int) bool {
		return countRows(t, restored, `SELECT COUNT(*) FROM messages WHERE body = ?`, []byte("after")) == 1
	})
}
