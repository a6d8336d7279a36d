package chatserver_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/cputime"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// msend asks the gate to store payload for every device of devices, as
// g, with the Nats-Msg-Id id, and returns the parsed answer (or the
// whole refusal's code).
func (g *gateUser) msend(t testing.TB, devices []kez.PublicKey, payload []byte, id string) (wire.MultiAnswer, int) {
	t.Helper()
	body, err := wire.EncodeMultiSend(devices, payload)
	if err != nil {
		t.Fatal(err)
	}
	return g.msendRaw(t, body, devices, id)
}

// msendRaw sends body as a multi-recipient send and parses the answer
// for devices.
func (g *gateUser) msendRaw(t testing.TB, body []byte, devices []kez.PublicKey, id string) (wire.MultiAnswer, int) {
	t.Helper()
	m := nats.NewMsg(callout.MultiSendSubjectPrefix + g.key.String())
	m.Data = body
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	resp, err := g.nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatalf("msend: %v", err)
	}
	a, err := wire.ParseMultiAnswer(resp.Data, devices)
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return wire.MultiAnswer{}, int(ae.ErrorCode)
	}
	if err != nil {
		t.Fatalf("answer %s: %v", resp.Data, err)
	}
	return a, 0
}

// inboxCount is how many messages the stream holds under to's inbox from
// from.
func inboxCount(t testing.TB, st *stacktest.Stack, to, from kez.PublicKey) uint64 {
	t.Helper()
	s, err := st.JetStream(t).Stream(context.Background(), callout.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	subj := callout.InboxSubjectPrefix + to.String() + "." + from.String()
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(subj))
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Subjects[subj]
}

