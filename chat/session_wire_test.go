package chat

// Forward secrecy and post-compromise security of sessions (format v2),
// shown end to end (issue 15): two real clients talk through a recording
// TCP proxy (tcprec) in front of the stack's nats-server, and an attacker
// who holds every envelope that crossed the wire is then given a party's
// device: a copy of its chat.db as it is on the disk while the client runs
// (the database file and its write-ahead log), and its 24 words. The
// attacker uses what package session exports, the stored forms
// docs/spec/session.md documents, and the words; nothing of the client.

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/tcprec"
	"github.com/kez-lat/kez-chat/session"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// via points a client's NATS connection at the proxy.
func via(rec *tcprec.Proxy) clientOpt {
	return func(c *Config) { c.Client.NATSURL = "nats://" + rec.Addr() }
}

// startWiretap starts a recording proxy in front of the stack's NATS.
func startWiretap(t *testing.T, st *stacktest.Stack) *tcprec.Proxy {
	t.Helper()
	return tcprec.Start(t, strings.TrimPrefix(st.NATSURL, "nats://"))
}

// testClock is a clock a test sets.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *testClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// talk sends texts from one client to the other, and waits until the
// recipient stored them and the sender holds the recipient's receipts:
// nothing of the exchange is left in flight.
func talk(t *testing.T, from, to *testClient, texts ...string) {
	t.Helper()
	for _, s := range texts {
		mustSend(t, from, to.user.Name, s)
	}
	receiveN(t, to, len(texts))
	allDelivered(t, from, to)
}

