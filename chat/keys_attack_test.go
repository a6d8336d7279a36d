package chat

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Attacks on the distribution of the person's encryption keys and on the
// sync messages to a device revoked while they are sent
// (docs/spec/chat.md §8.6, §9), on a real stack.

// flakySigServer is a real HTTP proxy in front of the stack's sig-server
// that answers 503 to the next chain fetches it is told to fail, as a
// sig-server that a network drops now and then does.
type flakySigServer struct {
	URL  string
	fail atomic.Int32
}

func newFlakySigServer(t testing.TB, st *stacktest.Stack) *flakySigServer {
	t.Helper()
	target, err := url.Parse(st.SigServerURL)
	if err != nil {
		t.Fatal(err)
	}
	f := &flakySigServer{}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, wire.ChainsPath) && f.fail.Add(-1) >= 0 {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.URL = srv.URL
	return f
}

// A device revoked, and the key rotated, by another install of the person
// while this one still holds the chain from before: the history transfer
// to it checks the device on that chain (its fetch failed, so the list
// known is used), but the keys it sends come from a fresh fetch. They
// must not be the generation the rotation published for the devices
// that remain.
func TestKeysNotSentToDeviceRevokedMeanwhile(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := testCtx(t)
	bob := st.NewUser(t, "bob")
	phoneKey := st.AddDevice(t, bob, "phone")
	phone := openDevice(t, st, bob, phoneKey, "phone")
	flaky := newFlakySigServer(t, st)
	primary := openClient(t, st, bob, func(c *Config) { c.Client.SigServerURL = flaky.URL })
	// The primary install sends the phone generation 0 when it starts.
	waitKey(t, phone, 0)
	if n, err := primary.DistributeKeys(ctx); err != nil || n != 0 {
		t.Fatalf("distribution after the start: %d, %v", n, err)
	}

	// Another install of bob's revokes the phone and rotates; the
	// chat-server has not been told yet.
	st.AppendLink(t, bob, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(phoneKey.PublicKey()))
	st.AppendLink(t, bob, sigchain.TypeSetEncryptionKey, sigchain.SetEncryptionKeyBody(bob.Identity.EncryptionKey(1).PublicKey(), 1))

	flaky.fail.Store(1)
	_, err := primary.SendHistory(ctx, phoneKey.PublicKey(), HistoryOptions{MaxWait: 5 * time.Second})
	if !errors.Is(err, ErrNotOwnDevice) {
		t.Fatalf("history and keys to a device revoked meanwhile: %v", err)
	}
	if _, err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	phone.applyQueuedKeys(ctx)
	if _, q := storedKeys(t, phone); q != 0 || phone.EncryptionKey(1) != nil {
		t.Fatalf("the revoked phone got generation 1 (%d bodies queued)", q)
	}
}

// seedNoise stores n messages of incompressible text in c's history, so
// that a history transfer takes several chunks.
func seedNoise(t *testing.T, c *testClient, peer kez.PublicKey, n int) {
	t.Helper()
	err := c.db.write(testCtx(t), func(tx *sql.Tx) error {
		for i := range n {
			raw := make([]byte, 1500)
			rand.Read(raw)
			at := t0.Add(time.Duration(i) * time.Second)
			e := &Entry{ID: NewMessageID(), Incoming: true, Peer: peer, From: peer, To: c.Key(), SentAt: at, ReceivedAt: at,
				Kind: KindText, Body: []byte(hex.EncodeToString(raw)), Trust: TrustTrusted, Read: true}
			if _, err := c.db.insertEntry(tx, e); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A device revoked while its history is being sent gets no chunk after
// the revocation, even before the chat-server is told: the session with
// it is gone, and its prekey (which the sig-server no longer serves) is
// not used from the copy kept to start a new one.
func TestHistoryStopsAtRevocation(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := testCtx(t)
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	phoneKey := st.AddDevice(t, au, "phone")
	phone := openDevice(t, st, au, phoneKey, "phone")
	alice := openClient(t, st, au)
	const n = 200
	seedNoise(t, alice, bu.Key, n)

	var revokeErr error
	stats, err := alice.SendHistory(ctx, phoneKey.PublicKey(), HistoryOptions{MaxWait: 5 * time.Second, Progress: func(s HistoryStats) {
		if s.Chunks == 1 {
			_, revokeErr = alice.RevokeDevice(ctx, phoneKey.PublicKey())
		}
	}})
	if revokeErr != nil {
		t.Fatal(revokeErr)
	}
	if !errors.Is(err, ErrNotOwnDevice) || stats.Chunks != 1 {
		t.Fatalf("the transfer went on after the revocation: %d chunks, %v", stats.Chunks, err)
	}
	if _, err := phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, phone, `SELECT COUNT(*) FROM messages`); got == 0 || got >= n {
		t.Fatalf("the revoked phone holds %d of the %d messages", got, n)
	}
	if phone.EncryptionKey(1) != nil {
		t.Fatal("the revoked phone got generation 1")
	}
}
