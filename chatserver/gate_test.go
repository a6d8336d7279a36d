package chatserver_test

import (
	"bytes"
	"context"
	"encoding/json"
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
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// gateUser is a registered user logged in to NATS with raw nats.go, the
// way an attacker with one registered key talks to the broker.
type gateUser struct {
	key  kez.PublicKey
	nc   *nats.Conn
	errs chan error
}

func gateLogin(t testing.TB, st *stacktest.Stack, name string) *gateUser {
	t.Helper()
	u := st.NewUser(t, name)
	g := &gateUser{key: u.Key, errs: make(chan error, 64)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, st.NATSURL, u.Identity, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case g.errs <- err:
		default:
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	g.nc = nc
	return g
}

// send asks the gate to store data for to, as g, and returns its answer.
func (g *gateUser) send(t testing.TB, to kez.PublicKey, data []byte) *nats.Msg {
	t.Helper()
	return g.sendTo(t, callout.SendSubjectPrefix+to.String()+"."+g.key.String(), data)
}

// sendTo publishes data to subject as a request and returns the answer.
func (g *gateUser) sendTo(t testing.TB, subject string, data []byte) *nats.Msg {
	t.Helper()
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%x", time.Now().UnixNano()))
	resp, err := g.nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return resp
}

// gateCode returns the err_code of a gate or JetStream error answer, 0
// for an acknowledgement.
func gateCode(t testing.TB, m *nats.Msg) (int, string) {
	t.Helper()
	var r struct {
		Stream string `json:"stream"`
		Error  *struct {
			Code        int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("answer %q: %v", m.Data, err)
	}
	if r.Error == nil {
		if r.Stream != callout.DefaultStream {
			t.Fatalf("answer %q is neither an error nor an acknowledgement", m.Data)
		}
		return 0, ""
	}
	return r.Error.Code, r.Error.Description
}

// wantViolation waits for the broker to report a permissions violation
// naming subj to g.
func (g *gateUser) wantViolation(t testing.TB, subj string) {
	t.Helper()
	g.nc.Flush()
	select {
	case err := <-g.errs:
		if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subj) {
			t.Fatalf("want a violation for %s, got %v", subj, err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no permissions violation for %s", subj)
	}
}

func streamMsgs(t testing.TB, st *stacktest.Stack) uint64 {
	t.Helper()
	s, err := st.JetStream(t).Stream(context.Background(), callout.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.Msgs
}

// TestGateSendRules: the gate stores mail for registered recipients under
// the true sender's token, refuses unknown recipients with a code, and a
// user cannot publish under another's token or outside the gate.
func TestGateSendRules(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob")

	// Positive control: a send to bob is stored under mallory's token.
	if code, desc := gateCode(t, mallory.send(t, bob.key, []byte("hello"))); code != 0 {
		t.Fatalf("send to bob refused: %d %s", code, desc)
	}
	if n := streamMsgs(t, st); n != 1 {
		t.Fatalf("stream holds %d", n)
	}
	if info := st.ConsumerInfo(t, bob.key); info.NumPending != 1 {
		t.Fatalf("bob's consumer (made by the gate) has %d pending", info.NumPending)
	}

	// An unregistered recipient is refused; nothing stored.
	stranger := stacktest.Identity("nobody").PublicKey()
	if code, _ := gateCode(t, mallory.send(t, stranger, []byte("x"))); code != callout.ErrCodeUnknownRecipient {
		t.Fatalf("send to an unregistered key: code %d", code)
	}
	// A recipient token that is no key at all.
	resp := mallory.sendTo(t, callout.SendSubjectPrefix+"notakey."+mallory.key.String(), []byte("x"))
	if code, _ := gateCode(t, resp); code != callout.ErrCodeBadRequest {
		t.Fatalf("send to a non-key: code %d", code)
	}

	// Under bob's sender token: the broker refuses the publish.
	subj := callout.SendSubjectPrefix + mallory.key.String() + "." + bob.key.String()
	mallory.nc.Publish(subj, []byte("I am bob"))
	mallory.wantViolation(t, subj)

	// Straight into the stream's subjects: no such grant.
	subj = callout.InboxSubjectPrefix + bob.key.String() + "." + mallory.key.String()
	mallory.nc.Publish(subj, []byte("bypass"))
	mallory.wantViolation(t, subj)

	// A reply subject the server reserves for imports or acknowledgements
	// is refused for a client.
	for _, reply := range []string{"_R_.abc.def", "$JS.ACK." + callout.DefaultStream + "." + bob.key.String() + ".1.1.1.1.0"} {
		mallory.nc.PublishRequest(callout.SendSubjectPrefix+bob.key.String()+"."+mallory.key.String(), reply, []byte("x"))
		mallory.wantViolation(t, reply)
	}
	if n := streamMsgs(t, st); n != 1 {
		t.Fatalf("stream holds %d, want 1", n)
	}
}

// TestGateChainedAnswers: a user who names another user's send, pull or
// ack subject as the reply of its own requests has the answers (the
// gate's to a consumer request) delivered there, in the user account;
// nats-server does not pass an answer on into the chat account (it never
// forwards what came through a service import to a stream export), and
// the reply subjects of sends, pulls and acknowledgements are not used. So what reaches the gate's subjects is only what users published
// themselves, and nothing is stored under a token that is not the
// publisher's.
func TestGateChainedAnswers(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol")
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("for bob"))); code != 0 { // bob's consumer, one message
		t.Fatal("refused")
	}
	if code, _ := gateCode(t, bob.send(t, mallory.key, []byte("for mallory"))); code != 0 {
		t.Fatal("refused")
	}
	// What arrives on the gate's subjects in the chat account.
	cnc := st.JetStream(t).Conn()
	seen := make(chan *nats.Msg, 256)
	for _, p := range []string{callout.SendSubjectPrefix, callout.PullSubjectPrefix, callout.ConsumerSubjectPrefix, callout.AckSubjectPrefix} {
		if _, err := cnc.ChanSubscribe(p+">", seen); err != nil {
			t.Fatal(err)
		}
	}
	if err := cnc.Flush(); err != nil {
		t.Fatal(err)
	}
	mk := mallory.key.String()
	targets := []string{
		callout.SendSubjectPrefix + carol.key.String() + "." + bob.key.String(),
		callout.ConsumerSubjectPrefix + bob.key.String(),
		callout.PullSubjectPrefix + bob.key.String(),
		callout.AckSubjectPrefix + bob.key.String(),
		callout.DeliverSubjectPrefix + bob.key.String() + ".x",
	}
	got, err := inbox.NewPuller(mallory.nc, mk, callout.DefaultStream).Fetch(context.Background(), 1, 5*time.Second)
	if err != nil || len(got) != 1 {
		t.Fatalf("mallory's fetch: %d, %v", len(got), err)
	}
	for _, reply := range targets {
		// A consumer request, answered by the gate on the import reply.
		mallory.nc.PublishRequest(callout.ConsumerSubjectPrefix+mk, reply, nil)
		// A batch of acknowledgements with that reply subject: the gate
		// answers none, and publishes to JetStream without a reply.
		mallory.nc.PublishRequest(callout.AckSubjectPrefix+mk, reply, []byte("+WPI "+got[0].Reply()+"\n"))
		// A send and a pull with that reply subject: the send is dropped
		// (not mallory's reply namespace), the pull's reply is not used.
		mallory.nc.PublishRequest(callout.SendSubjectPrefix+carol.key.String()+"."+mk, reply, []byte("from mallory"))
		mallory.nc.PublishRequest(callout.PullSubjectPrefix+mk, reply, []byte(`{"batch":5,"deliver":"x"}`))
	}
	// Positive control and fence: mallory's own sends arrive, and her
	// probe, published last on the same connection, shows everything
	// before it was handled.
	if code, _ := gateCode(t, mallory.send(t, carol.key, []byte("probe"))); code != 0 {
		t.Fatal("mallory's probe refused")
	}
	own := 0
	for {
		var m *nats.Msg
		select {
		case m = <-seen:
		case <-time.After(10 * time.Second):
			t.Fatal("the probe did not arrive")
		}
		if string(m.Data) == "probe" {
			break
		}
		for _, p := range []string{callout.SendSubjectPrefix, callout.PullSubjectPrefix, callout.ConsumerSubjectPrefix, callout.AckSubjectPrefix} {
			if strings.HasPrefix(m.Subject, p) {
				if !strings.HasSuffix(m.Subject, mk) {
					t.Errorf("an answer reached the gate as a request: %s %q", m.Subject, m.Data)
				} else if p == callout.SendSubjectPrefix {
					own++
				}
			}
		}
	}
	if own != len(targets) { // the positive control: the fence works
		t.Errorf("the gate's subjects carried %d of mallory's %d sends", own, len(targets))
	}
	js := st.JetStream(t)
	s, err := js.Stream(context.Background(), callout.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(callout.InboxSubjectPrefix+">"))
	if err != nil {
		t.Fatal(err)
	}
	for subj, n := range info.State.Subjects {
		if !strings.HasSuffix(subj, "."+mk) && !strings.HasSuffix(subj, "."+carol.key.String()) && !strings.HasSuffix(subj, "."+bob.key.String()) {
			t.Errorf("%d messages stored under %s", n, subj)
		}
	}
	if n := info.State.Subjects[callout.InboxSubjectPrefix+carol.key.String()+"."+bob.key.String()]; n != 0 {
		t.Errorf("%d messages stored for carol under bob's token", n)
	}
	if ci := st.ConsumerInfo(t, bob.key); ci.Delivered.Consumer != 0 || ci.NumWaiting != 0 {
		t.Errorf("bob's consumer was pulled: %+v", ci)
	}
}

// TestGateSenderQuota: past its burst a sender is refused with the quota
// code; another sender to the same recipient is not.
func TestGateSenderQuota(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{SenderRate: 0.001, SenderBurst: 3}})
	mallory, bob, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol")
	for i := range 3 {
		if code, _ := gateCode(t, mallory.send(t, bob.key, []byte("x"))); code != 0 {
			t.Fatalf("send %d refused: %d", i, code)
		}
	}
	if code, _ := gateCode(t, mallory.send(t, bob.key, []byte("x"))); code != callout.ErrCodeSenderQuota {
		t.Fatalf("4th send: code %d", code)
	}
	// Refused sends count too: unknown recipients do not escape the quota.
	if code, _ := gateCode(t, mallory.send(t, stacktest.Identity("nobody").PublicKey(), []byte("x"))); code != callout.ErrCodeSenderQuota {
		t.Fatalf("send to a stranger over quota: code %d", code)
	}
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("x"))); code != 0 {
		t.Fatalf("carol refused: %d", code)
	}
	body := fetch(t, st.ServerURL+"/metrics")
	for _, want := range []string{
		`kez_chat_gate_refusals_total{reason="sender_quota"} 2`,
		`kez_chat_gate_limit{name="sender_burst"} 3`,
		`kez_chat_gate_requests_total{kind="send",result="forwarded"} 4`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestGateRecipientQuota: one sender is held to its rate for one
// recipient; flooding bob does not use up what others may send him
// (each sender has its own bucket per recipient), nor the flooder's
// allowance for others.
func TestGateRecipientQuota(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{RecipientRate: 0.001, RecipientBurst: 2}})
	a, b, bob, dave := gateLogin(t, st, "anna"), gateLogin(t, st, "bert"), gateLogin(t, st, "bob"), gateLogin(t, st, "dave")
	for range 2 {
		if code, _ := gateCode(t, a.send(t, bob.key, []byte("x"))); code != 0 {
			t.Fatalf("refused: %d", code)
		}
	}
	if code, _ := gateCode(t, a.send(t, bob.key, []byte("x"))); code != callout.ErrCodeRecipientQuota {
		t.Fatalf("anna's 3rd message to bob: code %d", code)
	}
	if code, _ := gateCode(t, b.send(t, bob.key, []byte("x"))); code != 0 {
		t.Fatalf("bert's message to bob after anna's flood: code %d", code)
	}
	if code, _ := gateCode(t, a.send(t, dave.key, []byte("x"))); code != 0 {
		t.Fatalf("anna's message to dave: code %d", code)
	}
}

