package chat

import (
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Alice uses 3 devices, bob 5, on a real stack. A contact added on one
// device is pinned on the others; every device of bob gets every message
// once, under alice's person key, whichever of her devices sent it; her
// other devices get the sent copies; receipts reach every device of the
// sender; read state follows.
func TestDevicesFanOut(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPerson(t, st, "alice", 3), newPerson(t, st, "bob", 5)
	a1, b1 := alice.devices[0], bob.devices[0]
	ctx := testCtx(t)

	mustAdd(t, a1, "bob")
	mustAdd(t, b1, "alice")
	for _, d := range alice.devices[1:] {
		ct := waitContact(t, d, "bob", func(ct *Contact) bool { return true })
		if ct.Key != bob.user.Key || len(ct.Devices) != 5 {
			t.Fatalf("alice's other device pinned %s with %d devices", ct.Key, len(ct.Devices))
		}
	}
	for _, d := range bob.devices[1:] {
		waitContact(t, d, "alice", func(*Contact) bool { return true })
	}

	// From her primary device, then from a linked one.
	s1 := mustSend(t, a1, "bob", "hello from alice's laptop")
	s2 := mustSend(t, alice.devices[2], "bob", "hello from alice's phone")
	for _, d := range bob.devices {
		receiveN(t, d, 2)
		in := mustInbox(t, d, true)
		if got := texts(in); !slices.Equal(got, []string{"hello from alice's laptop", "hello from alice's phone"}) {
			t.Fatalf("%s's device %s inbox: %q", d.user.Name, d.DeviceKey(), got)
		}
		for _, e := range in {
			if e.From != alice.user.Key || e.Peer != alice.user.Key || e.Trust != TrustTrusted {
				t.Errorf("a message stored from %s (peer %s, %s), want alice's person key", e.From, e.Peer, e.Trust)
			}
		}
		if s := d.Stats(); s.Received != 2 || s.Duplicates != 0 || s.Rejected != 0 {
			t.Errorf("a device of bob: stats %+v", s)
		}
	}
	// Her other devices hold the sent copies, and every one learns the
	// receipts of bob's devices.
	for i, d := range alice.devices {
		receiveUntil(t, d, "both messages, sent and delivered", func(int) bool {
			h, err := d.History(ctx, "bob", 0)
			if err != nil || len(h) != 2 {
				return false
			}
			for _, e := range h {
				if e.Incoming || e.State != StateSent || e.DeliveredAt.IsZero() {
					return false
				}
			}
			return h[0].ID == s1.ID && h[1].ID == s2.ID
		})
		if s := d.Stats(); s.Rejected != 0 {
			t.Errorf("alice's device %d: stats %+v", i, s)
		}
	}

	// Bob replies from his fourth device: every device of alice has it;
	// his other devices have the sent copy.
	mustSend(t, bob.devices[3], "alice", "hi alice")
	for _, d := range alice.devices {
		receiveUntil(t, d, "bob's reply", func(int) bool {
			u, err := d.Unread(ctx)
			return err == nil && len(u) == 1 && u[0].Text() == "hi alice" && u[0].From == bob.user.Key
		})
	}
	// Read on one device of alice: read on the others.
	if in := mustInbox(t, alice.devices[1], false); len(in) != 1 {
		t.Fatalf("alice's second device shows %q", texts(in))
	}
	for _, d := range []*testClient{alice.devices[0], alice.devices[2]} {
		receiveUntil(t, d, "the read state", func(int) bool {
			u, err := d.Unread(ctx)
			return err == nil && len(u) == 0
		})
	}
	for _, d := range bob.devices {
		receiveUntil(t, d, "the reply's sent copy", func(int) bool {
			h, err := d.History(ctx, "alice", 0)
			return err == nil && len(h) == 3 && h[2].Text() == "hi alice" && !h[2].Incoming
		})
	}
}

// The primary-device case: a person without linked devices seals one
// copy per message, as before devices, with no sent copies.
func TestDevicesPrimaryOnly(t *testing.T) {
	_, bu, alice, bob := befriended(t)
	mustSend(t, alice, "bob", "one")
	receiveN(t, bob, 1)
	if n := countRows(t, alice, `SELECT COUNT(*) FROM sessions`); n != 1 {
		t.Errorf("alice keeps %d sessions, want 1", n)
	}
	ct, err := alice.Contact(testCtx(t), "bob")
	if err != nil || len(ct.Devices) != 1 || ct.Devices[0].Key != bu.Key || !ct.Devices[0].Primary {
		t.Fatalf("bob's devices: %+v, %v", ct.Devices, err)
	}
}

// A device bob revokes gets nothing alice sends after she saw the
// revocation: she seals to the others only, and forgets her sessions with
// it. The revocation is a contact event, not a flag.
func TestDevicesRevokedGetsNothing(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPerson(t, st, "alice", 1), newPerson(t, st, "bob", 3)
	a, b1, gone := alice.devices[0], bob.devices[0], bob.devices[2]
	mustAdd(t, a, "bob")
	mustAdd(t, b1, "alice")
	mustSend(t, a, "bob", "before")
	for _, d := range bob.devices {
		receiveN(t, d, 1)
	}
	goneKey := gone.DeviceKey()
	if n := countRows(t, a, `SELECT COUNT(*) FROM sessions WHERE peer = ?`, goneKey.String()); n != 1 {
		t.Fatalf("alice has %d sessions with bob's third device", n)
	}
	st.RevokeDevice(t, bob.user, goneKey)
	ctx := testCtx(t)
	ct, err := a.CheckContact(ctx, "bob")
	if err != nil || ct.Flag != FlagNone {
		t.Fatalf("checking bob after the revocation: %v (%s)", err, ct.Flag)
	}
	if n := countRows(t, a, `SELECT COUNT(*) FROM sessions WHERE peer = ?`, goneKey.String()); n != 0 {
		t.Errorf("alice kept %d sessions with the revoked device", n)
	}
	evs, err := a.ContactEvents(ctx, "bob")
	if err != nil || !slices.ContainsFunc(evs, func(e ContactEvent) bool { return e.Event == "device_revoked" && contains(e.Detail, goneKey.String()) }) {
		t.Fatalf("alice's events of bob: %+v, %v", evs, err)
	}

	js := st.JetStream(t)
	subject := inboxPrefix + goneKey.String() + "." + a.DeviceKey().String()
	before := storedOn(t, js, subject)
	mustSend(t, a, "bob", "after")
	for _, d := range bob.devices[:2] {
		receiveUntil(t, d, "the message after the revocation", func(int) bool {
			h, err := d.History(ctx, "alice", 0)
			return err == nil && len(h) == 2
		})
	}
	// Read mail leaves the stream, so the count can only have gone down.
	if after := storedOn(t, js, subject); after > before {
		t.Errorf("something was stored for the revoked device after its revocation (%d messages, %d before)", after, before)
	}
	if h, err := gone.History(ctx, "alice", 0); err != nil || len(h) != 1 {
		t.Errorf("the revoked device holds %d messages, %v", len(h), err)
	}
}

// A device of a stranger is its person's: a request from carol's linked
// device is stored under carol's key and looked up as her handle.
func TestDevicesStrangerMappedToPerson(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, carol := newPerson(t, st, "alice", 1), newPerson(t, st, "carol", 2)
	a, c2 := alice.devices[0], carol.devices[1]
	ctx := testCtx(t)
	if _, err := c2.SendKey(ctx, alice.user.Key, "hello, we have not met"); err != nil {
		t.Fatal(err)
	}
	receiveN(t, a, 1)
	if err := a.ResolveRequests(ctx); err != nil {
		t.Fatal(err)
	}
	reqs, err := a.Requests(ctx)
	if err != nil || len(reqs) != 1 {
		t.Fatalf("alice's requests: %v, %v", reqs, err)
	}
	if e := reqs[0]; e.From != carol.user.Key || e.PeerHandle != "carol@"+st.Domain {
		t.Fatalf("the request is from %s (%q), want carol's person key and handle", e.From, e.PeerHandle)
	}
}

// A sync message from a device that is not one of the user's own is
// refused, though it opens (bob seals it in his session with alice's
// device): only her own devices may tell her what she sent.
func TestDevicesForgedSyncRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPerson(t, st, "alice", 2), newPerson(t, st, "bob", 1)
	a1, a2, b := alice.devices[0], alice.devices[1], bob.devices[0]
	mustAdd(t, a1, "bob")
	mustAdd(t, b, "alice")
	waitContact(t, a2, "bob", func(*Contact) bool { return true })
	ctx := testCtx(t)

	mallory := kez.PublicKey{1}
	forged := Message{Kind: KindSyncSent, Body: marshalSyncSent(mallory, &Message{Kind: KindText, Body: []byte("to mallory")})}
	bc, err := b.Contact(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.publishIn(ctx, []target{deviceTarget(bc, a2.DeviceKey())}, forged, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, a2, "the forged sync message refused", func(int) bool { return a2.Stats().Rejected >= 1 })
	if h, err := a2.History(ctx, mallory.String(), 0); err != nil || len(h) != 0 {
		t.Errorf("the forged sent copy was stored: %v, %v", h, err)
	}
	if !contains(a2.log.String(), ErrNotOwnDevice.Error()) {
		t.Error("the log does not say why the sync message was refused")
	}
	// And her own devices send nothing but sync messages.
	if _, err := a1.publishIn(ctx, []target{a1.ownTarget(a2.DeviceKey())}, Message{Kind: KindText, Body: []byte("hi me")}, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, a2, "the text from her own device refused", func(int) bool { return a2.Stats().Rejected >= 2 })
}

// A device claiming a person whose chain does not list it is refused: a
// sig-server that names bob as the person of mallory's linked device
// (a lie) does not make alice take mallory's message as bob's.
func TestDevicesClaimingAnotherPersonRefused(t *testing.T) {
	var lie struct {
		sync.Mutex
		device, person string
	}
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			lie.Lock()
			dev, person := lie.device, lie.person
			lie.Unlock()
			if dev != "" && r.Method == http.MethodGet && r.URL.Path == "/v1/devices/"+dev {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"person":%q,"revoked":false}`, person)
				return
			}
			h.ServeHTTP(w, r)
		})
	}})
	alice, bob, mallory := newPerson(t, st, "alice", 1), newPerson(t, st, "bob", 1), newPerson(t, st, "mallory", 2)
	a := alice.devices[0]
	mustAdd(t, a, "bob")
	m2 := mallory.devices[1]
	lie.Lock()
	lie.device, lie.person = m2.DeviceKey().String(), bob.user.Key.String()
	lie.Unlock()

	ctx := testCtx(t)
	if _, err := m2.SendKey(ctx, alice.user.Key, "it is me, bob"); err != nil {
		t.Fatal(err)
	}
	receiveUntil(t, a, "the message refused", func(int) bool { return a.Stats().Rejected >= 1 })
	if h, err := a.History(ctx, "bob", 0); err != nil || len(h) != 0 {
		t.Fatalf("mallory's message stored as bob's: %v, %v", h, err)
	}
	if !contains(a.log.String(), ErrUnknownDevice.Error()) {
		t.Error("the log does not say why the message was refused")
	}
}

// A crash between sealing and publishing: the copies to every device of
// bob and the sent copies to alice's other devices were sealed and
// stored, none acknowledged. The next client of the state folder
// publishes each of them, as sealed: every device gets the message once.
func TestDevicesPendingCopiesPublishedAtNextStart(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPerson(t, st, "alice", 2), newPerson(t, st, "bob", 3)
	home := filepath.Join(t.TempDir(), "alice-primary")
	a1 := openClientIn(t, st, alice.user, home)
	mustAdd(t, a1, "bob")
	mustAdd(t, bob.devices[0], "alice")
	for _, d := range bob.devices[1:] {
		waitContact(t, d, "alice", func(*Contact) bool { return true })
	}
	ctx := testCtx(t)

	st.NATS().Shutdown()
	p, err := a1.SendAsync(ctx, "bob", "sealed before the crash")
	if err != nil {
		t.Fatal(err)
	}
	id := p.ID()
	if n := countRows(t, a1, `SELECT COUNT(*) FROM outbox WHERE msg_id = ?`, id[:]); n != 3+1 {
		t.Fatalf("%d envelopes wait in the outbox, want 3 to bob's devices and 1 sent copy", n)
	}
	if err := a1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("the send cut short: %v, want ErrClosed", err)
	}
	st.RestartNATS()

	a1 = openClientIn(t, st, alice.user, home)
	for _, d := range bob.devices {
		receiveN(t, d, 1)
		if in := mustInbox(t, d, true); len(in) != 1 || in[0].Text() != "sealed before the crash" || in[0].ID != p.ID() {
			t.Fatalf("a device of bob holds %q", texts(in))
		}
		if s := d.Stats(); s.Rejected != 0 || s.Undecryptable != 0 {
			t.Errorf("a device of bob: %+v", s)
		}
	}
	receiveUntil(t, alice.devices[1], "the sent copy", func(int) bool {
		h, err := alice.devices[1].History(ctx, "bob", 0)
		return err == nil && len(h) == 1 && h[0].ID == p.ID()
	})
	receiveUntil(t, a1, "the message acknowledged", func(int) bool {
		e, err := a1.Message(ctx, alice.user.Key, p.ID())
		return err == nil && e.State == StateSent && countRows(t, a1, `SELECT COUNT(*) FROM outbox`) == 0
	})
}

// A contact whose chain lists the most devices a chain may (32) costs
// one send 32 seals, never more; their chain cannot list a 33rd.
func TestDevicesSendCostBounded(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	a := newPerson(t, st, "alice", 1).devices[0]
	bu := st.NewUser(t, "bob")
	ctx := testCtx(t)
	sc := &sigchain.Client{BaseURL: st.SigServerURL}
	for i := 1; i < sigchain.MaxDevices; i++ {
		newDeviceWithPrekey(t, st, bu, fmt.Sprintf("bob-%d", i+1), uint32(i))
	}
	openClient(t, st, bu) // bob's primary device publishes its prekey
	ct := mustAdd(t, a, "bob")
	if len(ct.Devices) != sigchain.MaxDevices {
		t.Fatalf("bob has %d devices", len(ct.Devices))
	}
	_, req := stacktest.NewDeviceRequest(t, "one too many")
	state, err := sc.FetchVerified(ctx, bu.Key, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l, err := sigchain.NewLink(bu.Identity, state, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), time.Now()); err == nil {
		if err := sc.Append(ctx, l); err == nil {
			t.Fatal("the sig-server took a 33rd device")
		}
	}
	mustSend(t, a, "bob", "one message")
	if n := countRows(t, a, `SELECT COUNT(*) FROM sessions`); n != sigchain.MaxDevices {
		t.Fatalf("one send sealed in %d sessions, want one per device (%d)", n, sigchain.MaxDevices)
	}
	mustSend(t, a, "bob", "another")
	if n := countRows(t, a, `SELECT COUNT(*) FROM sessions`); n != sigchain.MaxDevices {
		t.Fatalf("two sends made %d sessions", n)
	}
}

// A contact links a device after alice pinned his chain: its first
// message makes alice check his chain once, and it is his (trusted,
// stored under his key); the new device is a contact event, not a flag.
func TestDevicesNewDeviceOfContact(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPerson(t, st, "alice", 1), newPerson(t, st, "bob", 1)
	a, b := alice.devices[0], bob.devices[0]
	mustAdd(t, a, "bob")
	mustAdd(t, b, "alice")
	dev := st.AddDevice(t, bob.user, "bob-phone")
	phone := openDevice(t, st, bob.user, dev, "phone")
	mustAdd(t, phone, "alice") // linked after bob pinned her: it pins her itself
	mustSend(t, phone, "alice", "from my new phone")
	receiveN(t, a, 1)
	in := mustInbox(t, a, true)
	if len(in) != 1 || in[0].From != bob.user.Key || in[0].Trust != TrustTrusted {
		t.Fatalf("alice's inbox: %+v", in)
	}
	ct, err := a.Contact(testCtx(t), "bob")
	if err != nil || len(ct.Devices) != 2 || ct.Flag != FlagNone {
		t.Fatalf("bob as alice sees him: %d devices, flag %q, %v", len(ct.Devices), ct.Flag, err)
	}
	evs, err := a.ContactEvents(testCtx(t), "bob")
	if err != nil || !slices.ContainsFunc(evs, func(e ContactEvent) bool {
		return e.Event == "device_added" && contains(e.Detail, dev.PublicKey().String())
	}) {
		t.Fatalf("alice's events of bob: %+v, %v", evs, err)
	}
}