// allDelivered receives as c until every message c sent to peer has its
// receipt.
func allDelivered(t *testing.T, c, peer *testClient) {
	t.Helper()
	receiveUntil(t, c, "the receipts of "+peer.user.Name, func(int) bool {
		h, err := c.History(testCtx(t), peer.user.Name, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range h {
			if !e.Incoming && e.DeliveredAt.IsZero() {
				return false
			}
		}
		return true
	})
}

// A value replaced, and one deleted, leave chat.db's files once the
// client's writes pause: the write-ahead log is scrubbed (truncated after
// a checkpoint) and secure_delete zeroes what the database file frees
// (without it, the file keeps earlier copies of the current value).
func TestStoreForgetsReplacedRows(t *testing.T) {
	home := t.TempDir()
	s, err := openStore(filepath.Join(home, DBFileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	ctx := testCtx(t)
	files := func() []byte {
		var b []byte
		for _, name := range []string{DBFileName, DBFileName + "-wal"} {
			f, err := os.ReadFile(filepath.Join(home, name))
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			b = append(b, f...)
		}
		return b
	}
	for _, v := range []string{"first-secret-7c1e", "second-secret-7c1e", "kept-value-7c1e"} {
		if err := s.setMeta(ctx, "secret", v); err != nil {
			t.Fatal(err)
		}
		if err := s.setMeta(ctx, "gone-"+v, v); err != nil {
			t.Fatal(err)
		}
		if err := s.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`DELETE FROM meta WHERE name = ?`, "gone-"+v)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	waitScrubbed(t, home)
	b := files()
	for _, gone := range []string{"first-secret-7c1e", "second-secret-7c1e"} {
		if bytes.Contains(b, []byte(gone)) {
			t.Errorf("%q is still in chat.db's files", gone)
		}
	}
	if n := bytes.Count(b, []byte("kept-value-7c1e")); n != 1 {
		t.Errorf("the current value is in the files %d times, want once", n)
	}
}

// Forward secrecy on the wire. Alice opens a session with two handshakes
// to bob's prekey k1, then they talk in three rounds both ways (each turn
// a DH ratchet step), receipts included; bob's prekey k1 is rotated and,
// after its grace period, deleted (bob's clock moved on). Then the
// attacker takes bob's device: chat.db as it is on the disk while bob's
// client runs, and his 24 words. Against every envelope recorded before
// that moment, trying everything it holds (see loot.read), it opens
// none: not the handshakes (k1 is gone; no key derived from the words
// opens them), not the messages bob received (their keys are deleted),
// not those bob sent (his chains only move forward). Of what is sent
// afterwards, it opens exactly what bob's stolen state must open until
// bob's next DH step: his next message (the mirror of his sending chain),
// alice's reply and her receipt (bob's ratchet key and root key derive
// their chain); after bob received them and sent with a fresh ratchet key,
// nothing. The positive control: bob's state taken before he received
// alice's last round (with k1 still stored) opens that round and the two
// handshakes, so the search finds the keys that are there.
func TestWireForwardSecrecy(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	rec := startWiretap(t, st)
	start := time.Now()
	clock := &testClock{t: start.Add(-10 * 24 * time.Hour)} // k1 is made 10 days ago
	bobHome := filepath.Join(t.TempDir(), "bob")
	alice := openClient(t, st, au, via(rec))
	bob := openClientIn(t, st, bu, bobHome, via(rec), func(c *Config) { c.Client.Clock = clock.Now })
	clock.Set(start) // k1 is 10 days old, and will expire in 4
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")

	talk(t, alice, bob, "handshake 1", "handshake 2")
	for r := 1; r <= 3; r++ {
		talk(t, bob, alice, fmt.Sprintf("bob %d.1", r), fmt.Sprintf("bob %d.2", r))
		if r < 3 {
			talk(t, alice, bob, fmt.Sprintf("alice %d.1", r), fmt.Sprintf("alice %d.2", r))
		}
	}
	for _, s := range []string{"alice 3.1", "alice 3.2", "alice 3.3"} {
		mustSend(t, alice, "bob", s)
	}
	early := steal(t, bob, bobHome, clock.Now()) // before bob receives round 3
	receiveN(t, bob, 3)
	allDelivered(t, alice, bob)

	// k1's grace period ends: the rotation deletes it. (The prekey made in
	// its place is dated 11 days ahead of the sig-server, which refuses
	// it; the deletion does not depend on that.)
	k1 := early.storedPrekeyIDs(t)
	if len(k1) != 1 {
		t.Fatalf("bob has prekeys %v, want one", k1)
	}
	clock.Set(start.Add(11*24*time.Hour + time.Hour))
	if err := bob.rotatePrekeys(testCtx(t)); err == nil {
		t.Error("the sig-server took a prekey dated 11 days ahead of it")
	}

	stolen := steal(t, bob, bobHome, clock.Now())
	theft := rec.Mark()
	if slices.Contains(stolen.storedPrekeyIDs(t), k1[0]) {
		t.Fatalf("prekey %d is still in bob's files after its grace period", k1[0])
	}
	talk(t, bob, alice, "after 1")
	talk(t, alice, bob, "after 2")
	talk(t, bob, alice, "after 3")

	envs := recorded(t, rec)
	handshakes, beforeTheft := 0, 0
	for _, e := range envs {
		if e.before(theft) {
			beforeTheft++
			if e.h.Type == session.TypeHandshake {
				handshakes++
			}
		}
	}
	// 2 handshakes, 15 more texts, a receipt for each batch.
	if handshakes != 2 || beforeTheft < 22 {
		t.Fatalf("recorded %d envelopes before the theft, %d of them handshakes", beforeTheft, handshakes)
	}
	opened := stolen.read(t, envs)
	for i, m := range opened {
		if envs[i].before(theft) {
			t.Errorf("bob's stolen state opens %q (%s from %s), recorded before the theft", label(m), wireForm(envs[i].env), m.From)
		}
	}
	if got, want := labels(opened), []string{"(receipt)", "after 1", "after 2"}; !slices.Equal(got, want) {
		t.Errorf("bob's stolen state opens %q, want %q (until bob's next DH step)", got, want)
	}

	// The positive control: bob's state before he received round 3.
	if got, want := labels(early.read(t, envs)), []string{"alice 3.1", "alice 3.2", "alice 3.3", "handshake 1", "handshake 2"}; !slices.Equal(got, want) {
		t.Errorf("bob's state taken before round 3 opens %q, want %q", got, want)
	}
	t.Logf("%d envelopes recorded (%d before the theft); the attacker held %d session states and %d prekeys (%d found only in the files' bytes)",
		len(envs), beforeTheft, len(stolen.states), len(stolen.prekeys), stolen.carved)
}

// Post-compromise security on the wire. Alice and bob talk until alice's
// last act was to receive a message of bob's new ratchet key; then the
// attacker takes alice's device (chat.db as on the disk while her client
// runs, and her words) and keeps recording. Bob sends two messages: the
// stolen state opens them (the same chain). Alice's client receives them
// and answers (its receipt) with a fresh ratchet key: one DH step with
// randomness the attacker never saw. From then on the attacker, passive,
// following the conversation with every state it can derive, opens
// nothing: not alice's receipt, not her next message, not bob's answers,
// nor anything after; nor anything recorded before the theft. The positive
// control: alice's state taken after that step (a second theft) opens what
// follows until her next step: her next message (the mirror of her sending
// chain), bob's receipt of it and his two answers.
func TestWirePostCompromise(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	rec := startWiretap(t, st)
	aliceHome := filepath.Join(t.TempDir(), "alice")
	alice := openClientIn(t, st, au, aliceHome, via(rec))
	bob := openClient(t, st, bu, via(rec))
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")

	talk(t, alice, bob, "a1", "a2")
	talk(t, bob, alice, "b1")
	talk(t, alice, bob, "a3") // alice ends by receiving bob's receipt: his new ratchet key

	stolen := steal(t, alice, aliceHome, time.Now())
	theft := rec.Mark()
	talk(t, bob, alice, "x1", "x2") // alice's receipt of these is her DH step
	healed := steal(t, alice, aliceHome, time.Now())
	talk(t, alice, bob, "y1")
	talk(t, bob, alice, "z1", "z2")
	talk(t, alice, bob, "w1")

	envs := recorded(t, rec)
	opened := stolen.read(t, envs)
	for i, m := range opened {
		if envs[i].before(theft) {
			t.Errorf("alice's stolen state opens %q, recorded before the theft", label(m))
		}
	}
	if got, want := labels(opened), []string{"x1", "x2"}; !slices.Equal(got, want) {
		t.Errorf("alice's stolen state opens %q, want %q (until her DH step)", got, want)
	}
	if got, want := labels(healed.read(t, envs)), []string{"(receipt)", "y1", "z1", "z2"}; !slices.Equal(got, want) {
		t.Errorf("alice's state taken after her DH step opens %q, want %q (until her next one)", got, want)
	}
}

// Replays on the wire, by an attacker who holds no key of alice's or
// bob's. Mallory, a registered user with a NATS login of her own, takes
// every envelope the wiretap saw go from alice to bob (handshakes,
// messages, receipts) and publishes each again: under alice's sender
// token the broker refuses each (a permissions violation: a user
// publishes only under her own key); under her own, the stream takes them
// and bob refuses each (its sender is not the subject's). Then the broker
// itself (the chat-server's login, which writes the inbox stream directly:
// an operator turned attacker) stores each in bob's inbox as from alice:
// bob drops each as a replay, its message key used up (a handshake goes to
// the session it started, which refuses it the same way). No replay
// starts a session reset, and bob shows every message once.
func TestWireReplayRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, mu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "mallory")
	rec := startWiretap(t, st)
	alice, bob := openClient(t, st, au, via(rec)), openClient(t, st, bu, via(rec))
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	talk(t, alice, bob, "h1", "h2")
	talk(t, bob, alice, "b1")
	talk(t, alice, bob, "a1", "a2")
	talk(t, bob, alice, "b2")
	talk(t, alice, bob, "a3")
	sent := []string{"h1", "h2", "a1", "a2", "a3"}
	waitAcked(t, st, bu.Key)

	var replays [][]byte
	handshakes := 0
	for _, e := range recorded(t, rec) {
		if e.h.Sender == au.Key && e.h.Recipient == bu.Key {
			replays = append(replays, e.env)
			if e.h.Type == session.TypeHandshake {
				handshakes++
			}
		}
	}
	if handshakes != 2 || len(replays) < len(sent)+2 {
		t.Fatalf("recorded %d envelopes from alice to bob, %d handshakes", len(replays), handshakes)
	}
	before := bob.Stats()

	ctx := testCtx(t)
	errs := make(chan error, 2*len(replays))
	nc, err := Connect(ctx, st.NATSURL, mu.Identity, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	asAlice := []string{sendSubject(bu.Key, au.Key), "kez.v1.inbox." + bu.Key.String() + "." + au.Key.String()}
	for _, env := range replays {
		for _, subj := range asAlice {
			if err := nc.Publish(subj, env); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-errs:
				if !errors.Is(err, nats.ErrPermissionViolation) || !contains(err.Error(), subj) {
					t.Fatalf("publishing to %s: %v, want a permissions violation", subj, err)
				}
			case <-ctx.Done():
				t.Fatalf("the broker did not refuse mallory's publish to %s", subj)
			}
		}
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	broker := st.JetStream(t)
	for _, env := range replays {
		for _, p := range []struct {
			js   jetstream.JetStream
			subj string
		}{{js, sendSubject(bu.Key, mu.Key)}, {broker, asAlice[1]}} {
			msg := nats.NewMsg(p.subj)
			msg.Data = env
			msg.Header.Set(jetstream.MsgIDHeader, NewMessageID().String())
			if _, err := p.js.PublishMsg(ctx, msg); err != nil {
				t.Fatalf("publishing to %s: %v", p.subj, err)
			}
		}
	}
	n := uint64(len(replays))
	receiveUntil(t, bob, "the replays refused", func(int) bool {
		s := bob.Stats()
		return s.Rejected >= before.Rejected+n && s.Duplicates >= before.Duplicates+n
	})
	waitAcked(t, st, bu.Key)
	s := bob.Stats()
	if s.Rejected != before.Rejected+n || s.Duplicates != before.Duplicates+n || s.Received != before.Received ||
		s.Undecryptable != 0 || s.SessionResets != 0 || s.ReceiptsReceived != before.ReceiptsReceived {
		t.Errorf("bob's stats after %d replays each way: %+v, before %+v", n, s, before)
	}
	if in := mustInbox(t, bob, true); !slices.Equal(texts(in), sent) {
		t.Errorf("bob's inbox: %q", texts(in))
	}
	if n := countRows(t, bob, `SELECT COUNT(*) FROM messages WHERE incoming = 1`); n != len(sent) {
		t.Errorf("bob stored %d messages, want %d", n, len(sent))
	}
}
