package chat

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/session"
)

// A hostile sig-server that served bob's prekey record once (when alice
// added him) and then says it has none cannot downgrade alice's first
// message to format v1: alice keeps the record she verified and starts
// the session with it while it is valid.
func TestWithheldPrekeyAfterOneSeenNoDowngrade(t *testing.T) {
	var withhold atomic.Bool
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if withhold.Load() && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, wire.PrekeysPath) {
				http.NotFound(w, r)
				return
			}
			h.ServeHTTP(w, r)
		})
	}})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	bob := openClient(t, st, bu)
	alice := openClient(t, st, au)
	mustAdd(t, alice, "bob")
	if n := countRows(t, alice, `SELECT COUNT(*) FROM peer_prekeys WHERE peer = ?`, bu.Key.String()); n != 1 {
		t.Fatalf("alice keeps %d prekey records of bob, want 1", n)
	}
	withhold.Store(true)
	mustSend(t, alice, "bob", "first")
	if f := deliver(t, bob, 1); len(f) != 1 || f[0] != "v2 handshake" {
		t.Fatalf("bob got %q, want a v2 handshake", f)
	}
}

// A contact that starts session after session (each handshake, while a
// session with them is established, stands for a reset) cannot make the
// victim publish its messages without a receipt again and again: they are
// sent again once, and a later resend waits for resendInterval.
func TestRepeatedHandshakesResendOnce(t *testing.T) {
	bob, mallory, toBob := malloryGreetedBob(t)
	// Three messages mallory never receipts (she never receives).
	const unreceipted = 3
	for range unreceipted {
		mustSend(t, bob, "mallory", "unreceipted")
	}
	const handshakes = 6
	for i := range handshakes {
		mustPublishRaw(t, mallory, toBob, sealV2In(t, mallory, "bob", "again "+string(rune('a'+i)), true))
		receiveN(t, bob, 1) // one batch each: a resend is asked each time
	}
	if s := bob.Stats(); s.Resent != unreceipted {
		t.Errorf("bob sent %d messages again after %d handshakes, want %d (once)", s.Resent, handshakes, unreceipted)
	}
	if !contains(bob.log.String(), "done a minute later") {
		t.Error("the log does not say a resend was put off")
	}
}

// A sig-server that serves an older record of bob's, still valid, after
// alice kept a newer one, does not roll her back: the newer one is used.
func TestOlderPrekeyRecordLosesToKept(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	openClient(t, st, bu) // publishes bob's record, made now
	alice := openClient(t, st, au)
	ct := mustAdd(t, alice, "bob")
	ctx := context.Background()
	newer, err := session.NewPrekey(nil, bu.Identity, 7, time.Now().Add(time.Minute), 14*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.db.savePeerPrekey(ctx, &newer.Public, time.Now()); err != nil {
		t.Fatal(err)
	}
	got, err := alice.fetchPrekey(ctx, contactTarget(ct))
	if err != nil || got == nil || got.ID != 7 {
		t.Fatalf("alice starts with %+v (%v), want the newer record she kept", got, err)
	}
}

// A message already sealed again maxResendsPerMessage times is not sent
// again after a further reset: a contact who never sends receipts and
// starts a session every minute cannot keep this client republishing it.
func TestResendsPerMessageBounded(t *testing.T) {
	bob, mallory, toBob := malloryGreetedBob(t)
	mustSend(t, bob, "mallory", "worn out")
	mustSend(t, bob, "mallory", "fresh")
	if _, err := bob.db.db.Exec(`UPDATE messages SET resends = ? WHERE incoming = 0 AND body = ?`, maxResendsPerMessage, []byte("worn out")); err != nil {
		t.Fatal(err)
	}
	mustPublishRaw(t, mallory, toBob, sealV2In(t, mallory, "bob", "again", true))
	receiveN(t, bob, 1)
	if s := bob.Stats(); s.Resent != 1 {
		t.Errorf("bob sent %d messages again, want 1 (the one not yet sent again %d times)", s.Resent, maxResendsPerMessage)
	}
}

// malloryGreetedBob starts a stack with two clients, bob and mallory, each
// the other's contact, and has bob store mallory's first message, the
// handshake of a session. toBob is the subject mallory publishes to bob on.
func malloryGreetedBob(t *testing.T) (bob, mallory *testClient, toBob string) {
	t.Helper()
	st := stacktest.Start(t, stacktest.Options{})
	bu, mu := st.NewUser(t, "bob"), st.NewUser(t, "mallory")
	bob, mallory = openClient(t, st, bu), openClient(t, st, mu)
	mustAdd(t, bob, "mallory")
	mustAdd(t, mallory, "bob")
	toBob = sendSubject(bu.Key, mu.Key)
	mustPublishRaw(t, mallory, toBob, sealV2(t, mallory, "bob", "hello"))
	receiveN(t, bob, 1)
	return bob, mallory, toBob
}
