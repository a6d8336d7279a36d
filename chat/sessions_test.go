package chat

import (
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// Two clients talk in format v2 both ways: the first message is the
// handshake of a session, the answers and everything after are messages
// in it, receipts come back, and each side ends with one session.
func TestSessionsRoundTrip(t *testing.T) {
	_, _, alice, bob := befriended(t)
	ctx := testCtx(t)

	for _, c := range []*testClient{alice, bob} {
		if n := countRows(t, c, `SELECT COUNT(*) FROM prekeys`); n != 1 {
			t.Fatalf("%s has %d prekeys, want 1", c.user.Name, n)
		}
	}
	p, err := alice.SendAsync(ctx, "bob", "hello bob", WaitReceipt())
	if err != nil {
		t.Fatal(err)
	}
	if f := deliver(t, bob, 1); !slices.Equal(f, []string{"v2 handshake"}) {
		t.Errorf("alice's first message is %q", f)
	}
	s, err := p.Wait(ctx) // alice gets bob's receipt
	if err != nil || s.DeliveredAt.IsZero() {
		t.Fatalf("alice's send: %+v, %v", s, err)
	}

	mustSend(t, bob, "alice", "hello alice")
	if f := deliver(t, alice, 1); !slices.Equal(f, []string{"v2 message"}) {
		t.Errorf("bob's answer is %q", f)
	}
	mustSend(t, alice, "bob", "and again")
	// With it, alice's receipt of the answer.
	if f := deliver(t, bob, 1); len(f) != 2 || f[0] != "v2 message" || f[1] != "v2 message" {
		t.Errorf("alice's messages after the answer: %q", f)
	}
	if in := mustInbox(t, bob, true); !slices.Equal(texts(in), []string{"hello bob", "and again"}) {
		t.Errorf("bob's inbox: %q", texts(in))
	}
	if in := mustInbox(t, alice, true); !slices.Equal(texts(in), []string{"hello alice"}) {
		t.Errorf("alice's inbox: %q", texts(in))
	}
	for _, c := range []*testClient{alice, bob} {
		if n := countRows(t, c, `SELECT COUNT(*) FROM sessions WHERE established = 1`); n != 1 {
			t.Errorf("%s has %d established sessions, want 1", c.user.Name, n)
		}
		if n := countRows(t, c, `SELECT (SELECT COUNT(*) FROM messages WHERE envelope IS NOT NULL OR state = 'pending') + (SELECT COUNT(*) FROM outbox)`); n != 0 {
			t.Errorf("%s keeps %d envelopes of acknowledged messages", c.user.Name, n)
		}
		if s := c.Stats(); s.Rejected != 0 || s.Undecryptable != 0 || s.Duplicates != 0 {
			t.Errorf("%s's stats: %+v", c.user.Name, s)
		}
	}
}

// A peer that publishes no prekey yet (it never ran a client of this
// release) is sent format v1; those envelopes still open once it has
// upgraded, and the next message is v2. Once a v2 message from a peer was
// opened, a v1 envelope from them is refused (ErrDowngrade).
func TestV1BeforeUpgradeOpensDowngradeRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au, func(c *Config) { c.RefreshInterval = -1 })
	mustAdd(t, alice, "bob")

	mustSend(t, alice, "bob", "v1 one")
	mustSend(t, alice, "bob", "v1 two")
	bob := openClient(t, st, bu) // publishes bob's prekey
	mustAdd(t, bob, "alice")
	mustSend(t, alice, "bob", "v2 three")
	if f := deliver(t, bob, 3); !slices.Equal(f, []string{"v1", "v1", "v2 handshake"}) {
		t.Fatalf("bob got %q", f)
	}
	if in := mustInbox(t, bob, false); !slices.Equal(texts(in), []string{"v1 one", "v1 two", "v2 three"}) {
		t.Fatalf("bob's inbox: %q", texts(in))
	}

	// A v1 envelope from alice now: her client would not make one.
	env, err := Seal(au.Identity, recipientOf(bu.Identity, 0), Message{Kind: KindText, Body: []byte("downgraded")})
	if err != nil {
		t.Fatal(err)
	}
	mustPublishRaw(t, alice, sendSubject(bu.Key, au.Key), env)
	receiveUntil(t, bob, "the downgrade refused", func(int) bool { return bob.Stats().Downgrades >= 1 })
	if s := bob.Stats(); s.Downgrades != 1 || s.Rejected != 1 || s.Received != 3 {
		t.Errorf("bob's stats: %+v", s)
	}
	if !contains(bob.log.String(), ErrDowngrade.Error()) {
		t.Error("the log does not say why the v1 envelope was refused")
	}
	if in := mustInbox(t, bob, true); len(in) != 3 {
		t.Errorf("the downgraded message reached the inbox: %q", texts(in))
	}
	waitAcked(t, st, bu.Key)
}

