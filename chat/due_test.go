package chat

import (
	"encoding/binary"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// prekeyGate wraps a sig-server: it counts the prekey fetches of each
// key, and refuses (503) those of the keys it is told to.
type prekeyGate struct {
	mu      sync.Mutex
	fetches map[string]int
	refuse  map[string]bool
}

func (g *prekeyGate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if key, ok := strings.CutPrefix(r.URL.Path, wire.PrekeysPath); ok && r.Method == http.MethodGet {
			g.mu.Lock()
			if g.fetches == nil {
				g.fetches = map[string]int{}
			}
			g.fetches[key]++
			refused := g.refuse[key]
			g.mu.Unlock()
			if refused {
				http.Error(w, "unavailable", http.StatusServiceUnavailable)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func (g *prekeyGate) setRefused(k kez.PublicKey, refused bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refuse == nil {
		g.refuse = map[string]bool{}
	}
	g.refuse[k.String()] = refused
}

// count returns the prekey fetches of the keys so far.
func (g *prekeyGate) count(keys ...kez.PublicKey) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, k := range keys {
		n += g.fetches[k.String()]
	}
	return n
}

// waitFirstDuePass waits until c's loop of copies due ended its first
// pass (the one at the start), so that what a test counts after is its
// own doing.
func waitFirstDuePass(t testing.TB, c *testClient) {
	t.Helper()
	select {
	case <-c.due.first:
	case <-testCtx(t).Done():
		t.Fatal("the first pass of the copies due never ended")
	}
}

// setDue sets the bounds and waits of the copies due for one test (before
// its clients are opened), restored after it.
func setDue(t testing.TB, retry time.Duration, perDevice, perPerson int) {
	t.Helper()
	r, d, p := dueRetry, maxDuePerDevice, maxDuePerPerson
	dueRetry, maxDuePerDevice, maxDuePerPerson = retry, perDevice, perPerson
	t.Cleanup(func() { dueRetry, maxDuePerDevice, maxDuePerPerson = r, d, p })
}

// inboxOf counts what the stream holds for device from device from.
func inboxOf(t testing.TB, st *stacktest.Stack, to, from kez.PublicKey) uint64 {
	t.Helper()
	return storedOn(t, st.JetStream(t), wire.InboxSubjectPrefix+to.String()+"."+from.String())
}

// sleepingPhone is a stack where bob linked a phone that has not run yet
// (it publishes no prekey), and alice and bob (their primary devices)
// added each other.
type sleepingPhone struct {
	st     *stacktest.Stack
	au, bu *stacktest.User
	phone  *kez.Identity
	a, b   *testClient
}

func newSleepingPhone(t *testing.T) *sleepingPhone {
	t.Helper()
	sp := &sleepingPhone{st: stacktest.Start(t, stacktest.Options{})}
	sp.au, sp.bu = sp.st.NewUser(t, "alice"), sp.st.NewUser(t, "bob")
	sp.phone = sp.st.AddDevice(t, sp.bu, "phone")
	sp.a, sp.b = openClient(t, sp.st, sp.au), openClient(t, sp.st, sp.bu)
	mustAdd(t, sp.a, "bob")
	mustAdd(t, sp.b, "alice")
	return sp
}

// Bob links a phone that has not run yet (no prekey) before alice sends:
// the send succeeds (his laptop has it), the phone's copy is due, and it
// reaches the phone exactly once after the phone published its prekey.
func TestDueDeviceWithoutPrekey(t *testing.T) {
	setDue(t, time.Hour, 1000, 4000) // no retry by the clock: this test does them
	sp := newSleepingPhone(t)
	st, au, bu, phoneKey, a, b := sp.st, sp.au, sp.bu, sp.phone, sp.a, sp.b
	waitFirstDuePass(t, a)
	ctx := testCtx(t)

	s := mustSend(t, a, "bob", "while your phone sleeps")
	receiveN(t, b, 1)
	if st := a.Stats(); st.CopiesDue != 1 || st.Sent != 1 {
		t.Fatalf("alice's stats after the send: %+v", st)
	}
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due WHERE device = ? AND person = ? AND counts = 1`, phoneKey.PublicKey().String(), bu.Key.String()); n != 1 {
		t.Fatalf("%d copies due to the phone", n)
	}
	// Still no prekey: still due, nothing published.
	if sent, left, err := a.SendDueCopies(ctx); err != nil || sent != 0 || left != 1 {
		t.Fatalf("SendDueCopies before the phone ran: %d sent, %d left, %v", sent, left, err)
	}

	// The phone runs for the first time: it publishes its prekey.
	phone := openDevice(t, st, bu, phoneKey, "phone")
	mustAdd(t, phone, "alice")
	if sent, left, err := a.SendDueCopies(ctx); err != nil || sent != 1 || left != 0 {
		t.Fatalf("SendDueCopies after the phone ran: %d sent, %d left, %v", sent, left, err)
	}
	receiveN(t, phone, 1)
	in := mustInbox(t, phone, true)
	if len(in) != 1 || in[0].ID != s.ID || in[0].Text() != "while your phone sleeps" || in[0].From != au.Key || in[0].Trust != TrustTrusted {
		t.Fatalf("the phone's inbox: %+v", in)
	}
	// Exactly once: nothing more is due, published or stored.
	if sent, left, err := a.SendDueCopies(ctx); err != nil || sent != 0 || left != 0 {
		t.Fatalf("SendDueCopies again: %d sent, %d left, %v", sent, left, err)
	}
	if n := mustSync(t, phone); n != 0 {
		t.Fatalf("the phone stored %d more", n)
	}
	if n := inboxOf(t, st, phoneKey.PublicKey(), au.Key); n != 1 {
		t.Fatalf("the stream holds %d copies for the phone", n)
	}
	if st := a.Stats(); st.DueSent != 1 || st.Sent != 1 || st.DueDropped != 0 {
		t.Fatalf("alice's stats: %+v", st)
	}
	h, err := a.History(ctx, "bob", 0)
	if err != nil || len(h) != 1 || h[0].State != StateSent {
		t.Fatalf("alice's history: %+v, %v", h, err)
	}
	if ps := phone.Stats(); ps.Duplicates != 0 || ps.Rejected != 0 {
		t.Fatalf("the phone's stats: %+v", ps)
	}
}

// The sig-server refuses a device's prekey for a while (down for a moment,
// as far as that device is concerned), and the user's own laptop has not
// run yet: both copies are due (a message and its sent copy), and the
// client's own loop delivers them once the prekeys can be had.
func TestDueSigServerRefusesPrekey(t *testing.T) {
	setDue(t, 20*time.Millisecond, 1000, 4000)
	gate := &prekeyGate{}
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: gate.wrap})
	au := st.NewUser(t, "alice")
	laptopKey := st.AddDevice(t, au, "laptop")
	bob := newPerson(t, st, "bob", 2)
	a, b1, b2 := openClient(t, st, au), bob.devices[0], bob.devices[1]
	mustAdd(t, a, "bob")
	mustAdd(t, b1, "alice")
	waitContact(t, b2, "alice", func(*Contact) bool { return true })
	gate.setRefused(b2.DeviceKey(), true)

	s := mustSend(t, a, "bob", "through a flaky sig-server")
	receiveN(t, b1, 1)
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due`); n != 2 {
		t.Fatalf("%d copies due, want bob's second device's and alice's laptop's", n)
	}
	gate.setRefused(b2.DeviceKey(), false)
	laptop := openDevice(t, st, au, laptopKey, "laptop")
	// No call: the loop tries again by itself.
	receiveUntil(t, b2, "the copy that was due", func(int) bool {
		in, err := b2.Inbox(testCtx(t), true)
		return err == nil && len(in) == 1 && in[0].ID == s.ID
	})
	receiveUntil(t, laptop, "the sent copy that was due", func(int) bool {
		e, err := laptop.Message(testCtx(t), au.Key, s.ID)
		return err == nil && !e.Incoming && e.To == bob.user.Key && e.Text() == "through a flaky sig-server"
	})
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due`); n != 0 {
		t.Fatalf("%d copies still due", n)
	}
	if st := a.Stats(); st.CopiesDue != 2 || st.DueSent != 2 {
		t.Fatalf("alice's stats: %+v", st)
	}
}

// A message from the device proves it is there: its copies due are sealed
// at once (in the session it started), not at the end of their wait.
func TestDueOnMessageFromDevice(t *testing.T) {
	setDue(t, time.Hour, 1000, 4000)
	sp := newSleepingPhone(t)
	st, bu, phoneKey, a := sp.st, sp.bu, sp.phone, sp.a
	s := mustSend(t, a, "bob", "before your phone ran")
	if a.Stats().CopiesDue != 1 {
		t.Fatalf("alice's stats: %+v", a.Stats())
	}
	phone := openDevice(t, st, bu, phoneKey, "phone")
	mustAdd(t, phone, "alice")
	mustSend(t, phone, "alice", "my phone runs")
	receiveN(t, a, 1)
	receiveUntil(t, phone, "the copy that was due", func(int) bool {
		h, err := phone.History(testCtx(t), "alice", 0)
		return err == nil && len(h) == 2 && h[0].ID == s.ID && h[0].Incoming
	})
	if st := a.Stats(); st.DueSent != 1 {
		t.Fatalf("alice's stats: %+v", st)
	}
}

// A client that stops (crashes) while a copy is due loses nothing: the
// copy was stored with the message, with its wait, and the first start
// after the wait seals it.
func TestDueSurvivesRestart(t *testing.T) {
	setDue(t, time.Hour, 1000, 4000)
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	phoneKey := st.AddDevice(t, bu, "phone")
	home := filepath.Join(t.TempDir(), "alice")
	clock := &testClock{t: time.Now()}
	withClock := func(c *Config) { c.Client.Clock = clock.Now }
	a := openClientIn(t, st, au, home, withClock)
	mustAdd(t, a, "bob")
	s := mustSend(t, a, "bob", "sent before a crash")
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due`); n != 1 {
		t.Fatalf("%d copies due", n)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	phone := openDevice(t, st, bu, phoneKey, "phone")
	clock.Set(clock.Now().Add(dueRetry))         // the wait is over
	a = openClientIn(t, st, au, home, withClock) // its first pass seals the copy
	receiveUntil(t, phone, "the copy due before the restart", func(int) bool {
		e, err := phone.Message(testCtx(t), au.Key, s.ID)
		return err == nil && e.Text() == "sent before a crash"
	})
	waitFirstDuePass(t, a)
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due`); n != 0 {
		t.Fatalf("%d copies still due", n)
	}
	if n := inboxOf(t, st, phoneKey.PublicKey(), au.Key); n != 1 {
		t.Fatalf("the stream holds %d copies for the phone", n)
	}
}

// A device revoked while copies were due to it gets none: they are dropped
// when its revocation is seen, and the revoked device publishing a prekey
// changes nothing.
func TestDueRevokedDropped(t *testing.T) {
	setDue(t, time.Hour, 1000, 4000)
	sp := newSleepingPhone(t)
	st, au, bu, phoneKey, a := sp.st, sp.au, sp.bu, sp.phone, sp.a
	mustSend(t, a, "bob", "one")
	mustSend(t, a, "bob", "two")
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due`); n != 2 {
		t.Fatalf("%d copies due", n)
	}
	st.RevokeDevice(t, bu, phoneKey.PublicKey())
	ctx := testCtx(t)
	if _, err := a.CheckContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due`); n != 0 {
		t.Fatalf("%d copies due to a revoked device", n)
	}
	if sent, left, err := a.SendDueCopies(ctx); err != nil || sent != 0 || left != 0 {
		t.Fatalf("SendDueCopies: %d sent, %d left, %v", sent, left, err)
	}
	if n := inboxOf(t, st, phoneKey.PublicKey(), au.Key); n != 0 {
		t.Fatalf("the stream holds %d copies for the revoked phone", n)
	}
}

// A device of one of the user's own that is revoked while its sent copies
// are due: the pass that finds it revoked on the user's chain drops them.
func TestDueOwnRevokedDropped(t *testing.T) {
	setDue(t, time.Hour, 1000, 4000)
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	laptop := st.AddDevice(t, au, "laptop")
	a, b := openClient(t, st, au, func(c *Config) { c.RefreshInterval = time.Nanosecond }), openClient(t, st, bu)
	mustAdd(t, a, "bob")
	mustAdd(t, b, "alice")
	mustSend(t, a, "bob", "one")
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due WHERE person = ?`, au.Key.String()); n != 1 {
		t.Fatalf("%d sent copies due", n)
	}
	st.RevokeDevice(t, au, laptop.PublicKey())
	if sent, left, err := a.SendDueCopies(testCtx(t)); err != nil || sent != 0 || left != 0 {
		t.Fatalf("SendDueCopies: %d sent, %d left, %v", sent, left, err)
	}
}

