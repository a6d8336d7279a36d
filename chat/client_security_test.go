package chat

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publishRaw publishes envelope bytes as c's user, within its permissions,
// with its own Nats-Msg-Id, and returns the stream's answer.
func publishRaw(t *testing.T, c *testClient, subject string, data []byte, timeout time.Duration) (*jetstream.PubAck, error) {
	t.Helper()
	js, err := jetstream.New(c.Conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	msg := nats.NewMsg(subject)
	msg.Data = data
	msg.Header.Set(jetstream.MsgIDHeader, NewMessageID().String())
	return js.PublishMsg(ctx, msg)
}

func mustPublishRaw(t *testing.T, c *testClient, subject string, data []byte) {
	t.Helper()
	if _, err := publishRaw(t, c, subject, data, 10*time.Second); err != nil {
		t.Fatalf("%s publishes to %s: %v", c.user.Name, subject, err)
	}
}

// Crafted envelopes published by a registered user, within what the broker
// lets them do, are each rejected by the recipient: logged, terminated,
// never stored or shown.
func TestCraftedEnvelopesRejected(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, mu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "mallory"), st.NewUser(t, "carol")
	alice, bob, mallory := openClient(t, st, au), openClient(t, st, bu), openClient(t, st, mu)
	mustAdd(t, bob, "alice")
	mustAdd(t, bob, "mallory") // even a contact cannot get these through
	toBob := sendSubject(bu.Key, mu.Key)
	ctx := testCtx(t)

	seal := func(from *kez.Identity, to *stacktest.User, text string) []byte {
		t.Helper()
		env, err := Seal(from, Recipient{Key: to.Key, EncryptionKey: to.Identity.EncryptionKey(0).PublicKey()}, Message{Kind: KindText, Body: []byte(text)})
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	rejectedBefore := func(want uint64, why string) {
		t.Helper()
		receiveUntil(t, bob, why+" rejected", func(int) bool { return bob.Stats().Rejected >= want })
	}

	// 1. A tampered ciphertext.
	env := seal(mu.Identity, bu, "tampered")
	env[len(env)-20] ^= 0x01
	mustPublishRaw(t, mallory, toBob, env)
	rejectedBefore(1, "tampered")
	if !contains(bob.log.String(), "does not decrypt") {
		t.Error("the log does not say why the tampered envelope was rejected")
	}

	// 2. An envelope sealed to someone else (carol), dropped in bob's inbox.
	mustPublishRaw(t, mallory, toBob, seal(mu.Identity, cu, "for carol"))
	rejectedBefore(2, "another recipient")
	if !contains(bob.log.String(), "addressed to someone else") {
		t.Error("the log does not say the envelope was for someone else")
	}

	// 3. Alice's genuine envelope, published by mallory under her own
	// sender token: the inner sender is not the subject's.
	fromAlice := seal(au.Identity, bu, "alice's words")
	mustPublishRaw(t, mallory, toBob, fromAlice)
	rejectedBefore(3, "sender mismatch")
	if !contains(bob.log.String(), "sender does not match") {
		t.Error("the log does not say the sender did not match")
	}

	// 4. Mallory cannot use alice's sender token at all: the broker refuses.
	if _, err := publishRaw(t, mallory, sendSubject(bu.Key, au.Key), fromAlice, 500*time.Millisecond); err == nil {
		t.Error("the broker let mallory publish as alice")
	}
	if err := mallory.Conn().LastError(); !errors.Is(err, nats.ErrPermissionViolation) || !contains(err.Error(), sendSubject(bu.Key, au.Key)) {
		t.Errorf("the broker did not report a permissions violation to mallory: %v", err)
	}

	// 5. A replay: the same envelope published again (new Nats-Msg-Id,
	// so the stream's duplicate window does not catch it), before and
	// after bob stored the first copy. Bob shows it once.
	mustPublishRaw(t, alice, sendSubject(bu.Key, au.Key), fromAlice)
	mustPublishRaw(t, alice, sendSubject(bu.Key, au.Key), fromAlice)
	receiveN(t, bob, 1)
	mustPublishRaw(t, alice, sendSubject(bu.Key, au.Key), fromAlice)
	receiveUntil(t, bob, "two duplicates", func(int) bool { return bob.Stats().Duplicates >= 2 })
	in := mustInbox(t, bob, true)
	if !slices.Equal(texts(in), []string{"alice's words"}) {
		t.Errorf("bob's inbox: %q", texts(in))
	}
	for _, who := range []string{"alice", "mallory"} {
		h, err := bob.History(ctx, who, 0)
		if err != nil {
			t.Fatal(err)
		}
		if who == "mallory" && len(h) != 0 {
			t.Errorf("rejected envelopes reached the history: %q", texts(h))
		}
	}
	if s := bob.Stats(); s.Rejected != 3 || s.Received != 1 {
		t.Errorf("bob's stats: %+v", s)
	}
	// Nothing is left pending: rejected deliveries were terminated (the
	// acknowledgements pass through the gate, a moment behind).
	waitAcked(t, st, bu.Key)
}

// The broker only ever sees ciphertext: a recording proxy between both
// clients and nats-server never carries the message text.
func TestWireCarriesNoPlaintext(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	rec := startWiretap(t, st)
	alice, bob := openClient(t, st, au, via(rec)), openClient(t, st, bu, via(rec))
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")

	const marker = "PLAINTEXT-MARKER-7f3a9c do not leak"
	ctx := testCtx(t)
	p, err := alice.SendAsync(ctx, "bob", marker, WaitReceipt())
	if err != nil {
		t.Fatal(err)
	}
	receiveN(t, bob, 1)
	s, err := p.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	in := mustInbox(t, bob, false)
	if len(in) != 1 || in[0].Text() != marker || s.DeliveredAt.IsZero() {
		t.Fatalf("bob got %q, receipt %v", texts(in), s.DeliveredAt)
	}
	wire := rec.Bytes()
	if !bytes.Contains(wire, []byte(sendSubject(bu.Key, au.Key))) || !bytes.Contains(wire, []byte(envelopeMagic)) {
		t.Fatalf("the proxy did not see the traffic (%d bytes)", len(wire))
	}
	for _, needle := range []string{marker, "PLAINTEXT-MARKER", "7f3a9c"} {
		if bytes.Contains(wire, []byte(needle)) {
			t.Errorf("%q crossed the wire in the clear", needle)
		}
	}
}

// A message received but not yet stored when the client dies is delivered
// again; one stored but whose acknowledgement was lost is not shown twice.
func TestCrashBeforeStoreLosesNothing(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au)
	mustAdd(t, alice, "bob")
	bob := openClient(t, st, bu, func(c *Config) { c.AckWait = 300 * time.Millisecond })
	mustAdd(t, bob, "alice")
	s := mustSend(t, alice, "bob", "survive the crash")
	ctx := testCtx(t)

	// "Crash": the delivery reaches bob's process, which dies before
	// storing (nothing stored, nothing acknowledged).
	msgs, err := bob.cons.Fetch(ctx, 1, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatal("no delivery")
	}
	if f := wireForm(msgs[0].Data()); f != "v2 handshake" {
		t.Fatalf("the delivery is %s, want the handshake of a session", f)
	}
	if _, err := bob.Message(ctx, au.Key, s.ID); !errors.Is(err, ErrNoMessage) {
		t.Fatalf("stored before processing: %v", err)
	}
	// After the ack wait the server delivers it again.
	receiveN(t, bob, 1)
	if e, err := bob.Message(ctx, au.Key, s.ID); err != nil || e.Text() != "survive the crash" {
		t.Fatalf("after redelivery: %+v, %v", e, err)
	}
	// The first delivery, processed late (stored, but its ack was lost),
	// is a duplicate: its message key is used up; not new, not shown
	// again.
	fresh, err := bob.process(ctx, msgs)
	if err != nil || len(fresh) != 0 {
		t.Fatalf("processing the stale delivery: %d new, %v", len(fresh), err)
	}
	if s := bob.Stats(); s.Duplicates != 1 || s.Rejected != 0 || s.Received != 1 {
		t.Errorf("bob's stats: %+v", s)
	}
	if in := mustInbox(t, bob, true); len(in) != 1 {
		t.Errorf("inbox: %q", texts(in))
	}
}

