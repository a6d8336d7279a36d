package chatserver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
)

// TestGatePullAndAckOnlyOwn: a user pulls and acknowledges only its own
// consumer, through the gate; the gate ignores malformed pulls.
func TestGatePullAndAckOnlyOwn(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob")
	if code, _ := gateCode(t, mallory.send(t, bob.key, []byte("for bob"))); code != 0 {
		t.Fatal("refused")
	}
	for _, subj := range []string{
		callout.PullSubjectPrefix + bob.key.String(),
		callout.ConsumerSubjectPrefix + bob.key.String(),
		"$JS.ACK." + callout.DefaultStream + "." + bob.key.String() + ".1.1.1.1.0",
		callout.AckSubjectPrefix + bob.key.String(),
	} {
		mallory.nc.Publish(subj, []byte(`{"batch":1,"deliver":"steal"}`))
		mallory.wantViolation(t, subj)
	}
	// Mallory cannot subscribe to bob's deliver subjects either.
	if _, err := mallory.nc.SubscribeSync(callout.DeliverSubjectPrefix + bob.key.String() + ".>"); err != nil {
		t.Fatal(err)
	}
	mallory.wantViolation(t, callout.DeliverSubjectPrefix+bob.key.String())

	// Bob pulls his own: a malformed token is dropped, a good one works.
	sub, err := bob.nc.SubscribeSync(callout.DeliverSubjectPrefix + bob.key.String() + ".t1")
	if err != nil {
		t.Fatal(err)
	}
	bob.nc.Publish(callout.PullSubjectPrefix+bob.key.String(), []byte(`{"batch":1,"deliver":"t.1"}`))
	bob.nc.Publish(callout.PullSubjectPrefix+bob.key.String(), []byte(`{"batch":1,"no_wait":true,"deliver":"t1"}`))
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "for bob" || !strings.HasPrefix(m.Reply, "$JS.ACK."+callout.DefaultStream+"."+bob.key.String()+".") {
		t.Fatalf("delivered %q reply %q", m.Data, m.Reply)
	}
	if err := bob.nc.Publish(callout.AckSubjectPrefix+bob.key.String(), []byte("+ACK "+m.Reply+"\n")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.ConsumerInfo(t, bob.key).NumAckPending != 0 {
		if time.Now().After(deadline) {
			t.Fatal("bob's acknowledgement did not arrive")
		}
	}
	body := fetch(t, st.ServerURL+"/metrics")
	if !strings.Contains(body, `kez_chat_gate_requests_total{kind="pull",result="dropped"} 1`) {
		t.Errorf("the malformed pull was not counted:\n%s", grepLines(body, "kez_chat_gate"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// ackBatch publishes lines (each ended with "\n") as one batch of g's
// acknowledgements to the gate.
func (g *gateUser) ackBatch(t testing.TB, lines ...string) {
	t.Helper()
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	if err := g.nc.Publish(callout.AckSubjectPrefix+g.key.String(), []byte(b.String())); err != nil {
		t.Fatal(err)
	}
}

// metricValue reads one sample of the chat-server's metrics ("" when
// missing).
func metricValue(t testing.TB, st *stacktest.Stack, sample string) string {
	t.Helper()
	return metricAt(t, st.ServerURL, sample)
}

// metricAt reads one sample of the metrics of the chat-server at url (""
// when missing).
func metricAt(t testing.TB, url, sample string) string {
	t.Helper()
	for _, l := range strings.Split(fetch(t, url+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			return v
		}
	}
	return ""
}

// waitMetric polls the chat-server's metrics until sample has value want.
func waitMetric(t testing.TB, st *stacktest.Stack, sample, want string) {
	t.Helper()
	if got, ok := poll(func() string { return metricValue(t, st, sample) }, func(got string) bool { return got == want }); !ok {
		t.Fatalf("%s is %q, want %s", sample, got, want)
	}
}

// poll calls get until done holds for what it returns, for at most 10 s,
// and returns the last value and whether done held for it.
func poll[T any](get func() T, done func(T) bool) (T, bool) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := get()
		if done(got) {
			return got, true
		}
		if time.Now().After(deadline) {
			return got, false
		}
	}
}

// TestGateAcks: acknowledgements reach JetStream only through the gate,
// in batches of lines that each name a delivery of the sender's own
// consumer with a verb the gate knows. Publishing to a $JS.ACK subject is
// refused by the broker, even for one's own delivery; lines naming
// another user's consumer, +NXT (a pull request inside an
// acknowledgement), unknown verbs, reasons, wildcards, other forms of
// the subject, and batches over the bounds are dropped, counted, and
// change nothing; bob's one valid batch acknowledges, naks, terminates
// and extends exactly the deliveries it names.
func TestGateAcks(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob")
	for i := range 4 {
		if code, _ := gateCode(t, mallory.send(t, bob.key, []byte(fmt.Sprint("for bob ", i)))); code != 0 {
			t.Fatal("refused")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := inbox.Open(ctx, mallory.nc, mallory.key.String(), 0); err != nil {
		t.Fatal(err)
	}
	got, err := inbox.NewPuller(bob.nc, bob.key.String(), callout.DefaultStream).Fetch(ctx, 4, 0)
	if err != nil || len(got) != 4 {
		t.Fatalf("bob's fetch: %d, %v", len(got), err)
	}
	r := make([]string, 4)
	for i, m := range got {
		r[i] = m.Reply()
	}
	if info := st.ConsumerInfo(t, bob.key); info.NumAckPending != 4 || info.AckFloor.Consumer != 0 {
		t.Fatalf("setup: %d pending, ack floor %d", info.NumAckPending, info.AckFloor.Consumer)
	}

	// Straight to JetStream: refused by the broker, bob's own included.
	bob.nc.Publish(r[1], []byte("+ACK"))
	bob.wantViolation(t, r[1])
	mallory.nc.Publish(r[1], []byte("+ACK"))
	mallory.wantViolation(t, r[1])

	// Mallory names bob's deliveries in her own batches.
	S, B, M := callout.DefaultStream, bob.key.String(), mallory.key.String()
	mallory.ackBatch(t, "+ACK "+r[1], "+TERM "+r[3], "-NAK "+r[1], "+ACK "+strings.Replace(r[1], B, M, 1)+".x")
	mallory.nc.Flush() // the gate has it before bob's batches below
	// Bob's own malformed lines, all on r[1] and r[3] (which the valid
	// batch leaves pending): none may take effect.
	bad := []string{
		"+NXT " + r[1],
		`+NXT {"batch":1,"expires":1000000000,"idle_heartbeat":1} ` + r[1],
		"+NXT " + `{"batch":1} ` + r[3],
		"+ACKX " + r[1], "ACK " + r[1], "+ack " + r[1], "+OK " + r[1], "+ACK" + r[1], "+ACK  " + r[1], "+ACK " + r[1] + " ",
		" +ACK " + r[1], "+ACK " + r[1] + "\r", "+TERM reason " + r[1], "+TERM " + r[1] + " reason",
		"-NAK x " + r[1], "-NAK -1s " + r[1], `-NAK {"delay":1} ` + r[1], "-NAK 1s 2s " + r[1], "+WPI " + r[1] + ".1",
		"+ACK $JS.ACK." + S + "." + B + ".*.*.*.*.*", "+ACK $JS.ACK." + S + "." + B + ".>", "+ACK $JS.ACK." + S + "." + B + ".1.*.2.1.0",
		"+ACK $JS.ACK." + S + "." + B + "." + S + "." + B + ".1.2.2.1.0.x", "+ACK $JS.ACK._." + B + "." + S + "." + B + ".1.2.2.1.0.x",
		"+ACK $JS.ACK.OTHER." + B + ".1.2.2.1.0", "+ACK $JS.ACK." + S + "." + M + ".1.2.2.1.0", "+ACK $JS.API.STREAM.DELETE." + S,
		"+ACK " + strings.Replace(r[1], ".1.", ".01x.", 1), "+ACK " + r[1] + "1234567890123456789012", "",
	}
	bob.ackBatch(t, bad...)
	// Over the bounds: 1,025 lines, and 128 KiB and more, dropped whole.
	over := make([]string, wire.MaxAckLines+1)
	for i := range over {
		over[i] = "+ACK " + r[1]
	}
	bob.ackBatch(t, over...)
	// A batch over 128 KiB is over the user connections' maximum payload
	// too: it never reaches the gate (nats.go refuses it, having learned
	// the limit at login; the server would close a connection that sent
	// it: callout.TestUserPayloadLimit).
	big := strings.Repeat("+ACK "+r[3]+"\n", wire.MaxAckBytes/len(r[3])+1)
	if err := bob.nc.Publish(callout.AckSubjectPrefix+B, []byte(big)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("an acknowledgement batch of %d bytes: %v", len(big), err)
	}
	// A batch with a reply subject: the reply is ignored.
	bob.nc.PublishRequest(callout.AckSubjectPrefix+B, "_INBOX."+B+".ackreply", []byte("+WPI "+r[3]+"\n"))

	// Bob's valid batch, after all of that (the gate takes one user's
	// batches in order).
	bob.ackBatch(t, "+ACK "+r[0], "-NAK 1h "+r[1], "+TERM "+r[2], "+WPI "+r[3])
	lines := `kez_chat_gate_ack_lines_total{result="forwarded"}`
	waitMetric(t, st, lines, "5") // 4, and the +WPI with a reply subject
	want := map[string]string{
		`kez_chat_gate_ack_lines_total{result="dropped"}`:              fmt.Sprint(4 + len(bad) + len(over)),
		`kez_chat_gate_ack_lines_total{result="limited"}`:              "0",
		`kez_chat_gate_requests_total{kind="ack",result="forwarded"}`:  "2",
		`kez_chat_gate_requests_total{kind="ack",result="dropped"}`:    "3",
		`kez_chat_gate_refusals_total{reason="bad_request"}`:           "3",
		`kez_chat_gate_limit{name="ack_rate"}`:                         "2000",
		`kez_chat_gate_limit{name="ack_burst"}`:                        "10000",
		`kez_chat_gate_requests_total{kind="ack",result="refused"}`:    "0",
		`kez_chat_gate_refusals_total{reason="ack_quota"}`:             "0",
		`kez_chat_gate_requests_total{kind="pull",result="forwarded"}`: "1",
	}
	for sample, v := range want {
		if got := metricValue(t, st, sample); got != v {
			t.Errorf("%s = %s, want %s", sample, got, v)
		}
	}
	// r[0] acknowledged and r[2] terminated: the ack floor moves to the
	// first; r[1] (naked for an hour) and r[3] (in progress) stay pending.
	deadline := time.Now().Add(10 * time.Second)
	info := st.ConsumerInfo(t, bob.key)
	for ; info.NumAckPending != 2 || info.AckFloor.Consumer != 1; info = st.ConsumerInfo(t, bob.key) {
		if time.Now().After(deadline) {
			t.Fatalf("after bob's batch: %d pending, ack floor %d; want 2 and 1", info.NumAckPending, info.AckFloor.Consumer)
		}
	}
	if info.NumRedelivered != 0 || info.NumWaiting != 0 {
		t.Errorf("bob's consumer: %d redelivered, %d waiting pulls", info.NumRedelivered, info.NumWaiting)
	}
	// Mallory's consumer, which her batches also named, is untouched.
	if mi := st.ConsumerInfo(t, mallory.key); mi.Delivered.Consumer != 0 || mi.NumAckPending != 0 {
		t.Errorf("mallory's consumer: %+v", mi)
	}
}

// TestGateAckRate: one user's acknowledgement lines are held to a token
// bucket; the lines over it are dropped (JetStream redelivers those
// messages later) and counted, and another user's are not affected.
func TestGateAckRate(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{AckRate: 0.001, AckBurst: 3}})
	mallory, bob, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	read := func(u *gateUser, n int) []string {
		for i := range n {
			if code, _ := gateCode(t, mallory.send(t, u.key, []byte(fmt.Sprint("x", i)))); code != 0 {
				t.Fatal("refused")
			}
		}
		got, err := inbox.NewPuller(u.nc, u.key.String(), callout.DefaultStream).Fetch(ctx, n, 0)
		if err != nil || len(got) != n {
			t.Fatalf("fetch: %d, %v", len(got), err)
		}
		var lines []string
		for _, m := range got {
			lines = append(lines, "+ACK "+m.Reply())
		}
		return lines
	}
	b, c := read(bob, 5), read(carol, 2)
	bob.ackBatch(t, b...)   // 3 forwarded, 2 limited
	bob.ackBatch(t, b[4])   // limited
	carol.ackBatch(t, c...) // forwarded
	waitMetric(t, st, `kez_chat_gate_ack_lines_total{result="forwarded"}`, "5")
	for sample, v := range map[string]string{
		`kez_chat_gate_ack_lines_total{result="limited"}`:             "3",
		`kez_chat_gate_ack_lines_total{result="dropped"}`:             "0",
		`kez_chat_gate_requests_total{kind="ack",result="forwarded"}`: "2",
		`kez_chat_gate_requests_total{kind="ack",result="dropped"}`:   "1",
		`kez_chat_gate_refusals_total{reason="ack_quota"}`:            "1",
		`kez_chat_gate_limit{name="ack_burst"}`:                       "3",
	} {
		if got := metricValue(t, st, sample); got != v {
			t.Errorf("%s = %s, want %s", sample, got, v)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for st.ConsumerInfo(t, bob.key).NumAckPending != 2 || st.ConsumerInfo(t, carol.key).NumAckPending != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("bob has %d pending (want the 2 over his rate), carol %d", st.ConsumerInfo(t, bob.key).NumAckPending, st.ConsumerInfo(t, carol.key).NumAckPending)
		}
	}
}
