package chatserver_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// operator is a connection made with one of the operator's keys from the
// keys folder, its asynchronous errors (permissions violations) captured.
type operator struct{ gateUser }

// operatorLogin logs in with the keys folder's admin key (account CHAT)
// or system key (account SYS) and checks that NATS places it there.
func operatorLogin(t *testing.T, st *stacktest.Stack, account string) (*operator, *callout.Keys) {
	t.Helper()
	keys, err := callout.LoadOrCreateKeys(st.KeysDir)
	if err != nil {
		t.Fatal(err)
	}
	kp := keys.System
	if account == callout.DefaultChatAccount {
		kp = keys.Admin
	}
	o := &operator{gateUser{errs: make(chan error, 64)}}
	pub, _ := kp.PublicKey()
	opts := []nats.Option{nats.Nkey(pub, kp.Sign), nats.NoReconnect(),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { o.errs <- err })}
	if account == callout.DefaultChatAccount {
		opts = append(opts, nats.CustomInboxPrefix(callout.AdminReplyPrefix)) // nats --inbox-prefix _KEZ_ADMIN
	}
	nc, err := nats.Connect(st.NATSURL, opts...)
	if err != nil {
		t.Fatalf("login as %s: %v", pub, err)
	}
	t.Cleanup(nc.Close)
	o.nc = nc
	var ui struct {
		Data struct {
			User    string `json:"user"`
			Account string `json:"account"`
		} `json:"data"`
	}
	o.ask(t, "$SYS.REQ.USER.INFO", &ui) // as "nats account info" does
	if ui.Data.User != pub || ui.Data.Account != account {
		t.Fatalf("user info %+v, want %s in %s", ui.Data, pub, account)
	}
	return o, keys
}