// TestGateUnreadCapPerSender: one sender leaves at most
// MaxMsgsPerSubject unread messages in one inbox; the stream refuses more
// to that sender only, and evicts nothing.
func TestGateUnreadCapPerSender(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{Inbox: callout.InboxConfig{MaxMsgsPerSubject: 2}})
	mallory, carol, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "carol"), gateLogin(t, st, "bob")
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("carol's"))); code != 0 {
		t.Fatal("carol refused")
	}
	for range 2 {
		if code, _ := gateCode(t, mallory.send(t, bob.key, []byte("x"))); code != 0 {
			t.Fatal("mallory refused early")
		}
	}
	code, desc := gateCode(t, mallory.send(t, bob.key, []byte("x")))
	if code == 0 || !strings.Contains(desc, "maximum messages per subject") {
		t.Fatalf("3rd unread message: %d %q", code, desc)
	}
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("carol's second"))); code != 0 {
		t.Fatal("carol refused after mallory's flood")
	}
	deadline := time.Now().Add(10 * time.Second) // the consumer's count follows the stream shortly
	for info := st.ConsumerInfo(t, bob.key); info.NumPending != 4; info = st.ConsumerInfo(t, bob.key) {
		if time.Now().After(deadline) {
			t.Fatalf("bob has %d waiting, want 4", info.NumPending)
		}
	}
}

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