func wantMetrics(t testing.TB, st *stacktest.Stack, wants ...string) {
	t.Helper()
	body := fetch(t, st.ServerURL+"/metrics")
	for _, want := range wants {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestGateMultiSend: one payload reaches every recipient's inbox under
// the true sender's token, each copy with its own Nats-Msg-Id: sending
// the same ID again is a duplicate for those who have it, a new
// recipient with a reused ID is stored (no deduplication across
// recipients), and a one-to-one send with the same ID is not shadowed.
func TestGateMultiSend(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob, carol, dave := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol"), gateLogin(t, st, "dave")
	to := []kez.PublicKey{bob.key, carol.key}
	a, code := mallory.msend(t, to, []byte("to the group"), "m1")
	if code != 0 || a.Stored != 2 || a.Duplicates != 0 || len(a.Refused) != 0 {
		t.Fatalf("first msend: %+v, code %d", a, code)
	}
	for _, r := range to {
		if n := inboxCount(t, st, r, mallory.key); n != 1 {
			t.Fatalf("%s's inbox holds %d from mallory", r, n)
		}
	}
	if info := st.ConsumerInfo(t, carol.key); info.NumPending != 1 {
		t.Fatalf("carol's consumer (made by the gate) has %d pending", info.NumPending)
	}
	// Sent again (a client retrying after a lost answer): duplicates.
	if a, code = mallory.msend(t, to, []byte("to the group"), "m1"); code != 0 || a.Duplicates != 2 || a.Stored != 0 {
		t.Fatalf("msend again: %+v, code %d", a, code)
	}
	// The same ID for another recipient is that recipient's own copy.
	if a, code = mallory.msend(t, []kez.PublicKey{dave.key, bob.key}, []byte("to the group"), "m1"); code != 0 || a.Stored != 1 || a.Duplicates != 1 {
		t.Fatalf("msend with dave: %+v, code %d", a, code)
	}
	// A one-to-one send reusing the ID is stored.
	m := nats.NewMsg(callout.SendSubjectPrefix + bob.key.String() + "." + mallory.key.String())
	m.Data = []byte("one to one")
	m.Header.Set(jetstream.MsgIDHeader, "m1")
	resp, err := mallory.nc.RequestMsg(m, 5*time.Second)
	if err != nil || gateCodeOf(t, resp) != 0 || strings.Contains(string(resp.Data), `"duplicate"`) {
		t.Fatalf("one-to-one send with the same ID: %v %s", err, resp.Data)
	}
	// Another sender's identical ID shadows nothing of mallory's.
	if a, code = carol.msend(t, []kez.PublicKey{bob.key}, []byte("carol's"), "m1"); code != 0 || a.Stored != 1 {
		t.Fatalf("carol's msend with mallory's ID: %+v, code %d", a, code)
	}
	if n := inboxCount(t, st, bob.key, mallory.key); n != 2 {
		t.Fatalf("bob holds %d from mallory, want 2", n)
	}
	wantMetrics(t, st,
		`kez_chat_gate_msend_copies_total{result="stored"} 4`,
		`kez_chat_gate_msend_copies_total{result="duplicate"} 3`,
		`kez_chat_gate_requests_total{kind="msend",result="forwarded"} 4`,
		`kez_chat_gate_msends_in_flight 0`,
		`kez_chat_gate_limit{name="sender_copy_burst"} 20000`,
	)
}

// TestGateMultiSendMalformed: every malformed body is refused whole with
// the bad-request code, and a payload larger than the stream's messages
// too; nothing is stored.
func TestGateMultiSendMalformed(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob")
	raw := func(n int, keys ...kez.PublicKey) []byte {
		b := binary.BigEndian.AppendUint16([]byte(wire.MultiSendMagic), uint16(n))
		for _, k := range keys {
			b = append(b, k[:]...)
		}
		return append(b, "payload"...)
	}
	many := make([]kez.PublicKey, wire.MaxMultiRecipients+1)
	for i := range many {
		many[i] = stacktest.Identity(fmt.Sprint("r", i)).PublicKey()
	}
	for name, body := range map[string][]byte{
		"empty":      nil,
		"no magic":   append([]byte("KZMX"), raw(1, bob.key)[4:]...),
		"n = 0":      raw(0),
		"n = 1025":   raw(len(many), many...),
		"duplicates": raw(2, bob.key, bob.key),
		"self":       raw(2, bob.key, mallory.key),
		"truncated":  raw(2, bob.key)[:6+32+10],
		"too large":  append(raw(1, bob.key), make([]byte, 64<<10)...),
	} {
		if _, code := mallory.msendRaw(t, body, []kez.PublicKey{bob.key}, ""); code != callout.ErrCodeBadRequest {
			t.Errorf("%s: code %d", name, code)
		}
	}
	if n := streamMsgs(t, st); n != 0 {
		t.Fatalf("the stream holds %d", n)
	}
	wantMetrics(t, st, `kez_chat_gate_requests_total{kind="msend",result="refused"} 8`)
}

// TestGateMultiSendSubjects: a user sends to many only under its own
// token (the broker refuses the rest), and only with a reply subject in
// its own reply namespace (the gate drops the rest unanswered, storing
// nothing).
func TestGateMultiSendSubjects(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob")
	mk, bk := mallory.key.String(), bob.key.String()
	body, _ := wire.EncodeMultiSend([]kez.PublicKey{bob.key}, []byte("x"))
	for _, subj := range []string{callout.MultiSendSubjectPrefix + bk, callout.MultiSendSubjectPrefix + mk + "." + bk, callout.MultiSendSubjectPrefix + "*"} {
		mallory.nc.PublishRequest(subj, "_INBOX."+mk+".x", body)
		mallory.wantViolation(t, subj)
	}
	bobs, err := bob.nc.SubscribeSync("_INBOX." + bk + ".>")
	if err != nil {
		t.Fatal(err)
	}
	for _, reply := range []string{"", "_INBOX." + bk + ".x", "_INBOX." + mk, "_INBOX." + mk + ".*", "kez.v1.p2p." + mk} {
		m := nats.NewMsg(callout.MultiSendSubjectPrefix + mk)
		m.Reply, m.Data = reply, body
		if err := mallory.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// The fence: mallory's own msend, handled after those, is answered.
	if a, code := mallory.msend(t, []kez.PublicKey{bob.key}, []byte("probe"), ""); code != 0 || a.Stored != 1 {
		t.Fatalf("probe: %+v %d", a, code)
	}
	if n := streamMsgs(t, st); n != 1 {
		t.Fatalf("stream holds %d, want 1", n)
	}
	if m, err := bobs.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("bob got an answer: %s %s", m.Subject, m.Data)
	}
	wantMetrics(t, st, `kez_chat_gate_requests_total{kind="msend",result="dropped"} 5`)
}

// TestGateMultiSendMixed: revoked, unknown and not-a-person recipients
// mixed with good ones are refused one by one, with the code a send to
// each would get; the good ones are stored. A revoked sender is refused
// whole.
func TestGateMultiSendMixed(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "carol")
	bob := st.NewUser(t, "bob")
	phone := st.AddDevice(t, bob, "phone")
	st.RevokeDevice(t, bob, phone.PublicKey())
	laptop := st.AddDevice(t, bob, "laptop").PublicKey()
	stranger := stacktest.Identity("nobody").PublicKey()
	to := []kez.PublicKey{carol.key, phone.PublicKey(), stranger, bob.Key, laptop}
	a, code := mallory.msend(t, to, []byte("hi"), "x")
	if code != 0 || a.Stored != 3 || len(a.Refused) != 2 {
		t.Fatalf("answer %+v, code %d", a, code)
	}
	want := map[kez.PublicKey]int{phone.PublicKey(): callout.ErrCodeRecipientRevoked, stranger: callout.ErrCodeUnknownRecipient}
	for _, r := range a.Refused {
		if want[r.Device] != r.Code {
			t.Errorf("refused %s with %d", r.Device, r.Code)
		}
	}
	if n := inboxCount(t, st, phone.PublicKey(), mallory.key); n != 0 {
		t.Fatalf("the revoked device got %d", n)
	}
	if n := inboxCount(t, st, laptop, mallory.key); n != 1 {
		t.Fatalf("bob's laptop got %d", n)
	}
	wantMetrics(t, st,
		`kez_chat_gate_refusals_total{reason="revoked_recipient"} 1`,
		`kez_chat_gate_refusals_total{reason="unknown_recipient"} 1`,
		`kez_chat_gate_msend_copies_total{result="refused"} 2`,
	)
}

// TestGateMultiSendFlood: the copies of multi-recipient sends draw on the
// sender's copy bucket (a send takes one too) and its byte bucket counts
// the payload once per recipient; the pair buckets hold as for sends.
// Over them the whole send, or the copy for that recipient, is refused.
func TestGateMultiSendFlood(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{
		SenderCopyRate: 0.001, SenderCopyBurst: 5, SenderBytesRate: 0.001, SenderBytesBurst: 1000,
		RecipientRate: 0.001, RecipientBurst: 2,
	}})
	mallory, bob, carol, dave := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol"), gateLogin(t, st, "dave")
	to := []kez.PublicKey{bob.key, carol.key}
	if a, code := mallory.msend(t, to, []byte("1"), ""); code != 0 || a.Stored != 2 {
		t.Fatalf("first: %+v %d", a, code)
	}
	// bob and carol's pair buckets hold one more; dave has his own.
	if a, code := mallory.msend(t, to, []byte("2"), ""); code != 0 || a.Stored != 2 {
		t.Fatalf("second: %+v %d", a, code)
	}
	// One copy left: a send takes it, and a msend of two is refused.
	if code, _ := gateCode(t, mallory.send(t, dave.key, []byte("3"))); code != 0 {
		t.Fatalf("send: %d", code)
	}
	if _, code := mallory.msend(t, []kez.PublicKey{dave.key, carol.key}, []byte("4"), ""); code != callout.ErrCodeSenderQuota {
		t.Fatalf("over the copy bucket: code %d", code)
	}
	// Another sender is not held up: carol's pair bucket to bob is hers.
	a, code := carol.msend(t, []kez.PublicKey{bob.key, dave.key}, []byte("c"), "")
	if code != 0 || a.Stored != 2 {
		t.Fatalf("carol: %+v %d", a, code)
	}
	// The bytes: 3 recipients × 400 bytes is over a 1000-byte burst.
	if _, code := dave.msend(t, []kez.PublicKey{bob.key, carol.key, mallory.key}, make([]byte, 400), ""); code != callout.ErrCodeSenderQuota {
		t.Fatalf("over the byte bucket: code %d", code)
	}
	// A pair bucket spent: carol's third copy to bob is refused alone.
	carol.msend(t, []kez.PublicKey{bob.key}, []byte("c2"), "")
	a, code = carol.msend(t, []kez.PublicKey{bob.key, mallory.key}, []byte("c3"), "")
	if code != 0 || a.Stored != 1 || len(a.Refused) != 1 || a.Refused[0].Device != bob.key || a.Refused[0].Code != callout.ErrCodeRecipientQuota {
		t.Fatalf("over bob's pair bucket: %+v %d", a, code)
	}
}