// Crafted session envelopes, published within what the broker allows,
// are refused with typed errors and counted, and change no session: the
// genuine message still opens after its tampered copy was refused.
func TestV2RefusalsTypedAndCounted(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, cu, mu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol"), st.NewUser(t, "mallory")
	alice, bob, mallory := openClient(t, st, au), openClient(t, st, bu), openClient(t, st, mu)
	openClient(t, st, cu) // publishes carol's prekey
	mustAdd(t, alice, "bob")
	mustAdd(t, alice, "carol")
	mustAdd(t, bob, "alice")
	mustAdd(t, bob, "mallory")
	fromAlice := sendSubject(bu.Key, au.Key)
	rejected := func(want uint64, why, logged string) {
		t.Helper()
		receiveUntil(t, bob, why+" refused", func(int) bool { return bob.Stats().Rejected >= want })
		if !contains(bob.log.String(), logged) {
			t.Errorf("%s: the log does not say %q", why, logged)
		}
	}

	genuine := sealV2(t, alice, "bob", "the genuine one")
	tampered := slices.Clone(genuine)
	tampered[len(tampered)-3] ^= 0x40
	mustPublishRaw(t, alice, fromAlice, tampered)
	rejected(1, "tampered", "does not decrypt")

	mustPublishRaw(t, alice, fromAlice, genuine)
	receiveN(t, bob, 1)
	// The same envelope again (a replay, under a new Nats-Msg-Id): its key
	// is used up.
	mustPublishRaw(t, alice, fromAlice, genuine)
	receiveUntil(t, bob, "the replay dropped", func(int) bool { return bob.Stats().Duplicates >= 1 })

	// Sealed to carol, dropped in bob's inbox by alice.
	mustPublishRaw(t, alice, fromAlice, sealV2(t, alice, "carol", "for carol"))
	rejected(2, "another recipient's", "addressed to someone else")

	// Alice's genuine envelope under mallory's sender token.
	mustPublishRaw(t, mallory, sendSubject(bu.Key, mu.Key), sealV2(t, alice, "bob", "alice's words"))
	rejected(3, "another sender's", "sender does not match")

	// Truncated.
	mustPublishRaw(t, alice, fromAlice, sealV2(t, alice, "bob", "cut")[:60])
	rejected(4, "truncated", "malformed")

	if in := mustInbox(t, bob, true); !slices.Equal(texts(in), []string{"the genuine one"}) {
		t.Errorf("bob's inbox: %q", texts(in))
	}
	if s := bob.Stats(); s.Rejected != 4 || s.Duplicates != 1 || s.Received != 1 || s.Undecryptable != 0 {
		t.Errorf("bob's stats: %+v", s)
	}
	waitAcked(t, st, bu.Key)

	// The same refusals, as errors: each wraps this package's sentinel
	// and package session's. Rolled back, so bob's sessions do not change.
	next := sealV2(t, alice, "bob", "next")
	flipped := slices.Clone(next)
	flipped[len(flipped)-1] ^= 1
	for _, c := range []struct {
		name       string
		env        []byte
		from       kez.PublicKey
		want, also error
	}{
		{"tampered", flipped, au.Key, ErrDecrypt, session.ErrDecrypt},
		{"replayed", genuine, au.Key, ErrReplay, session.ErrReplay},
		{"another sender", next, mu.Key, ErrSenderMismatch, ErrSenderMismatch},
		{"truncated", next[:60], au.Key, ErrMalformed, session.ErrMalformed},
	} {
		if err := openRolledBack(t, bob, c.env, c.from); !errors.Is(err, c.want) || !errors.Is(err, c.also) {
			t.Errorf("%s: %v, want %v and %v", c.name, err, c.want, c.also)
		}
	}
	// A message in a session alice does not have (bob's answers are
	// messages in the session alice started; another session ID).
	answer := sealV2(t, bob, "alice", "an answer")
	if f := wireForm(answer); f != "v2 message" {
		t.Fatalf("bob's answer is %s", f)
	}
	answer[70] ^= 1 // the session ID: "KEZM" 2 2 | sender | recipient | session_id
	if err := openRolledBack(t, alice, answer, bu.Key); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("a message of an unknown session: %v, want ErrUnknownSession", err)
	}
	if m, err := OpenEnvelope(bu.Identity, next, au.Key, nil); m != nil || !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("a v2 envelope opened as v1: %v", err)
	}
}