// TestGateSenderUnreadCap: one sender has at most SenderUnread messages
// waiting in all inboxes together; once recipients read, it may send
// again.
func TestGateSenderUnreadCap(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{SenderUnread: 5, SenderRate: -1, RecipientRate: -1}})
	mallory, bob, carol := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob"), gateLogin(t, st, "carol")
	for i := range 5 {
		to := bob.key
		if i%2 == 1 {
			to = carol.key
		}
		if code, _ := gateCode(t, mallory.send(t, to, []byte("x"))); code != 0 {
			t.Fatalf("message %d refused: %d", i, code)
		}
	}
	if code, _ := gateCode(t, mallory.send(t, carol.key, []byte("x"))); code != callout.ErrCodeSenderUnread {
		t.Fatalf("the 6th unread message: code %d", code)
	}
	// Others still send; bob reads his three.
	if code, _ := gateCode(t, carol.send(t, bob.key, []byte("carol's"))); code != 0 {
		t.Fatal("carol refused")
	}
	ctx := context.Background()
	msgs, err := inbox.NewPuller(bob.nc, bob.key.String(), callout.DefaultStream).Fetch(ctx, 10, 0)
	if err != nil || len(msgs) != 4 {
		t.Fatalf("bob: %d, %v", len(msgs), err)
	}
	for _, m := range msgs {
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// The gate counts again at most once a second while over the cap.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := gateCode(t, mallory.send(t, carol.key, []byte("after bob read")))
		if code == 0 {
			break
		}
		if code != callout.ErrCodeSenderUnread || time.Now().After(deadline) {
			t.Fatalf("after bob read: code %d", code)
		}
	}
	if !strings.Contains(fetch(t, st.ServerURL+"/metrics"), `kez_chat_gate_refusals_total{reason="sender_unread"}`) {
		t.Error("no metric for the refusals")
	}
}