// ask sends a request and decodes the answer into out.
func (o *operator) ask(t *testing.T, subject string, out any) {
	t.Helper()
	m, err := o.nc.Request(subject, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	if err := json.Unmarshal(m.Data, out); err != nil {
		t.Fatalf("%s answered %q: %v", subject, m.Data, err)
	}
}

// refused publishes to subject (or subscribes to it) and waits for the
// broker's permissions violation naming it.
func (o *operator) refused(t *testing.T, subscribe bool, subject string) {
	t.Helper()
	if subscribe {
		if _, err := o.nc.SubscribeSync(subject); err != nil {
			t.Fatal(err)
		}
	} else if err := o.nc.PublishRequest(subject, nats.NewInbox(), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	o.wantViolation(t, subject)
}

// docs/operators.md §2: the snippet's admin user (admin.nk, in the chat
// account) gets "nats account info" and "nats stream ls", and nothing of
// users' mail: no message, subject list or consumer of the inbox stream,
// no KEZ subject, no reply meant for a user or the chat-server.
func TestSnippetAdminUser(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := gateLogin(t, st, "alice"), gateLogin(t, st, "bob")
	if code, _ := gateCode(t, alice.send(t, bob.key, []byte("sealed for bob"))); code != 0 {
		t.Fatalf("send: %d", code)
	}
	admin, keys := operatorLogin(t, st, callout.DefaultChatAccount)

	// nats account info: $SYS.REQ.USER.INFO (above) and $JS.API.INFO.
	var ai struct {
		Streams int `json:"streams"`
		Error   any `json:"error"`
	}
	admin.ask(t, "$JS.API.INFO", &ai)
	if ai.Error != nil || ai.Streams != 1 {
		t.Fatalf("account info %+v", ai)
	}
	// nats stream ls: the streams' names and sizes.
	var names struct {
		Streams []string `json:"streams"`
	}
	admin.ask(t, "$JS.API.STREAM.NAMES", &names)
	if len(names.Streams) != 1 || names.Streams[0] != callout.DefaultStream {
		t.Fatalf("stream names %+v", names)
	}

	// The admin receives its own replies, on its own prefix, and nothing
	// else: not the answers to users' sends (on their _INBOX.<key>., which
	// the chat account exports to them) nor the chat-server's (_KEZ_GATE.).
	sniff, err := admin.nc.SubscribeSync(callout.AdminReplyPrefix + ".>")
	if err != nil {
		t.Fatal(err)
	}
	admin.ask(t, "$JS.API.INFO", &ai)
	if _, err := sniff.NextMsg(5 * time.Second); err != nil {
		t.Fatalf("positive control: the admin's own reply did not come: %v", err)
	}
	if code, _ := gateCode(t, alice.send(t, bob.key, []byte("sealed for bob, again"))); code != 0 {
		t.Fatalf("send: %d", code)
	}
	admin.nc.Flush()
	if n, _, _ := sniff.Pending(); n != 0 {
		m, _ := sniff.NextMsg(0)
		t.Fatalf("the admin received %d messages meant for others, the first on %s", n, m.Subject)
	}

	s := callout.DefaultStream
	for _, subj := range []string{
		"$JS.API.STREAM.INFO." + s, // its subjects_filter lists who wrote to whom
		"$JS.API.STREAM.MSG.GET." + s,
		"$JS.API.DIRECT.GET." + s,
		"$JS.API.STREAM.SNAPSHOT." + s,
		"$JS.API.STREAM.PURGE." + s,
		"$JS.API.STREAM.DELETE." + s,
		"$JS.API.STREAM.UPDATE." + s,
		"$JS.API.STREAM.CREATE.MINE",
		"$JS.API.CONSUMER.CREATE." + s + ".spy",
		"$JS.API.CONSUMER.LIST." + s,
		"$JS.API.CONSUMER.NAMES." + s,
		"$JS.API.CONSUMER.MSG.NEXT." + s + "." + bob.key.String(),
		callout.InboxSubjectPrefix + bob.key.String() + "." + alice.key.String(),
		callout.SendSubjectPrefix + bob.key.String() + "." + alice.key.String(),
		callout.DeliverSubjectPrefix + bob.key.String() + ".forged",
		callout.ConsumerSubjectPrefix + bob.key.String(),
		callout.PullSubjectPrefix + bob.key.String(),
		"$JS.ACK." + s + "." + bob.key.String() + ".1.1.1.1.0",
		"_INBOX." + alice.key.String() + ".forged", // a user's reply namespace
		wire.GateReplyPrefix + keys.ProvisionerPublicKey() + ".forged",
		"_R_.forged",
	} {
		admin.refused(t, false, subj)
	}
	for _, subj := range []string{">", "kez.v1.>", callout.InboxSubjects, "$JS.>", "_INBOX.>", "_INBOX." + alice.key.String() + ".>", wire.GateReplyPrefix + ">", "_R_.>"} {
		admin.refused(t, true, subj)
	}

	// Only the admin key logs in as the admin: another key naming it is
	// refused.
	other, _ := nkeys.CreateUser()
	if _, err := nats.Connect(st.NATSURL, nats.Nkey(keys.AdminPublicKey(), other.Sign), nats.NoReconnect()); err == nil {
		t.Fatal("a login naming the admin key but signed by another key was accepted")
	}
}

// docs/operators.md §2: the snippet's system user (system.nk) gets the
// servers' monitoring reports ("nats server report", "nats server list"),
// and cannot act on the servers, use the JetStream system API or listen
// to the system account's internal traffic.
func TestSnippetSystemUser(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := gateLogin(t, st, "alice")
	sys, _ := operatorLogin(t, st, callout.DefaultSysAccount)
	// What "nats server report connections|jetstream|accounts", "nats
	// server list" and "nats server info" ask; each answers with the
	// server's identity and data.
	var id string
	for _, subj := range []string{"$SYS.REQ.SERVER.PING", "$SYS.REQ.SERVER.PING.CONNZ", "$SYS.REQ.SERVER.PING.JSZ",
		"$SYS.REQ.SERVER.PING.ACCOUNTZ", "$SYS.REQ.SERVER.PING.VARZ", "$SYS.REQ.SERVER.PING.HEALTHZ",
		"$SYS.REQ.ACCOUNT." + callout.DefaultChatAccount + ".JSZ", "$SYS.REQ.ACCOUNT." + callout.DefaultUserAccount + ".CONNZ"} {
		var a struct {
			Server struct {
				ID string `json:"id"`
			} `json:"server"`
			Data  json.RawMessage `json:"data"`
			Error any             `json:"error"`
		}
		sys.ask(t, subj, &a)
		if a.Server.ID == "" || a.Error != nil || (subj != "$SYS.REQ.SERVER.PING" && len(a.Data) == 0) {
			t.Fatalf("%s: %+v", subj, a)
		}
		id = a.Server.ID
	}
	var server struct {
		Data json.RawMessage `json:"data"`
	}
	sys.ask(t, "$SYS.REQ.SERVER."+id+".VARZ", &server)
	if len(server.Data) == 0 {
		t.Fatal("no VARZ by server ID")
	}

	for _, subj := range []string{
		"$SYS.REQ.SERVER." + id + ".KICK", // disconnect a user
		"$SYS.REQ.SERVER." + id + ".LDM",
		"$SYS.REQ.SERVER." + id + ".RELOAD",
		"$SYS.REQ.SERVER.PING.PROFILEZ",
		"$JS.API.ACCOUNT.PURGE." + callout.DefaultChatAccount, // every user's mail
		"$JS.API.SERVER.REMOVE",
		"$JS.API.META.LEADER.STEPDOWN",
		"$SYS.REQ.CLAIMS.UPDATE",
		"$SYS.REQ.USER.AUTH",
		"$NRG.AE.forged",
		callout.InboxSubjectPrefix + alice.key.String() + ".forged",
	} {
		sys.refused(t, false, subj)
	}
	for _, subj := range []string{">", "$NRG.>", "$JSC.>", "$SYS.>", "$SYS.ACCOUNT.>"} {
		sys.refused(t, true, subj)
	}
	if !alice.nc.IsConnected() {
		t.Fatal("alice was disconnected")
	}
}

// The admin may not publish on a KEZ subject, but it may name one as the
// reply subject of what it may ask ($JS.API.INFO, $SYS.REQ.USER.INFO, …),
// and the answer is then published there inside the chat account, where
// the gate listens: nothing tells it from a user's own publish. The
// answer is not the admin's to choose (JSON, one line), so the gate drops
// it; but it must cost the user named in the subject nothing. Before the
// gate charged acknowledgement lines only once they parse, each such
// answer on kez.v1.ack.<bob> took one of bob's acknowledgements, and an
// admin asking faster than --ack-rate kept every one of bob's dropped.
func TestSnippetAdminAnswersCostUsersNothing(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{AckRate: 0.001, AckBurst: 5}})
	alice, bob := gateLogin(t, st, "alice"), gateLogin(t, st, "bob")
	if code, _ := gateCode(t, alice.send(t, bob.key, []byte("sealed for bob"))); code != 0 {
		t.Fatalf("send: %d", code)
	}
	got, err := inbox.NewPuller(bob.nc, bob.key.String(), callout.DefaultStream).Fetch(context.Background(), 1, 5*time.Second)
	if err != nil || len(got) != 1 {
		t.Fatalf("bob's fetch: %d, %v", len(got), err)
	}
	admin, _ := operatorLogin(t, st, callout.DefaultChatAccount)
	const junk = 10 // twice bob's burst
	for i := range junk {
		subj := "$JS.API.INFO"
		if i%2 == 1 {
			subj = "$SYS.REQ.USER.INFO"
		}
		if err := admin.nc.PublishRequest(subj, callout.AckSubjectPrefix+bob.key.String(), nil); err != nil {
			t.Fatal(err)
		}
	}
	// The answers reach the gate (and are dropped: no line is an
	// acknowledgement) ...
	waitMetric(t, st, `kez_chat_gate_requests_total{kind="ack",result="dropped"}`, fmt.Sprint(junk))
	if got := metricValue(t, st, `kez_chat_gate_ack_lines_total{result="forwarded"}`); got != "" && got != "0" {
		t.Fatalf("%s lines of the admin's answers were forwarded", got)
	}
	// ... and bob's own acknowledgement still goes through.
	bob.ackBatch(t, "+ACK "+got[0].Reply())
	deadline := time.Now().Add(10 * time.Second)
	for st.ConsumerInfo(t, bob.key).NumAckPending != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("bob's acknowledgement was dropped after the admin's answers (limited lines: %s)",
				metricValue(t, st, `kez_chat_gate_ack_lines_total{result="limited"}`))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