// Two processes sending from one state folder never seal with the same
// message key: the state is read and written in each sending transaction.
// Every message opens at the recipient.
func TestTwoProcessesShareSessions(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	bob := openClient(t, st, bu)
	home := filepath.Join(t.TempDir(), "alice")
	a1 := openClientIn(t, st, au, home)
	a2 := openClientIn(t, st, au, home)
	mustAdd(t, a1, "bob")
	if _, err := a2.AddContact(testCtx(t), "bob"); err != nil {
		t.Fatal(err)
	}
	if n := countRows(t, a1, `SELECT COUNT(*) FROM prekeys`); n != 1 {
		t.Errorf("two processes made %d prekeys", n)
	}
	const n = 20
	var wg sync.WaitGroup
	for i, c := range []*testClient{a1, a2} {
		wg.Go(func() {
			for j := range n {
				if _, err := c.Send(testCtx(t), "bob", string(rune('a'+i))+string(rune('a'+j))); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	receiveN(t, bob, 2*n)
	if s := bob.Stats(); s.Received != 2*n || s.Rejected != 0 || s.Duplicates != 0 || s.Undecryptable != 0 {
		t.Errorf("bob's stats: %+v", s)
	}
}

// A running client rotates its prekey by the ring's policy: a new one is
// published once the current one is a week old, a handshake made to the
// previous one still opens during its grace period, and a private prekey
// past it is deleted from chat.db.
func TestPrekeysRotate(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	start := time.Now()
	var mu sync.Mutex
	clock := start.Add(-10 * 24 * time.Hour)
	setClock := func(t time.Time) { mu.Lock(); clock = t; mu.Unlock() }
	bob := openClient(t, st, bu, func(c *Config) {
		c.Client.Clock = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	})
	ctx := testCtx(t)
	published := func() uint32 {
		t.Helper()
		pk, err := bob.sig.FetchPrekey(ctx, bu.Key)
		if err != nil {
			t.Fatal(err)
		}
		return pk.ID
	}
	stored := func() []uint32 {
		t.Helper()
		rows, err := bob.db.db.Query(`SELECT id FROM prekeys ORDER BY created`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var ids []uint32
		for rows.Next() {
			var id int64
			rows.Scan(&id)
			ids = append(ids, uint32(id))
		}
		return ids
	}
	k1 := published()
	if ids := stored(); !slices.Equal(ids, []uint32{k1}) {
		t.Fatalf("stored %v, published %d", ids, k1)
	}
	// Alice starts a session with k1; bob reads it only after rotating.
	alice := openClient(t, st, au)
	mustAdd(t, alice, "bob")
	mustSend(t, alice, "bob", "to the first prekey")

	setClock(start)
	if err := bob.rotatePrekeys(ctx); err != nil {
		t.Fatal(err)
	}
	k2 := published()
	if ids := stored(); k2 == k1 || !slices.Equal(ids, []uint32{k1, k2}) {
		t.Fatalf("after a week: stored %v, published %d (first %d)", ids, k2, k1)
	}
	carol := openClient(t, st, cu)
	mustAdd(t, carol, "bob")
	mustSend(t, carol, "bob", "to the second prekey")
	receiveN(t, bob, 2)
	reqs, err := bob.Requests(ctx)
	if err != nil || !slices.Equal(texts(reqs), []string{"to the first prekey", "to the second prekey"}) {
		t.Fatalf("bob's requests: %q, %v", texts(reqs), err)
	}

	// Past k1's expiry and grace: its private key is deleted. (The prekey
	// made then is dated in the sig-server's future: it refuses it.)
	setClock(start.Add(4*24*time.Hour + 7*24*time.Hour + time.Hour))
	if err := bob.rotatePrekeys(ctx); err == nil {
		t.Error("the sig-server took a prekey dated 11 days ahead of it")
	}
	if ids := stored(); len(ids) != 2 || ids[0] != k2 || slices.Contains(ids, k1) {
		t.Fatalf("after the grace period: stored %v (first %d, second %d)", ids, k1, k2)
	}
	if got := published(); got != k2 {
		t.Errorf("the sig-server holds %d, want %d", got, k2)
	}
}

// A send cut short by Close (no answer from the stream yet) stays pending
// with its sealed envelope, and the next client of the state folder
// publishes those very bytes: the message arrives once, and no message
// key seals a second message.
func TestPendingSendPublishedAtNextStart(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	home := filepath.Join(t.TempDir(), "alice")
	alice, bob := openClientIn(t, st, au, home), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	mustSend(t, alice, "bob", "before")
	receiveN(t, bob, 1)
	ctx := testCtx(t)

	st.NATS().Shutdown()
	p, err := alice.SendAsync(ctx, "bob", "while the broker was down")
	if err != nil {
		t.Fatal(err)
	}
	var sealed []byte
	id := p.ID()
	if err := alice.db.db.QueryRow(`SELECT o.envelope FROM outbox o JOIN messages m ON m.id = o.msg_id WHERE o.msg_id = ? AND m.state = 'pending'`, id[:]).Scan(&sealed); err != nil || len(sealed) == 0 {
		t.Fatalf("the pending message's envelope: %v", err)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("the send cut short: %v, want ErrClosed", err)
	}
	st.RestartNATS()

	alice = openClientIn(t, st, au, home)
	msgs, err := bob.cons.Fetch(ctx, 1, 10*time.Second)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("bob's delivery: %d, %v", len(msgs), err)
	}
	if !slices.Equal(msgs[0].Data(), sealed) {
		t.Error("the envelope published at the next start is not the one stored")
	}
	if fresh, err := bob.process(ctx, msgs); err != nil || len(fresh) != 1 || fresh[0].Text() != "while the broker was down" {
		t.Fatalf("bob stored %v, %v", fresh, err)
	}
	receiveUntil(t, alice, "the message acknowledged", func(int) bool {
		e, err := alice.Message(ctx, au.Key, p.ID())
		return err == nil && e.State == StateSent
	})
}

// A stranger cannot grow the recipient's chat.db by opening session after
// session (at most maxSessionsPerPeer are kept), nor fill the notices or
// make it answer: messages in sessions it never had are counted, reported
// once, and start no session with a stranger.
func TestStrangerSessionsBounded(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	bu, mu := st.NewUser(t, "bob"), st.NewUser(t, "mallory")
	var notices sync.Map
	var calls int
	var callsMu sync.Mutex
	bob := openClient(t, st, bu, func(c *Config) {
		c.OnSessionReset = func(r SessionReset) {
			callsMu.Lock()
			calls++
			callsMu.Unlock()
			notices.Store(r.Peer, r)
		}
	})
	mallory := openClient(t, st, mu)
	mustAdd(t, mallory, "bob")
	toBob := sendSubject(bu.Key, mu.Key)
	const handshakes = maxSessionsPerPeer + 4
	for i := range handshakes {
		mustPublishRaw(t, mallory, toBob, sealV2In(t, mallory, "bob", "session "+string(rune('a'+i)), true))
	}
	receiveN(t, bob, handshakes)
	if n := countRows(t, bob, `SELECT COUNT(*) FROM sessions WHERE peer = ?`, mu.Key.String()); n != maxSessionsPerPeer {
		t.Errorf("bob keeps %d sessions with mallory, want %d", n, maxSessionsPerPeer)
	}
	// Messages in sessions bob never had: well-formed headers, random
	// session IDs.
	const junk = 5
	for range junk {
		env := []byte("KEZM\x02\x02")
		env = append(env, mu.Key[:]...)
		env = append(env, bu.Key[:]...)
		id := NewMessageID()
		env = append(env, id[:]...)
		env = append(env, make([]byte, 32+4+4+32)...)
		mustPublishRaw(t, mallory, toBob, env)
	}
	receiveUntil(t, bob, "the junk counted", func(int) bool { return bob.Stats().Undecryptable >= junk })
	s := bob.Stats()
	if s.Undecryptable != junk || s.SessionResets != 0 || s.Rejected != 0 {
		t.Errorf("bob's stats: %+v", s)
	}
	callsMu.Lock()
	if calls != 1 {
		t.Errorf("the stranger was reported %d times, want once", calls)
	}
	callsMu.Unlock()
	if r, ok := notices.Load(mu.Key); !ok || r.(SessionReset).Reset || r.(SessionReset).Handle != "" {
		t.Errorf("the notice: %+v", r)
	}
	if n := countRows(t, bob, `SELECT count FROM undecryptable WHERE peer = ? AND reset_due = 1`, mu.Key.String()); n != junk {
		t.Errorf("undecryptable count %d, want %d (due once mallory is a contact)", n, junk)
	}
	waitAcked(t, st, bu.Key)
}
