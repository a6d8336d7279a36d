package chatserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
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