// TestMultiSendClient: inbox.MultiSend, the client side, stores through
// the gate and returns its answer; a refusal of the whole comes back as
// the JetStream API error.
func TestMultiSendClient(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{SenderCopyRate: 0.001, SenderCopyBurst: 2}})
	mallory, bob, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, err := inbox.MultiSend(ctx, mallory.nc, mallory.key, []kez.PublicKey{bob.key, carol.key}, []byte("x"), "id")
	if err != nil || a.Stored != 2 {
		t.Fatalf("%+v %v", a, err)
	}
	_, err = inbox.MultiSend(ctx, mallory.nc, mallory.key, []kez.PublicKey{bob.key}, []byte("x"), "id2")
	var ae *jetstream.APIError
	if !errors.As(err, &ae) || ae.ErrorCode != callout.ErrCodeSenderQuota {
		t.Fatalf("over the copy bucket: %v", err)
	}
}

// BenchmarkMultiSend compares, in the same run, storing one 256-byte
// payload for 100 recipient devices as one multi-recipient send with 100
// one-to-one sends of it (all published before the answers are awaited,
// as clients do). Limits are off. Besides the time, each reports the
// process's CPU time per operation (cpu-ns/op: the client, the gate and
// the in-process nats-server together).
func BenchmarkMultiSend(b *testing.B) {
	st := stacktest.Start(b, stacktest.Options{MailLimits: chatserver.NoMailLimits, Inbox: callout.InboxConfig{MaxMsgsPerSubject: 1 << 20}})
	sender := gateLogin(b, st, "sender")
	devices := make([]kez.PublicKey, 100)
	for i := range devices {
		devices[i] = st.NewUser(b, fmt.Sprint("member", i)).Key
	}
	payload := make([]byte, 256)
	ctx := context.Background()
	pub, err := inbox.NewPublisher(sender.nc, sender.key.String(), 1024, 30*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pub.Close)
	// The gate makes each recipient's consumer on its first copy: not
	// part of either figure.
	if _, err := inbox.MultiSend(ctx, sender.nc, sender.key, devices, payload, "warm-up"); err != nil {
		b.Fatal(err)
	}
	n := 0
	b.Run("msend-100", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			n++
			a, err := inbox.MultiSend(ctx, sender.nc, sender.key, devices, payload, fmt.Sprint("m", n))
			if err != nil || a.Stored != len(devices) {
				b.Fatalf("%+v %v", a, err)
			}
		}
	})
	b.Run("send-100", func(b *testing.B) {
		defer reportCPU(b)()
		for b.Loop() {
			n++
			fs := make([]*inbox.Future, len(devices))
			for i, d := range devices {
				m := nats.NewMsg(callout.SendSubjectPrefix + d.String() + "." + sender.key.String())
				m.Data = payload
				m.Header.Set(jetstream.MsgIDHeader, fmt.Sprint("s", n, "-", i))
				if fs[i], err = pub.PublishMsgAsync(m); err != nil {
					b.Fatal(err)
				}
			}
			for _, f := range fs {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Fatal(err)
				}
			}
		}
	})
}

