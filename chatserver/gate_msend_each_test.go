package chatserver_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// msendEach asks the gate to store each copy for its device, as g, with
// the Nats-Msg-Id id, and returns the parsed answer (or the whole
// refusal's code).
func (g *gateUser) msendEach(t testing.TB, copies []wire.MultiCopy, id string) (wire.MultiAnswer, int) {
	t.Helper()
	body, err := wire.EncodeMultiPayload(copies)
	if err != nil {
		t.Fatal(err)
	}
	devices := make([]kez.PublicKey, len(copies))
	for i, c := range copies {
		devices[i] = c.Device
	}
	return g.msendRaw(t, body, devices, id)
}

// stored returns the data and Nats-Msg-Id of the last message to's
// consumer holds from from, fetched as the operator could (not
// acknowledged).
func stored(t testing.TB, st *stacktest.Stack, to, from kez.PublicKey) (string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := st.JetStream(t).Consumer(ctx, callout.DefaultStream, callout.ConsumerName(to))
	if err != nil {
		t.Fatalf("the consumer of %s: %v", to, err)
	}
	batch, err := c.FetchNoWait(100)
	if err != nil {
		t.Fatal(err)
	}
	var data, id string
	found := false
	for m := range batch.Messages() {
		if m.Subject() == callout.InboxSubjectPrefix+to.String()+"."+from.String() {
			data, id, found = string(m.Data()), m.Headers().Get(jetstream.MsgIDHeader), true
		}
	}
	if err := batch.Error(); err != nil || !found {
		t.Fatalf("the inbox of %s holds nothing from %s (%v)", to, from, err)
	}
	return data, id
}

// TestGateMultiSendEach: with a payload per recipient, each recipient's
// inbox gets its own payload under the true sender's token, each copy
// with the ID <sender>-<id>-<recipient>: the same request again is a
// duplicate for each, and a one-to-one send of one of the copies with
// the ID <id>-<recipient> (what a client's outbox publishes it with
// after a crash) is a duplicate too, so either path stores a copy once.
func TestGateMultiSendEach(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob, carol, dave := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol"), gateLogin(t, st, "dave")
	copies := []wire.MultiCopy{{Device: bob.key, Payload: []byte("for bob")}, {Device: carol.key, Payload: []byte("for carol, longer")}, {Device: dave.key}}
	a, code := mallory.msendEach(t, copies, "k1")
	if code != 0 || a.Stored != 3 || a.Duplicates != 0 || len(a.Refused) != 0 {
		t.Fatalf("first: %+v, code %d", a, code)
	}
	if info := st.ConsumerInfo(t, dave.key); info.NumPending != 1 {
		t.Fatalf("dave's consumer (made by the gate) has %d pending", info.NumPending)
	}
	for _, c := range copies {
		data, id := stored(t, st, c.Device, mallory.key)
		if data != string(c.Payload) || id != mallory.key.String()+"-k1-"+c.Device.String() {
			t.Fatalf("%s's inbox holds %q with the ID %q", c.Device, data, id)
		}
	}
	if a, code = mallory.msendEach(t, copies, "k1"); code != 0 || a.Duplicates != 3 || a.Stored != 0 {
		t.Fatalf("again: %+v, code %d", a, code)
	}
	// The outbox's one-to-one path for bob's copy: a duplicate.
	m := nats.NewMsg(callout.SendSubjectPrefix + bob.key.String() + "." + mallory.key.String())
	m.Data = copies[0].Payload
	m.Header.Set(jetstream.MsgIDHeader, "k1-"+bob.key.String())
	resp, err := mallory.nc.RequestMsg(m, 5*time.Second)
	if err != nil || gateCodeOf(t, resp) != 0 || !isDuplicate(t, resp) {
		t.Fatalf("one-to-one send of a stored copy: %v %s", err, resp.Data)
	}
	// And the other way: a copy stored one to one is a duplicate here.
	m = nats.NewMsg(callout.SendSubjectPrefix + bob.key.String() + "." + mallory.key.String())
	m.Data = []byte("k2 for bob")
	m.Header.Set(jetstream.MsgIDHeader, "k2-"+bob.key.String())
	if resp, err = mallory.nc.RequestMsg(m, 5*time.Second); err != nil || gateCodeOf(t, resp) != 0 {
		t.Fatalf("one-to-one k2: %v %s", err, resp.Data)
	}
	a, code = mallory.msendEach(t, []wire.MultiCopy{{Device: bob.key, Payload: []byte("k2 for bob")}, {Device: carol.key, Payload: []byte("k2 for carol")}}, "k2")
	if code != 0 || a.Stored != 1 || a.Duplicates != 1 {
		t.Fatalf("k2: %+v, code %d", a, code)
	}
	if n := inboxCount(t, st, bob.key, mallory.key); n != 2 {
		t.Fatalf("bob holds %d from mallory, want 2", n)
	}
	wantMetrics(t, st,
		`kez_chat_gate_msend_copies_total{result="stored"} 4`,
		`kez_chat_gate_msend_copies_total{result="duplicate"} 4`,
		`kez_chat_gate_requests_total{kind="msend",result="forwarded"} 3`,
	)
}