// An attacker's chain lists 32 devices, none of which ever publishes a
// prekey (only its primary key is sealed to, as format 1): what alice
// keeps for them is bounded per device and per person, and her retries
// fetch each device's prekey once per wait, the wait doubling.
func TestDueAttackerDevicesBounded(t *testing.T) {
	const perDevice, perPerson = 3, 40
	setDue(t, time.Minute, perDevice, perPerson)
	gate := &prekeyGate{}
	st := stacktest.Start(t, stacktest.Options{WrapSigServer: gate.wrap})
	au, mu := st.NewUser(t, "alice"), st.NewUser(t, "mallory")
	var silent []kez.PublicKey
	for i := 1; i < maxDevices; i++ {
		silent = append(silent, st.AddDevice(t, mu, fmt.Sprintf("m%d", i)).PublicKey())
	}
	clock := &testClock{t: time.Now()}
	a := openClient(t, st, au, func(c *Config) { c.Client.Clock = clock.Now })
	mustAdd(t, a, "mallory")
	waitFirstDuePass(t, a)
	for i := range 5 {
		mustSend(t, a, "mallory", fmt.Sprint("message ", i))
	}
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due`); n > perPerson {
		t.Fatalf("%d copies due to one person (bound %d)", n, perPerson)
	}
	if n := countRows(t, a, `SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM copies_due GROUP BY device)`); n > perDevice {
		t.Fatalf("%d copies due to one device (bound %d)", n, perDevice)
	}
	s := a.Stats()
	if s.CopiesDue != 5*uint64(len(silent)) || s.DueDropped != s.CopiesDue-uint64(countRows(t, a, `SELECT COUNT(*) FROM copies_due`)) {
		t.Fatalf("alice's stats: %+v", s)
	}

	ctx := testCtx(t)
	// The clock has not moved: no device's wait is over, nothing fetched.
	before := gate.count(silent...)
	if _, _, err := a.duePass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := gate.count(silent...) - before; n != 0 {
		t.Fatalf("a pass before any wait ended fetched %d prekeys", n)
	}
	// Each wait: at most one fetch per device (the loop may run the pass
	// too; the two never fetch twice), then the next wait doubles.
	at := clock.Now()
	for i, wait := range []time.Duration{dueRetry, 2 * dueRetry, 4 * dueRetry} {
		// Just before the wait ends: nothing.
		clock.Set(at.Add(wait - time.Millisecond))
		before := gate.count(silent...)
		if _, _, err := a.duePass(ctx, false); err != nil {
			t.Fatal(err)
		}
		if n := gate.count(silent...) - before; n != 0 {
			t.Fatalf("round %d: %d fetches before the wait of %v ended", i, n, wait)
		}
		at = at.Add(wait)
		clock.Set(at)
		if _, _, err := a.duePass(ctx, false); err != nil {
			t.Fatal(err)
		}
		if n := gate.count(silent...) - before; n != len(silent) {
			t.Fatalf("round %d: %d prekey fetches for %d devices", i, n, len(silent))
		}
	}
	if n := countRows(t, a, `SELECT COUNT(*) FROM copies_due`); n == 0 || n > perPerson {
		t.Fatalf("%d copies due after the retries", n)
	}
	if got := dueBackoff(100); got != dueRetryMax {
		t.Fatalf("the longest wait is %v, want %v", got, dueRetryMax)
	}
}

// Many kicks (messages opened from many devices) are bounded in memory.
func TestDueKicksBounded(t *testing.T) {
	c := &Client{}
	c.initDue()
	for i := range 2 * maxDueKicks {
		var k kez.PublicKey
		binary.BigEndian.PutUint32(k[:], uint32(i))
		c.dueKick(k)
	}
	if len(c.due.kicks) != maxDueKicks {
		t.Fatalf("%d kicks remembered after %d", len(c.due.kicks), 2*maxDueKicks)
	}
}
