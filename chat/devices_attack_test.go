package chat

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// replayDevice makes the sig-server show onto's chain with an add_device
// of dev, a device of victim's: the link request dev signed, copied from
// victim's chain (a link request names no person), counter-signed by
// onto's key; with revoke, a revoke_device of it follows. An honest
// sig-server refuses a device another chain holds; this is a dishonest
// one (or one of another domain, which does not know victim's chain).
func replayDevice(t testing.TB, st *stacktest.Stack, victim *stacktest.User, dev kez.PublicKey, onto *stacktest.User, revoke bool) {
	t.Helper()
	ctx := testCtx(t)
	sc := &sigchain.Client{BaseURL: st.SigServerURL}
	vlinks, err := sc.Fetch(ctx, victim.Key, 0)
	if err != nil {
		t.Fatal(err)
	}
	var req *sigchain.LinkRequest
	for _, l := range vlinks {
		if l.Type() != sigchain.TypeAddDevice {
			continue
		}
		ch, err := sigchain.VerifyDeviceLink(l.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if ch.Device == dev {
			req = ch.Request
		}
	}
	if req == nil {
		t.Fatalf("%s's chain does not add %s", victim.Name, dev)
	}
	links, err := sc.Fetch(ctx, onto.Key, 0)
	if err != nil {
		t.Fatal(err)
	}
	state, err := sigchain.Verify(links)
	if err != nil {
		t.Fatal(err)
	}
	add, err := sigchain.NewLink(onto.Identity, state, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	links = append(links, add)
	if revoke {
		if state, err = sigchain.Verify(links); err != nil {
			t.Fatal(err)
		}
		rv, err := sigchain.NewLink(onto.Identity, state, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(dev), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		links = append(links, rv)
	}
	if _, err := sigchain.Verify(links); err != nil {
		t.Fatalf("the replayed chain does not verify: %v", err)
	}
	st.RewriteChain(t, onto.Key, links)
}

// A device two contacts' chains both list (mallory's sig-server serves
// her chain with bob's phone replayed on it) is no one's: its messages
// are refused and logged, never stored as mallory's (or bob's), and
// nothing is sealed to it, whichever contact was added first.
func TestDevicesListedByTwoContactsRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, mallory := newPerson(t, st, "alice", 1), newPerson(t, st, "bob", 2), newPerson(t, st, "mallory", 1)
	a, b1, phone := alice.devices[0], bob.devices[0], bob.devices[1]
	ctx := testCtx(t)
	replayDevice(t, st, bob.user, phone.DeviceKey(), mallory.user, false)
	mustAdd(t, a, "bob")
	mct := mustAdd(t, a, "mallory")
	if len(mct.Devices) != 2 || mct.Devices[1].Key != phone.DeviceKey() {
		t.Fatalf("mallory's chain as alice pinned it: %+v", mct.Devices)
	}
	mustAdd(t, b1, "alice")
	waitContact(t, phone, "alice", func(*Contact) bool { return true })

	mustSend(t, phone, "alice", "from bob's phone")
	receiveUntil(t, a, "the message of the device two chains list refused", func(int) bool { return a.Stats().Rejected >= 1 })
	for _, h := range []string{"bob", "mallory"} {
		if es, err := a.History(ctx, h, 0); err != nil || len(es) != 0 {
			t.Errorf("alice stored %d messages under %s: %v", len(es), h, err)
		}
	}
	if !contains(a.log.String(), ErrDeviceAmbiguous.Error()) {
		t.Error("the log does not say why the message was refused")
	}
	// Nothing is sealed to it, to either of them.
	mustSend(t, a, "bob", "to bob")
	mustSend(t, a, "mallory", "to mallory")
	if n := countRows(t, a, `SELECT COUNT(*) FROM sessions WHERE peer = ?`, phone.DeviceKey().String()); n != 0 {
		t.Errorf("alice sealed to the device two chains list (%d sessions)", n)
	}
	receiveN(t, b1, 1)

	// The same after a restart (the index is rebuilt from chat.db).
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = openClientIn(t, st, alice.user, a.cfg.Client.Home)
	mustSend(t, phone, "alice", "again")
	receiveUntil(t, a, "the second message refused", func(int) bool { return a.Stats().Rejected >= 1 })
	if es, err := a.History(ctx, "mallory", 0); err != nil || len(es) != 1 || es[0].Incoming {
		t.Errorf("alice's history with mallory after the restart: %v, %v", es, err)
	}
}

// A contact's chain listing one of the user's own devices (mallory
// replays alice's phone on her chain, then "revokes" it there) changes
// nothing about it: it stays alice's, her sessions with it are kept, its
// and its sync messages are taken.
func TestDevicesOwnDeviceOnContactChain(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, mallory := newPerson(t, st, "alice", 2), newPerson(t, st, "bob", 1), newPerson(t, st, "mallory", 1)
	a1, a2 := alice.devices[0], alice.devices[1]
	ctx := testCtx(t)
	mustAdd(t, a1, "bob")
	waitContact(t, a2, "bob", func(*Contact) bool { return true })
	mustAdd(t, bob.devices[0], "alice")
	own := a2.DeviceKey()
	sessionIDs := func() string {
		var ids string
		if err := a1.db.db.QueryRow(`SELECT COALESCE(group_concat(hex(id)), '') FROM sessions WHERE peer = ?`, own.String()).Scan(&ids); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	before := sessionIDs()
	if before == "" {
		t.Fatal("alice's primary has no session with her phone")
	}

	replayDevice(t, st, alice.user, own, mallory.user, true)
	mustAdd(t, a1, "mallory")
	if after := sessionIDs(); after != before {
		t.Errorf("pinning mallory dropped alice's session with her own phone (sessions %s, before %s)", after, before)
	}
	waitContact(t, a2, "mallory", func(*Contact) bool { return true })

	s := mustSend(t, a2, "bob", "sent from alice's phone")
	receiveUntil(t, a1, "the sent copy from her phone", func(int) bool {
		e, err := a1.Message(ctx, alice.user.Key, s.ID)
		return err == nil && !e.Incoming
	})
	if r := a1.Stats().Rejected; r != 0 {
		t.Errorf("alice's primary refused %d messages of her own phone", r)
	}
	mustSend(t, a1, "mallory", "to mallory")
	receiveUntil(t, a2, "the sent copy to mallory", func(int) bool {
		h, err := a2.History(ctx, "mallory", 0)
		return err == nil && len(h) == 1
	})
	if r := a2.Stats().Rejected; r != 0 {
		t.Errorf("alice's phone refused %d messages", r)
	}
}

// A device of the user's, revoked on their chain (and not yet at the
// chat-server, which still lets it in), is refused once the chain this
// client holds is due for a refresh: its sync messages (a sent copy it
// claims) are not taken on the strength of the devices known before.
func TestDevicesRevokedOwnDeviceRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := newPerson(t, st, "alice", 3, func(c *Config) { c.RefreshInterval = -1 })
	bob := newPerson(t, st, "bob", 1)
	a1, stolen := alice.devices[0], alice.devices[2]
	ctx := testCtx(t)
	mustAdd(t, a1, "bob")
	mustAdd(t, bob.devices[0], "alice")
	waitContact(t, stolen, "bob", func(*Contact) bool { return true })
	mustSend(t, a1, "bob", "before")

	// Revoked on the chain only.
	l := deviceLink(t, st, alice.user, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(stolen.DeviceKey()))
	if err := (&sigchain.Client{BaseURL: st.SigServerURL}).Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	forged := Message{Kind: KindSyncSent, Body: marshalSyncSent(bob.user.Key, &Message{Kind: KindText, Body: []byte("I never sent this")})}
	if _, err := stolen.publishIn(ctx, []target{stolen.ownTarget(a1.DeviceKey())}, forged, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, a1, "the revoked device's sync message refused", func(int) bool { return a1.Stats().Rejected >= 1 })
	if h, err := a1.History(ctx, "bob", 0); err != nil || len(h) != 1 {
		t.Errorf("alice's history with bob: %d messages, %v", len(h), err)
	}
	if !contains(a1.log.String(), ErrDeviceRevoked.Error()) {
		t.Error("the log does not say why the message was refused")
	}
}

// The prekeys of a contact's devices are fetched at once, not one after
// the other: a contact listing many devices behind a sig-server that
// answers slowly costs a send one wait (RefreshTimeout), not one per
// device. The sig-server here answers no prekey request until it holds
// one for every device of bob's: sequential fetches would each time out.
func TestDevicesPrekeysFetchedTogether(t *testing.T) {
	const n = 8
	var gate struct {
		sync.Mutex
		keys    map[string]bool
		waiting map[string]bool
		all     chan struct{}
	}
	gate.all = make(chan struct{})
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			k, ok := strings.CutPrefix(r.URL.Path, "/v1/prekeys/")
			gate.Lock()
			watched := ok && r.Method == http.MethodGet && gate.keys[k]
			if watched && !gate.waiting[k] {
				gate.waiting[k] = true
				if len(gate.waiting) == len(gate.keys) {
					close(gate.all)
				}
			}
			gate.Unlock()
			if watched {
				select {
				case <-gate.all:
				case <-r.Context().Done():
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	}})
	a := newPerson(t, st, "alice", 1, func(c *Config) { c.RefreshTimeout = time.Second }).devices[0]
	bu := st.NewUser(t, "bob")
	ctx := testCtx(t)
	keys := map[string]bool{bu.Key.String(): true}
	for i := 1; i < n; i++ {
		dev := newDeviceWithPrekey(t, st, bu, fmt.Sprintf("bob-%d", i+1), uint32(i))
		keys[dev.PublicKey().String()] = true
	}
	openClient(t, st, bu)
	if ct := mustAdd(t, a, "bob"); len(ct.Devices) != n {
		t.Fatalf("bob has %d devices", len(ct.Devices))
	}
	// Pinning fetched the primary's prekey already: the gate watches the
	// first send.
	if _, err := a.db.db.Exec(`DELETE FROM peer_prekeys`); err != nil {
		t.Fatal(err)
	}
	gate.Lock()
	gate.keys, gate.waiting = keys, map[string]bool{}
	gate.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := a.Send(sctx, "bob", "to all of bob's devices"); err != nil {
		t.Fatal(err)
	}
	if got := countRows(t, a, `SELECT COUNT(*) FROM sessions`); got != n {
		t.Fatalf("the send sealed to %d of bob's %d devices", got, n)
	}
}

// A resend the stream refuses does not make a message sent before
// failed: bob (a contact) has one of his devices start a new session
// with alice, then revokes it at the chat-server before her resend to
// it arrives. What the stream stored for bob's other devices stands.
func TestDevicesRefusedResendKeepsSent(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPerson(t, st, "alice", 1), newPerson(t, st, "bob", 2)
	a, d := alice.devices[0], bob.devices[1]
	ctx := testCtx(t)
	mustAdd(t, a, "bob") // bob does not add alice: no receipts
	s := mustSend(t, a, "bob", "one")
	receiveN(t, d, 1)

	ts, err := d.strangerTargets(ctx, alice.user.Key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := d.publishIn(ctx, ts, Message{Kind: KindSessionReset, Body: []byte{}}, false, true, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// Revoked at the chat-server only: alice's pinned chain of bob still
	// lists the device as current.
	l := deviceLink(t, st, bob.user, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(d.DeviceKey()))
	if _, _, err := (&handles.Client{BaseURL: st.ServerURL}).RegisterDevice(ctx, l.Bytes()); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, a, "the resend answered", func(int) bool {
		return a.Stats().Resent >= 1 && countRows(t, a, `SELECT COUNT(*) FROM outbox`) == 0
	})
	e, err := a.Message(ctx, alice.user.Key, s.ID)
	if err != nil || e.State != StateSent {
		t.Fatalf("alice's message to bob after the refused resend: %v, %v", e.State, err)
	}
}

// The history a device takes from another of the user's brings the
// contacts' chains; one that lists a device of the user's as revoked
// (mallory replays alice's phone on her chain, then revokes it there)
// does not make the new device forget its session with that phone, so
// the phone's next sent copy still opens.
func TestDevicesHistoryKeepsOwnDeviceSessions(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, mallory := newPerson(t, st, "alice", 2), newPerson(t, st, "bob", 1), newPerson(t, st, "mallory", 1)
	a1, phone := alice.devices[0], alice.devices[1]
	ctx := testCtx(t)
	replayDevice(t, st, alice.user, phone.DeviceKey(), mallory.user, true)
	mustAdd(t, a1, "bob")
	mustAdd(t, a1, "mallory")
	mustAdd(t, bob.devices[0], "alice")
	waitContact(t, phone, "bob", func(*Contact) bool { return true })

	laptop := linkDevice(t, st, alice.user, "laptop")
	if _, err := phone.OwnDevices(ctx); err != nil {
		t.Fatal(err)
	}
	s1 := mustSend(t, phone, "bob", "first from the phone")
	receiveUntil(t, laptop, "the phone's first sent copy", func(int) bool {
		_, err := laptop.Message(ctx, alice.user.Key, s1.ID)
		return err == nil
	})
	// The laptop answers in that session, so the phone seals its next
	// message as a plain message of it, not a handshake.
	laptop.syncRead(ctx, []*Entry{{Incoming: true, From: bob.user.Key, ID: NewMessageID()}})
	receiveUntil(t, phone, "the laptop's answer", func(int) bool {
		return countRows(t, phone, `SELECT COUNT(*) FROM sessions WHERE peer = ? AND established = 1`, laptop.DeviceKey().String()) == 1
	})
	if _, err := a1.SendHistory(ctx, laptop.DeviceKey(), HistoryOptions{}); err != nil {
		t.Fatal(err)
	}
	waitContact(t, laptop, "mallory", func(*Contact) bool { return true })

	s2 := mustSend(t, phone, "bob", "second from the phone")
	receiveUntil(t, laptop, "the phone's second sent copy", func(int) bool {
		_, err := laptop.Message(ctx, alice.user.Key, s2.ID)
		return err == nil
	})
	if s := laptop.Stats(); s.Undecryptable != 0 || s.Rejected != 0 {
		t.Errorf("the laptop: %+v", s)
	}
}