// reportCPU starts counting the process's CPU time; the function it
// returns reports it per operation.
func reportCPU(b *testing.B) func() {
	start, ok := cputime.Process()
	return func() {
		if end, ok2 := cputime.Process(); ok && ok2 && b.N > 0 {
			b.ReportMetric(float64(end-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// TestGateMultiSendUnknownFlood: recipients that hold no handle cost the
// sender one message of its send rate each, as sends to them would, so a
// multi-recipient send of 1,024 made-up keys looks up no more of them
// than the sender's message bucket holds; the rest is refused (21429)
// without a look-up, a registered recipient after them included.
func TestGateMultiSendUnknownFlood(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{SenderRate: 0.001, SenderBurst: 5}})
	mallory, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "carol")
	to := make([]kez.PublicKey, 0, 1024)
	for i := range 1023 {
		to = append(to, stacktest.Identity(fmt.Sprintf("nobody%d", i)).PublicKey())
	}
	to = append(to, carol.key)
	a, code := mallory.msend(t, to, []byte("hi"), "")
	if code != 0 || a.Stored != 0 || len(a.Refused) != len(to) {
		t.Fatalf("answer: stored %d, refused %d, code %d", a.Stored, len(a.Refused), code)
	}
	// The request took one message; four unknown recipients took the
	// other four.
	codes := map[int]int{}
	for _, r := range a.Refused {
		codes[r.Code]++
	}
	if codes[callout.ErrCodeUnknownRecipient] != 4 || codes[callout.ErrCodeSenderQuota] != len(to)-4 {
		t.Fatalf("refusals by code: %v", codes)
	}
	wantMetrics(t, st, `kez_chat_gate_refusals_total{reason="unknown_recipient"} 4`)
	if n := inboxCount(t, st, carol.key, mallory.key); n != 0 {
		t.Fatalf("carol got %d", n)
	}
}
