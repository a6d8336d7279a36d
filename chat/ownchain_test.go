package chat

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go/jetstream"
)

// The user's own chain is pinned as a contact's is (docs/spec/chat.md
// §8.7): a sig-server that serves an older prefix of it, or a fork, after
// a restart is not believed. These tests run on a real stack whose
// sig-server's store is rewritten (stacktest.RewriteChain), behind a real
// HTTP proxy that also replays the prekey record a revoked device
// published before its revocation, as a dishonest sig-server can. The
// chat-server is never told of the revocations, so the broker would
// deliver to the revoked device: only the client's pin keeps it out.

// replayPrekeys is a real HTTP proxy in front of the stack's sig-server
// that answers the prekey fetches of dev with record.
func replayPrekeys(t testing.TB, st *stacktest.Stack, dev kez.PublicKey, record []byte) string {
	t.Helper()
	target, err := url.Parse(st.SigServerURL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == wire.PrekeysPath+dev.String() {
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(record)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// prekeyRecord returns the prekey record the sig-server holds for dev.
func prekeyRecord(t testing.TB, st *stacktest.Stack, dev kez.PublicKey) []byte {
	t.Helper()
	resp, err := http.Get(st.SigServerURL + wire.PrekeysPath + dev.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the prekey of %s: %d %v", dev, resp.StatusCode, err)
	}
	return b
}

// chainAt returns key's whole chain as the sig-server holds it.
func chainAt(t testing.TB, st *stacktest.Stack, key kez.PublicKey) []*sigchain.Link {
	t.Helper()
	links, err := (&sigchain.Client{BaseURL: st.SigServerURL}).Fetch(testCtx(t), key, 0)
	if err != nil {
		t.Fatal(err)
	}
	return links
}

// ownAttack is bob after ownChainAttack.
type ownAttack struct {
	st       *stacktest.Stack
	home     string      // the state folder of bob's primary install
	b        *testClient // bob's primary install, opened again
	phoneKey kez.PublicKey
	phone    *testClient
	served   []*sigchain.Link // bob's chain as the sig-server serves it
	pinned   []*sigchain.Link // as bob's primary install pinned it

	js      jetstream.JetStream
	subject string // the phone's inbox from bob's primary install
	before  uint64 // the messages stored on it before the restart
}

// ownChainAttack sets up bob: a primary install and two linked devices,
// phone and tablet, both revoked (each followed by a rotation) by the
// primary's client, whose state folder pins the chain. The primary's
// client is closed; serve(links, phone) is then what the sig-server holds
// as bob's chain (links: the chain as it was), and the primary's client
// opens again in the same folder, through a proxy that replays the
// phone's prekey.
func ownChainAttack(t *testing.T, serve func(t *testing.T, bob *stacktest.User, links []*sigchain.Link, phone kez.PublicKey) []*sigchain.Link) *ownAttack {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := testCtx(t)
	alice, bob := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	openClient(t, st, alice)
	phoneID := st.AddDevice(t, bob, "phone")
	tabletID := st.AddDevice(t, bob, "tablet")
	a := &ownAttack{st: st, phone: openDevice(t, st, bob, phoneID, "phone"), phoneKey: phoneID.PublicKey()}
	record := prekeyRecord(t, st, a.phoneKey)

	a.home = filepath.Join(t.TempDir(), "bob")
	b1 := openClientIn(t, st, bob, a.home)
	mustAdd(t, b1, "alice")
	// Revoked by the client, which does not tell the chat-server.
	for _, d := range []kez.PublicKey{tabletID.PublicKey(), a.phoneKey} {
		if rv, err := b1.RevokeDevice(ctx, d); err != nil || rv.Rotation == nil {
			t.Fatalf("revoking %s: %+v, %v", d, rv, err)
		}
	}
	a.pinned = chainAt(t, st, bob.Key)
	if n := countRows(t, b1, `SELECT COUNT(*) FROM own_chain_links`); n != len(a.pinned) {
		t.Fatalf("%d links of bob's own chain pinned, the chain has %d", n, len(a.pinned))
	}
	if err := b1.Close(); err != nil {
		t.Fatal(err)
	}
	// What the phone was sent before its revocation (the keys) is read.
	if _, err := a.phone.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	a.js, a.subject = st.JetStream(t), inboxPrefix+a.phoneKey.String()+"."+bob.Key.String()
	a.before = storedOn(t, a.js, a.subject)

	a.served = serve(t, bob, a.pinned, a.phoneKey)
	st.RewriteChain(t, bob.Key, a.served)
	lying := replayPrekeys(t, st, a.phoneKey, record)
	a.b = openClientIn(t, st, bob, a.home, func(c *Config) { c.Client.SigServerURL = lying })
	return a
}

// checkKept asserts what a client that found its own chain rewritten
// (want: sigchain.ErrRollback or ErrFork) does: it keeps the pinned
// chain, seals nothing to the devices that chain shows revoked, and
// appends nothing.
func (a *ownAttack) checkKept(t *testing.T, want error) {
	ctx := testCtx(t)
	b := a.b
	_, err := b.OwnChain(ctx)
	var rw *OwnChainRewrittenError
	if !errors.Is(err, ErrOwnChainRewritten) || !errors.Is(err, want) || !errors.As(err, &rw) {
		t.Fatalf("fetching the own chain from the lying sig-server: %v", err)
	}
	if head := a.pinned[len(a.pinned)-1]; rw.Pinned.Seqno != head.Seqno() || rw.Pinned.Head != head.ID() {
		t.Errorf("the error names the pin %d %s, the pinned head is %d %s", rw.Pinned.Seqno, rw.Pinned.Head, head.Seqno(), head.ID())
	}
	if !contains(b.log.String(), "older or a different history of your own chain") {
		t.Errorf("the client did not log the rewritten chain")
	}
	for _, d := range b.ownDevices(ctx, true) {
		if d.Key != b.me && !d.Revoked {
			t.Errorf("the device %s (%s) is current after the restart", d.Name, d.Key)
		}
	}

	mustSend(t, b, "alice", "after the restart")
	if _, err := b.DistributeKeys(ctx); !errors.Is(err, ErrOwnChainRewritten) {
		t.Errorf("distributing the keys on a rewritten chain: %v", err)
	}
	if _, err := b.RevokeDevice(ctx, b.me); !errors.Is(err, ErrOwnChainRewritten) {
		t.Errorf("revoking on a rewritten chain: %v", err)
	}
	if n := countRows(t, b, `SELECT COUNT(*) FROM peer_prekeys WHERE peer = ?`, a.phoneKey.String()); n != 0 {
		t.Errorf("the client fetched the revoked phone's prekey")
	}
	if n := countRows(t, b, `SELECT COUNT(*) FROM sessions WHERE peer = ?`, a.phoneKey.String()); n != 0 {
		t.Errorf("the client holds %d sessions with the revoked phone", n)
	}
	if n := countRows(t, b, `SELECT COUNT(*) FROM own_chain_links`); n != len(a.pinned) {
		t.Errorf("%d links pinned after the restart, %d before", n, len(a.pinned))
	}
	// Close waits for the background jobs (the distribution of keys,
	// which would rotate on the served chain): only then is the chain at
	// the sig-server final.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	now := chainAt(t, a.st, b.Key())
	if len(now) != len(a.served) || now[len(now)-1].ID() != a.served[len(a.served)-1].ID() {
		t.Errorf("the client appended to the served chain: %d links, %d served", len(now), len(a.served))
	}
	if n := storedOn(t, a.js, a.subject); n != a.before {
		t.Errorf("%d messages stored for the revoked phone after the restart, %d before", n, a.before)
	}
	if n, err := a.phone.Sync(ctx); err != nil || n != 0 {
		t.Errorf("the revoked phone received %d messages (%v)", n, err)
	}
}

// A sig-server that rolls bob's chain back to before the phone's
// revocation (and before the rotation that followed the tablet's, so a
// rotation is due on what it serves).
func TestOwnChainRollbackKeepsPin(t *testing.T) {
	a := ownChainAttack(t, func(t *testing.T, _ *stacktest.User, links []*sigchain.Link, _ kez.PublicKey) []*sigchain.Link {
		// …, add phone, add tablet, revoke tablet | set key 1, revoke phone, set key 2
		return links[:len(links)-3]
	})
	a.checkKept(t, sigchain.ErrRollback)

	// A program that opens no client (files) checks the same pin.
	ctx := testCtx(t)
	bob := a.b.user
	cfg := client.Config{Identity: bob.Identity, Home: a.home, SigServerURL: a.st.SigServerURL}
	if _, err := FetchOwnChain(ctx, cfg); !errors.Is(err, ErrOwnChainRewritten) || !errors.Is(err, sigchain.ErrRollback) {
		t.Fatalf("FetchOwnChain from the rolled back sig-server: %v", err)
	}
	// The sig-server gets the chain back: the pin holds again, and the
	// client acts on its chain again.
	a.st.RewriteChain(t, bob.Key, a.pinned)
	if st, err := FetchOwnChain(ctx, cfg); err != nil || st.Pin() != (sigchain.Pin{Key: bob.Key, Seqno: uint64(len(a.pinned)), Head: a.pinned[len(a.pinned)-1].ID()}) {
		t.Fatalf("FetchOwnChain once the chain is back: %v", err)
	}
	b := openClientIn(t, a.st, bob, a.home)
	if _, err := b.OwnChain(ctx); err != nil {
		t.Fatalf("the own chain once it is back: %v", err)
	}
	if _, err := b.DistributeKeys(ctx); err != nil {
		t.Fatalf("distributing the keys once the chain is back: %v", err)
	}
}

// A sig-server that serves a fork of bob's chain signed by his key (links
// it kept from another install's attempt, say): after the rotation that
// followed the tablet's revocation, a laptop added and revoked instead of
// the phone's revocation, so the phone is current and a rotation due on
// what it serves.
func TestOwnChainForkKeepsPin(t *testing.T) {
	a := ownChainAttack(t, func(t *testing.T, bob *stacktest.User, links []*sigchain.Link, phone kez.PublicKey) []*sigchain.Link {
		out := slices.Clone(links[:len(links)-2])
		state, err := sigchain.Verify(out)
		if err != nil {
			t.Fatal(err)
		}
		laptop, req := stacktest.NewDeviceRequest(t, "laptop")
		for _, x := range []struct {
			typ  string
			body []byte
		}{{sigchain.TypeAddDevice, sigchain.AddDeviceBody(req)}, {sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(laptop.PublicKey())}} {
			l, err := sigchain.NewLink(bob.Identity, state, x.typ, x.body, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if state, err = state.Extend([]*sigchain.Link{l}); err != nil {
				t.Fatal(err)
			}
			out = append(out, l)
		}
		if !state.RotationDue() || !state.IsCurrentDevice(phone) {
			t.Fatal("the fork does not show the phone current and a rotation due")
		}
		return out
	})
	a.checkKept(t, sigchain.ErrFork)
}

// A state folder given another identity (kez init --force) pins the new
// person's chain anew instead of refusing to open.
func TestOwnChainOtherIdentityPinnedAnew(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	home := filepath.Join(t.TempDir(), "home")
	a := openClientIn(t, st, alice, home)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := openClientIn(t, st, bob, home)
	got, err := b.OwnChain(testCtx(t))
	if err != nil || got.Key() != bob.Key {
		t.Fatalf("bob's chain in alice's old folder: %v", err)
	}
	if n := countRows(t, b, `SELECT COUNT(*) FROM own_chain_links`); n != int(got.Seqno()) {
		t.Fatalf("%d links pinned, bob's chain has %d", n, got.Seqno())
	}
}

// A fetch of the user's own chain waits for another (or for an append,
// which may take several requests to the sig-server) only as long as its
// context lets it: the receive path, which checks a new device of the
// user's within RefreshTimeout, is not held up by a slow rotation.
func TestOwnChainPinWaitBoundedByContext(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	a := openClient(t, st, st.NewUser(t, "alice"))
	if err := a.ownPin.lock(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := a.fetchOwnChain(ctx)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("fetch while the pin is busy: %v, want the context's deadline", err)
		}
	case <-time.After(10 * time.Second):
		a.ownPin.unlock()
		<-done
		t.Fatal("a fetch of the own chain waited past its context for the pin")
	}
	a.ownPin.unlock()
	if _, err := a.fetchOwnChain(testCtx(t)); err != nil {
		t.Fatalf("fetch once the pin is free: %v", err)
	}
}
