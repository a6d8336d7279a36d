package chat

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// A device that lost its state (chat.db wiped mid-conversation) cannot
// decrypt what was sent in the old session: it says so, starts a new
// session at once, and the sender sends again everything without a
// receipt. Every message arrives, once.
func TestSessionResetLosesNothing(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	var mu sync.Mutex
	var notices []SessionReset
	onReset := func(c *Config) {
		c.OnSessionReset = func(r SessionReset) { mu.Lock(); notices = append(notices, r); mu.Unlock() }
	}
	alice := openClient(t, st, au)
	bobHome := filepath.Join(t.TempDir(), "bob")
	bob := openClientIn(t, st, bu, bobHome, onReset)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)

	delivered := func(want ...string) {
		t.Helper()
		receiveUntil(t, alice, "receipts", func(int) bool {
			h, err := alice.History(ctx, "bob", 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range h {
				if !e.Incoming && !e.DeliveredAt.IsZero() {
					got = append(got, e.Text())
				}
			}
			return slices.Equal(got, want)
		})
	}
	mustSend(t, alice, "bob", "a1")
	mustSend(t, alice, "bob", "a2")
	receiveN(t, bob, 2)
	delivered("a1", "a2")
	mustSend(t, bob, "alice", "b1")
	receiveN(t, alice, 1)
	// In flight when bob's state is lost: alice's receipt of b1, and a3.
	receiveUntil(t, alice, "the receipt of b1 sent", func(int) bool { return alice.Stats().ReceiptsSent >= 1 })
	mustSend(t, alice, "bob", "a3")

	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{DBFileName, DBFileName + "-wal", DBFileName + "-shm"} {
		if err := os.Remove(filepath.Join(bobHome, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	bob = openClientIn(t, st, bu, bobHome, onReset)
	mustAdd(t, bob, "alice")
	mustSend(t, alice, "bob", "a4") // in the old session: alice does not know yet

	receiveUntil(t, bob, "the undecryptable messages", func(int) bool { return bob.Stats().Undecryptable >= 3 })
	if s := bob.Stats(); s.SessionResets != 1 {
		t.Errorf("bob started %d new sessions, want 1", s.SessionResets)
	}
	mu.Lock()
	total := 0
	for _, r := range notices {
		if r.Peer != au.Key || r.Handle != au.Handle.String() || !r.Reset || !contains(r.String(), "could not be decrypted (session reset)") {
			t.Errorf("notice %+v: %s", r, r)
		}
		total += r.Count
	}
	mu.Unlock()
	if total != 3 {
		t.Errorf("the notices count %d undecryptable messages, want 3 (a receipt, a3, a4)", total)
	}

	// Alice takes bob's new session as a reset and sends again a3 and a4.
	receiveUntil(t, alice, "the resends", func(int) bool { return alice.Stats().Resent >= 2 })
	receiveN(t, bob, 2)
	delivered("a1", "a2", "a3", "a4")
	mustSend(t, alice, "bob", "a5")
	receiveN(t, bob, 1)
	mustSend(t, bob, "alice", "b2")
	receiveN(t, alice, 1)

	if in := mustInbox(t, bob, true); !slices.Equal(texts(in), []string{"a3", "a4", "a5"}) {
		t.Errorf("bob's inbox after the reset: %q", texts(in))
	}
	if in := mustInbox(t, alice, true); !slices.Equal(texts(in), []string{"b1", "b2"}) {
		t.Errorf("alice's inbox: %q", texts(in))
	}
	if s := alice.Stats(); s.Resent != 2 {
		t.Errorf("alice sent %d messages again, want 2", s.Resent)
	}
	if s := bob.Stats(); s.Duplicates != 0 || s.Rejected != 0 || s.Undecryptable != 3 {
		t.Errorf("bob's stats: %+v", s)
	}
	if n := countRows(t, bob, `SELECT COUNT(*) FROM undecryptable WHERE reset_due = 1`); n != 0 {
		t.Errorf("%d resets still due", n)
	}
	if n := countRows(t, alice, `SELECT COUNT(*) FROM resend_due`); n != 0 {
		t.Errorf("%d resends still due", n)
	}
}

// The first message of a session, to a prekey the recipient lost before
// it read it (its state folder wiped), is not lost either: the recipient
// starts a new session with a session-reset message, and the sender,
// though no message of the recipient's had been opened in its session,
// sends again what got no receipt.
func TestSessionResetOfUnansweredSession(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au)
	bobHome := filepath.Join(t.TempDir(), "bob")
	bob := openClientIn(t, st, bu, bobHome)
	mustAdd(t, alice, "bob")
	mustSend(t, alice, "bob", "first words")
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(bobHome); err != nil {
		t.Fatal(err)
	}
	bob = openClientIn(t, st, bu, bobHome)
	mustAdd(t, bob, "alice")
	receiveUntil(t, bob, "the undecryptable handshake", func(int) bool { return bob.Stats().Undecryptable >= 1 })
	if !contains(bob.log.String(), ErrUnknownSession.Error()) {
		t.Error("the log does not say the session is unknown")
	}
	receiveUntil(t, alice, "the resend", func(int) bool { return alice.Stats().Resent >= 1 })
	receiveN(t, bob, 1)
	if in := mustInbox(t, bob, true); !slices.Equal(texts(in), []string{"first words"}) {
		t.Errorf("bob's inbox: %q", texts(in))
	}
	if s := alice.Stats(); s.Received != 0 {
		t.Errorf("the session-reset message was stored: %+v", s)
	}
}

// A stored session state that no longer parses (damaged, or written by a
// newer program) does not stop receiving: it is deleted as lost, the
// message in it is undecryptable, and the reset brings it again.
func TestDamagedSessionStateRecovers(t *testing.T) {
	au, _, alice, bob := befriendedAfterOne(t)
	mustSend(t, bob, "alice", "hi")
	receiveN(t, alice, 1) // alice's next message is no handshake
	receiveUntil(t, bob, "the receipt sent", func(int) bool { return bob.Stats().ReceiptsSent >= 1 })
	damageSessions(t, bob, au.Key)
	mustSend(t, alice, "bob", "two")
	receiveUntil(t, bob, "the undecryptable message", func(int) bool { return bob.Stats().Undecryptable >= 1 })
	if !contains(bob.log.String(), "does not parse") {
		t.Error("the log does not say the state was damaged")
	}
	receiveUntil(t, alice, "the resend", func(int) bool { return alice.Stats().Resent >= 1 })
	receiveN(t, bob, 1)
	if in := mustInbox(t, bob, true); !slices.Equal(texts(in), []string{"one", "two"}) {
		t.Errorf("bob's inbox: %q", texts(in))
	}
}

// A sender whose only stored session with a peer no longer parses still
// sends: it starts a new session (a send used to fail for good, as the
// transaction that dropped the damaged state rolled back with the
// failure).
func TestDamagedSessionStateStillSends(t *testing.T) {
	_, bu, alice, bob := befriendedAfterOne(t)
	damageSessions(t, alice, bu.Key)
	mustSend(t, alice, "bob", "two")
	receiveUntil(t, bob, "the second message", func(int) bool {
		return slices.Contains(texts(mustInbox(t, bob, true)), "two")
	})
}