// isDuplicate reports whether a send's answer says the stream had the
// message already.
func isDuplicate(t testing.TB, m *nats.Msg) bool {
	t.Helper()
	var ack jetstream.PubAck
	if err := json.Unmarshal(m.Data, &ack); err != nil {
		t.Fatalf("answer %q: %v", m.Data, err)
	}
	return ack.Duplicate
}

// TestGateMultiSendEachMalformed: every malformed body with a payload per
// recipient is refused whole with the bad-request code, a payload larger
// than the stream's messages too (even when the others are small), and a
// body with a reply outside the sender's namespace is dropped unanswered;
// nothing is stored.
func TestGateMultiSendEachMalformed(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol")
	raw := func(n int, parts ...[]byte) []byte {
		b := binary.BigEndian.AppendUint16([]byte(wire.MultiPayloadMagic), uint16(n))
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	cp := func(k kez.PublicKey, size uint32, payload []byte) []byte {
		return append(binary.BigEndian.AppendUint32(append([]byte(nil), k[:]...), size), payload...)
	}
	many := make([][]byte, wire.MaxMultiRecipients+1)
	for i := range many {
		many[i] = cp(stacktest.Identity(fmt.Sprint("r", i)).PublicKey(), 1, []byte("x"))
	}
	good := raw(2, cp(bob.key, 1, []byte("b")), cp(carol.key, 1, []byte("c")))
	for name, body := range map[string][]byte{
		"n = 0":          raw(0),
		"n = 1025":       raw(len(many), many...),
		"duplicates":     raw(2, cp(bob.key, 1, []byte("b")), cp(bob.key, 1, []byte("b"))),
		"self":           raw(2, cp(bob.key, 1, []byte("b")), cp(mallory.key, 1, []byte("m"))),
		"truncated":      good[:len(good)-1],
		"trailing":       append(good[:len(good):len(good)], 'x'),
		"length past":    raw(1, cp(bob.key, 1<<31, []byte("b"))),
		"count > copies": raw(3, cp(bob.key, 1, []byte("b")), cp(carol.key, 1, []byte("c"))),
		"one too large":  raw(2, cp(bob.key, 1, []byte("b")), cp(carol.key, 64<<10+1, make([]byte, 64<<10+1))),
	} {
		if _, code := mallory.msendRaw(t, body, []kez.PublicKey{bob.key}, ""); code != callout.ErrCodeBadRequest {
			t.Errorf("%s: code %d", name, code)
		}
	}
	// A foreign reply: dropped, nothing stored; the fence after it is
	// answered.
	m := nats.NewMsg(callout.MultiSendSubjectPrefix + mallory.key.String())
	m.Reply, m.Data = "_INBOX."+bob.key.String()+".x", good
	if err := mallory.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	if _, code := mallory.msendRaw(t, raw(1, cp(bob.key, 0, nil)), []kez.PublicKey{bob.key}, ""); code != 0 {
		t.Fatalf("fence: code %d", code)
	}
	if n := streamMsgs(t, st); n != 1 {
		t.Fatalf("the stream holds %d, want the fence's 1", n)
	}
	wantMetrics(t, st, `kez_chat_gate_requests_total{kind="msend",result="refused"} 9`, `kez_chat_gate_requests_total{kind="msend",result="dropped"} 1`)
}

// TestGateMultiSendEachMixed: revoked and unknown recipients mixed with
// good ones are refused one by one with the code a send to each would
// get; the good ones each get their own payload.
func TestGateMultiSendEachMixed(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "carol")
	bob := st.NewUser(t, "bob")
	phone := st.AddDevice(t, bob, "phone").PublicKey()
	st.RevokeDevice(t, bob, phone)
	laptop := st.AddDevice(t, bob, "laptop").PublicKey()
	stranger := stacktest.Identity("nobody").PublicKey()
	copies := []wire.MultiCopy{
		{Device: carol.key, Payload: []byte("carol")}, {Device: phone, Payload: []byte("phone")}, {Device: stranger, Payload: []byte("stranger")},
		{Device: bob.Key, Payload: []byte("bob")}, {Device: laptop, Payload: []byte("laptop")},
	}
	a, code := mallory.msendEach(t, copies, "x")
	if code != 0 || a.Stored != 3 || len(a.Refused) != 2 {
		t.Fatalf("answer %+v, code %d", a, code)
	}
	want := map[kez.PublicKey]int{phone: callout.ErrCodeRecipientRevoked, stranger: callout.ErrCodeUnknownRecipient}
	for _, r := range a.Refused {
		if want[r.Device] != r.Code {
			t.Errorf("refused %s with %d", r.Device, r.Code)
		}
	}
	if n := inboxCount(t, st, phone, mallory.key); n != 0 {
		t.Fatalf("the revoked device got %d", n)
	}
	for k, p := range map[kez.PublicKey]string{carol.key: "carol", bob.Key: "bob", laptop: "laptop"} {
		if data, _ := stored(t, st, k, mallory.key); data != p {
			t.Fatalf("%s got %q, want %q", k, data, p)
		}
	}
}