// TestStreamKeepsUnreadMailOnly: a full stream refuses new mail instead
// of evicting stored mail, and a message goes once its recipient
// acknowledged it (interest retention), which makes room again.
func TestStreamKeepsUnreadMailOnly(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{Inbox: callout.InboxConfig{MaxBytes: 16 << 10}, MailLimits: chatserver.NoMailLimits})
	mallory, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob")
	if code, _ := gateCode(t, bob.send(t, bob.key, []byte("first"))); code != 0 {
		t.Fatal("refused")
	}
	var desc string
	for i := 0; i < 100 && desc == ""; i++ {
		_, desc = gateCode(t, mallory.send(t, bob.key, bytes.Repeat([]byte{'x'}, 1024)))
	}
	if !strings.Contains(desc, "maximum bytes") {
		t.Fatalf("a full stream answered %q", desc)
	}
	ctx := context.Background()
	msgs, err := inbox.NewPuller(bob.nc, bob.key.String(), callout.DefaultStream).Fetch(ctx, 1, 0)
	if err != nil || len(msgs) != 1 || string(msgs[0].Data()) != "first" {
		t.Fatalf("the first message was evicted: %d, %v", len(msgs), err)
	}
	if err := msgs[0].Ack(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := gateCode(t, mallory.send(t, bob.key, []byte("after bob read")))
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after bob's acknowledgement: %d", code)
		}
	}
}

