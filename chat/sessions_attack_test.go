package chat

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
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
	st := stacktest.Start(t, stacktest.Options{})
	bu, mu := st.NewUser(t, "bob"), st.NewUser(t, "mallory")
	bob, mallory := openClient(t, st, bu), openClient(t, st, mu)
	mustAdd(t, bob, "mallory")
	mustAdd(t, mallory, "bob")
	toBob := sendSubject(bu.Key, mu.Key)
	mustPublishRaw(t, mallory, toBob, sealV2(t, mallory, "bob", "hello"))
	receiveN(t, bob, 1)
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