// TestGateMultiSendEachCharge: a request with a payload per recipient
// costs the sender one message, one copy per recipient and the sum of
// the payloads' bytes; each copy costs its recipient's pair bucket its
// own size. Over the sender's buckets the whole is refused; over a pair
// bucket that copy alone.
func TestGateMultiSendEachCharge(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{
		SenderRate: 0.001, SenderBurst: 2,
		SenderCopyRate: 0.001, SenderCopyBurst: 6,
		SenderBytesRate: 0.001, SenderBytesBurst: 1000,
		RecipientBytesRate: 0.001, RecipientBytesBurst: 500,
	}})
	mallory, carol, dave := gateLogin(t, st, "mallory"), gateLogin(t, st, "carol"), gateLogin(t, st, "dave")
	bob, erin := gateLogin(t, st, "bob"), gateLogin(t, st, "erin")
	sized := func(sizes map[*gateUser]int) []wire.MultiCopy {
		var cs []wire.MultiCopy
		for u, n := range sizes {
			cs = append(cs, wire.MultiCopy{Device: u.key, Payload: make([]byte, n)})
		}
		return cs
	}
	// Bytes: 100 + 200 + 600 = 900 of 1000 (n × the largest would be
	// 1800); the 600 bytes are over dave's pair bucket (500) alone.
	a, code := mallory.msendEach(t, sized(map[*gateUser]int{bob: 100, carol: 200, dave: 600}), "")
	if code != 0 || a.Stored != 2 || len(a.Refused) != 1 || a.Refused[0].Device != dave.key || a.Refused[0].Code != callout.ErrCodeRecipientQuota {
		t.Fatalf("mallory's first: %+v %d", a, code)
	}
	// 50 + 60 more is over 1000 (n × the first would be 100, under).
	if _, code := mallory.msendEach(t, sized(map[*gateUser]int{bob: 50, carol: 60}), ""); code != callout.ErrCodeSenderQuota {
		t.Fatalf("over the byte bucket: code %d", code)
	}
	// Messages: one per request whatever its copies: two pass, the third
	// is over the burst of 2.
	if a, code := carol.msendEach(t, sized(map[*gateUser]int{bob: 1, dave: 1, erin: 1}), ""); code != 0 || a.Stored != 3 {
		t.Fatalf("carol's first: %+v %d", a, code)
	}
	if a, code := carol.msendEach(t, sized(map[*gateUser]int{bob: 1}), ""); code != 0 || a.Stored != 1 {
		t.Fatalf("carol's second: %+v %d", a, code)
	}
	if _, code := carol.msendEach(t, sized(map[*gateUser]int{bob: 1}), ""); code != callout.ErrCodeSenderQuota {
		t.Fatalf("over the message bucket: code %d", code)
	}
	// Copies: 4 of 6, then 3 more is over.
	if a, code := dave.msendEach(t, sized(map[*gateUser]int{bob: 1, carol: 1, erin: 1, mallory: 1}), ""); code != 0 || a.Stored != 4 {
		t.Fatalf("dave's first: %+v %d", a, code)
	}
	if _, code := dave.msendEach(t, sized(map[*gateUser]int{bob: 1, carol: 1, erin: 1}), ""); code != callout.ErrCodeSenderQuota {
		t.Fatalf("over the copy bucket: code %d", code)
	}
}