// Messages sent before a broker restart are all received after it, by a
// client that was offline and by one that kept a Run loop open.
func TestBrokerRestartLosesNothing(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, alice, "carol")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)

	got := make(chan string, 10)
	runCtx, stop := context.WithCancel(ctx)
	runDone := make(chan error, 1)
	go func() { runDone <- bob.Run(runCtx, func(e *Entry) { got <- e.Text() }) }()

	mustSend(t, alice, "bob", "one")
	mustSend(t, alice, "carol", "carol one")
	if m := <-got; m != "one" {
		t.Fatalf("bob got %q", m)
	}
	st.RestartNATS()
	mustSend(t, alice, "bob", "two")
	mustSend(t, alice, "carol", "carol two")
	var after []string
	for len(after) < 1 {
		select {
		case m := <-got:
			after = append(after, m)
		case <-ctx.Done():
			t.Fatal("bob's live loop received nothing after the restart")
		}
	}
	stop()
	if err := <-runDone; err != nil {
		t.Fatal(err)
	}
	if after[0] != "two" {
		t.Errorf("bob after the restart: %q", after)
	}

	// Carol was offline throughout; she connects after the restart.
	carol := openClient(t, st, cu)
	mustAdd(t, carol, "alice")
	receiveN(t, carol, 2)
	if in := mustInbox(t, carol, false); !slices.Equal(texts(in), []string{"carol one", "carol two"}) {
		t.Errorf("carol's inbox: %q", texts(in))
	}
}