// TestGateAnswerSubject: a send is answered on its reply subject only when
// that is in the sender's own reply namespace (_INBOX.<sender>.…); any
// other reply (another user's, a wildcard, a malformed one, none) has the
// send dropped unanswered, and nothing is stored for it.
func TestGateAnswerSubject(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mallory, bob := gateLogin(t, st, "mallory"), gateLogin(t, st, "bob")
	mk, bk := mallory.key.String(), bob.key.String()
	mine, err := mallory.nc.SubscribeSync("_INBOX." + mk + ".>")
	if err != nil {
		t.Fatal(err)
	}
	bobs, err := bob.nc.SubscribeSync("_INBOX." + bk + ".>")
	if err != nil {
		t.Fatal(err)
	}
	subj := callout.SendSubjectPrefix + bk + "." + mk
	for _, reply := range []string{
		"", "_INBOX." + bk + ".x", "_INBOX." + mk, "_INBOX." + mk + ".", "_INBOX." + mk + "..x",
		"_INBOX." + mk + ".*", "_INBOX." + mk + ".>", "_INBOX." + mk + "x.y", "kez.v1.p2p." + mk,
		"_INBOX." + mk + "." + strings.Repeat("x", 200),
	} {
		m := nats.NewMsg(subj)
		m.Reply, m.Data = reply, []byte("x")
		if err := mallory.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// Positive control, and a fence: the same send with mallory's own
	// reply subject is stored and answered there.
	m := nats.NewMsg(subj)
	m.Reply, m.Data = "_INBOX."+mk+".t1", []byte("x")
	if err := mallory.nc.PublishMsg(m); err != nil {
		t.Fatal(err)
	}
	a, err := mine.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if a.Subject != "_INBOX."+mk+".t1" || gateCodeOf(t, a) != 0 {
		t.Fatalf("answer on %s: %s", a.Subject, a.Data)
	}
	if n := streamMsgs(t, st); n != 1 {
		t.Fatalf("stream holds %d, want 1 (the sends with a foreign or malformed reply dropped)", n)
	}
	if m, err := bobs.NextMsg(200 * time.Millisecond); err == nil {
		t.Fatalf("bob got an answer meant for no one of his: %s %s", m.Subject, m.Data)
	}
	if m, err := mine.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("a second answer: %s %s", m.Subject, m.Data)
	}
}

// gateCodeOf is gateCode for an answer that came on an answer subject.
func gateCodeOf(t testing.TB, m *nats.Msg) int {
	code, _ := gateCode(t, m)
	return code
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
	for _, l := range strings.Split(fetch(t, st.ServerURL+"/metrics"), "\n") {
		if v, ok := strings.CutPrefix(l, sample+" "); ok {
			return v
		}
	}
	return ""
}

// waitMetric polls the chat-server's metrics until sample has value want.
func waitMetric(t testing.TB, st *stacktest.Stack, sample, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := metricValue(t, st, sample); got != want; got = metricValue(t, st, sample) {
		if time.Now().After(deadline) {
			t.Fatalf("%s is %q, want %s", sample, got, want)
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
	big := strings.Repeat("+ACK "+r[3]+"\n", wire.MaxAckBytes/len(r[3])+1)
	bob.nc.Publish(callout.AckSubjectPrefix+B, []byte(big))
	bigLines := strings.Count(big, "\n")
	// A batch with a reply subject: the reply is ignored.
	bob.nc.PublishRequest(callout.AckSubjectPrefix+B, "_INBOX."+B+".ackreply", []byte("+WPI "+r[3]+"\n"))

	// Bob's valid batch, after all of that (the gate takes one user's
	// batches in order).
	bob.ackBatch(t, "+ACK "+r[0], "-NAK 1h "+r[1], "+TERM "+r[2], "+WPI "+r[3])
	lines := `kez_chat_gate_ack_lines_total{result="forwarded"}`
	waitMetric(t, st, lines, "5") // 4, and the +WPI with a reply subject
	want := map[string]string{
		`kez_chat_gate_ack_lines_total{result="dropped"}`:              fmt.Sprint(4 + len(bad) + len(over) + bigLines),
		`kez_chat_gate_ack_lines_total{result="limited"}`:              "0",
		`kez_chat_gate_requests_total{kind="ack",result="forwarded"}`:  "2",
		`kez_chat_gate_requests_total{kind="ack",result="dropped"}`:    "4",
		`kez_chat_gate_refusals_total{reason="bad_request"}`:           "4",
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