// rekeyPayload is the size of a group key sealed pairwise in a new
// session (the handshake prefix, the inner message and its 141-byte
// body): a little more than the client makes.
const rekeyPayload = 1600

// TestGateRekey1000 shows that under the default limits one person can
// send a pairwise-sealed payload (a new group key) to each of 1,000
// recipient devices, then one group message to all of them: the copies
// travel in as few requests as the connection's maximum payload allows
// (a dozen), where one send per device is refused after the sender's
// burst of 500 messages. The 2,000 copies are as many as the sender's
// default cap of unread messages allows.
func TestGateRekey1000(t *testing.T) {
	if testing.Short() {
		t.Skip("registers 1,000 users")
	}
	st := stacktest.Start(t, stacktest.Options{})
	sender := gateLogin(t, st, "sender")
	devices := make([]kez.PublicKey, 1000)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	start := time.Now()
	for i := range devices {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			devices[i] = st.NewUser(t, fmt.Sprintf("m%04d", i)).Key
		})
	}
	wg.Wait()
	t.Logf("1,000 users registered in %v", time.Since(start))
	copies := make([]wire.MultiCopy, len(devices))
	for i, d := range devices {
		copies[i] = wire.MultiCopy{Device: d, Payload: []byte(fmt.Sprintf("%0*d", rekeyPayload, i))}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	runs := wire.SplitMultiPayload(copies, min(int(sender.nc.MaxPayload()), callout.DefaultMaxPayload)-1024)
	start = time.Now()
	var total wire.MultiAnswer
	for _, run := range runs {
		a, err := inbox.MultiSendEach(ctx, sender.nc, sender.key, run, "rekey")
		if err != nil {
			t.Fatalf("a run of %d copies: %v", len(run), err)
		}
		total.Stored += a.Stored
		total.Refused = append(total.Refused, a.Refused...)
	}
	if total.Stored != 1000 || len(total.Refused) != 0 {
		t.Fatalf("rekey: %d stored, refused %v", total.Stored, total.Refused)
	}
	t.Logf("1,000 keys of %d bytes in %d requests, %v", rekeyPayload, len(runs), time.Since(start))
	if len(runs) > 20 {
		t.Fatalf("%d requests", len(runs))
	}
	// The group message to the same 1,000: one request.
	a, err := inbox.MultiSend(ctx, sender.nc, sender.key, devices, make([]byte, 256), "message")
	if err != nil || a.Stored != 1000 {
		t.Fatalf("the message: %+v %v", a, err)
	}
	for _, i := range []int{0, 499, 999} {
		if data, _ := stored(t, st, devices[i], sender.key); len(data) != 256 {
			t.Fatalf("m%04d's last message is %d bytes", i, len(data))
		}
		if n := inboxCount(t, st, devices[i], sender.key); n != 2 {
			t.Fatalf("m%04d holds %d", i, n)
		}
	}
	// The contrast: the rekey as it was, one send per device published
	// at once (as the client did), is refused past the sender's burst of
	// 500 messages (another sender, whose buckets are full; they refill
	// at 50 a second).
	other := gateLogin(t, st, "other")
	answers, err := other.nc.SubscribeSync("_INBOX." + other.key.String() + ".contrast.*")
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range devices {
		m := nats.NewMsg(callout.SendSubjectPrefix + d.String() + "." + other.key.String())
		m.Reply, m.Data = fmt.Sprint("_INBOX.", other.key, ".contrast.", i), []byte("x")
		if err := other.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	over := 0
	for range devices {
		m, err := answers.NextMsg(30 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := gateCode(t, m); code == callout.ErrCodeSenderQuota {
			over++
		}
	}
	if over == 0 {
		t.Fatal("1,000 one-to-one sends at once were all taken")
	}
	t.Logf("of 1,000 one-to-one sends at once, %d were over the sender's rate", over)
}
