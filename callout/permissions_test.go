package callout_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// chatStack is a stack with the inbox stream provisioned and two users.
type chatStack struct {
	*stack
	alice, bob   *kez.Identity
	ak, bk       string // their keys
	aliceC, bobC *client
}

func newChatStack(t *testing.T) *chatStack {
	t.Helper()
	s := newStack(t, stackOptions{})
	provision(t, s, callout.InboxConfig{})
	c := &chatStack{stack: s, alice: s.user("alice@kez.lat"), bob: s.user("bob@kez.lat")}
	c.ak, c.bk = c.alice.PublicKey().String(), c.bob.PublicKey().String()
	c.aliceC, c.bobC = s.mustConnect(c.alice), s.mustConnect(c.bob)
	return c
}

func provision(t testing.TB, s *stack, cfg callout.InboxConfig) jetstream.Stream {
	t.Helper()
	nc, err := nats.Connect(s.srv.ClientURL(), s.keys.ProvisionerOptions()...)
	if err != nil {
		t.Fatalf("provisioner login: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := callout.ProvisionInbox(ctx, js, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func consumerConfig(key string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       key,
		FilterSubject: callout.InboxSubjectPrefix + key + ".>",
		AckPolicy:     jetstream.AckExplicitPolicy,
	}
}

// TestPeerRequestReply: any user may ask another where it listens and get
// the answer on its own reply prefix.
func TestPeerRequestReply(t *testing.T) {
	c := newChatStack(t)
	sub, err := c.bobC.Subscribe(callout.P2PSubjectPrefix+c.bk, func(m *nats.Msg) { _ = m.Respond([]byte("/ip4/127.0.0.1/tcp/1")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := c.bobC.Flush(); err != nil {
		t.Fatal(err)
	}
	reply, err := c.aliceC.Request(callout.P2PSubjectPrefix+c.bk, []byte("where?"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(reply.Data) != "/ip4/127.0.0.1/tcp/1" {
		t.Fatalf("reply %q", reply.Data)
	}
}

func TestCannotSubscribeToOthers(t *testing.T) {
	c := newChatStack(t)
	for _, subj := range []string{
		"_INBOX." + c.bk + ".>",
		callout.P2PSubjectPrefix + c.bk,
		callout.InboxSubjectPrefix + c.bk + ".>",
		callout.InboxSubjectPrefix + ">",
		callout.DeliverSubjectPrefix + c.bk + ".>",
		callout.DeliverSubjectPrefix + ">",
		">",
	} {
		if _, err := c.aliceC.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		c.aliceC.wantViolation(t, subj)
	}
}

func TestCannotPublishAsSomeoneElse(t *testing.T) {
	c := newChatStack(t)
	carol := c.user("carol@kez.lat").PublicKey().String()
	subj := callout.SendSubjectPrefix + carol + "." + c.bk // bob's sender token
	if err := c.aliceC.Publish(subj, []byte("hi, I am bob")); err != nil {
		t.Fatal(err)
	}
	c.aliceC.wantViolation(t, subj)
	for _, subj := range []string{callout.MultiSendSubjectPrefix + c.bk, callout.MultiSendSubjectPrefix + c.ak + "." + c.bk, callout.MultiSendSubjectPrefix + "*"} {
		if err := c.aliceC.Publish(subj, []byte("KZMS")); err != nil {
			t.Fatal(err)
		}
		c.aliceC.wantViolation(t, subj)
	}
	// Nothing reached the stream.
	st := provision(t, c.stack, callout.InboxConfig{})
	info, err := st.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("stream holds %d messages", info.State.Msgs)
	}
}

// TestNoDirectJetStream: users live in an account without JetStream and
// hold no JetStream subject: every one, their own consumer's API and
// acknowledgement subjects included, is a permissions violation. (What they may do with their
// inbox goes through the chat-server's gate; chatserver's tests.)
func TestNoDirectJetStream(t *testing.T) {
	c := newChatStack(t)
	S := callout.DefaultStream
	for _, subj := range []string{
		"$JS.API.CONSUMER.CREATE." + S + "." + c.ak + ".kez.v1.inbox." + c.ak + ".>",
		"$JS.API.CONSUMER.CREATE." + S + "." + c.bk + ".kez.v1.inbox." + c.bk + ".>",
		"$JS.API.CONSUMER.CREATE." + S,
		"$JS.API.CONSUMER.DURABLE.CREATE." + S + "." + c.ak,
		"$JS.API.CONSUMER.MSG.NEXT." + S + "." + c.ak,
		"$JS.API.CONSUMER.MSG.NEXT." + S + "." + c.bk,
		"$JS.API.CONSUMER.INFO." + S + "." + c.ak,
		"$JS.API.CONSUMER.DELETE." + S + "." + c.bk,
		"$JS.API.CONSUMER.LIST." + S,
		"$JS.API.DIRECT.GET." + S,
		"$JS.API.STREAM.MSG.GET." + S,
		"$JS.API.STREAM.INFO." + S,
		"$JS.API.STREAM.DELETE." + S,
		"$JS.API.STREAM.PURGE." + S,
		"$JS.API.STREAM.LEADER.STEPDOWN." + S,
		"$JS.API.INFO",
		"$JS.ACK." + S + "." + c.bk + ".1.1.1.1.0",
		"$JS.ACK." + S + "." + c.ak + ".1.1.1.1.0",
		callout.InboxSubjectPrefix + c.bk + "." + c.ak,
	} {
		if err := c.aliceC.PublishRequest(subj, c.aliceC.NewRespInbox(), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		c.aliceC.wantViolation(t, subj)
	}
	info, err := provision(t, c.stack, callout.InboxConfig{}).Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 || info.State.Consumers != 0 {
		t.Fatalf("the stream changed: %+v", info.State)
	}
}

// TestNoConfusedDeputy: a request whose reply subject is a JetStream API
// subject does not let the responder call that API (no response
// permissions are granted).
func TestNoConfusedDeputy(t *testing.T) {
	c := newChatStack(t)
	answered := make(chan error, 1)
	sub, err := c.bobC.Subscribe(callout.P2PSubjectPrefix+c.bk, func(m *nats.Msg) { answered <- m.Respond([]byte("{}")) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := c.bobC.Flush(); err != nil {
		t.Fatal(err)
	}
	evil := "$JS.API.STREAM.DELETE." + callout.DefaultStream
	if err := c.aliceC.PublishRequest(callout.P2PSubjectPrefix+c.bk, evil, []byte("where?")); err != nil {
		t.Fatal(err)
	}
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	c.bobC.wantViolation(t, evil)
	if _, err := provision(t, c.stack, callout.InboxConfig{}).Info(ctx(t)); err != nil {
		t.Fatalf("stream gone: %v", err)
	}
}

func TestPermissionsShape(t *testing.T) {
	id := newIdentity(t)
	k := id.PublicKey().String()
	p := callout.Permissions(id.PublicKey(), "")
	if p.Resp != nil {
		t.Fatal("response permissions must stay off")
	}
	for _, list := range [][]string{p.Pub.Allow, p.Sub.Allow} {
		for _, subj := range list {
			if subj == ">" || subj == "$JS.API.>" || subj == "_INBOX.>" {
				t.Fatalf("over-broad grant %q", subj)
			}
		}
	}
	if len(p.Pub.Deny) != 0 || len(p.Sub.Deny) != 0 {
		t.Fatal("deny lists are not used")
	}
	if got := p.Sub.Allow; len(got) != 3 || got[0] != "_INBOX."+k+".>" || got[1] != callout.DeliverSubjectPrefix+k+".>" || got[2] != callout.P2PSubjectPrefix+k {
		t.Fatalf("sub %v", got)
	}
	for _, subj := range p.Pub.Allow {
		if strings.HasPrefix(subj, "$JS.") || strings.HasPrefix(subj, callout.InboxSubjectPrefix) {
			t.Fatalf("a user may publish to %q", subj)
		}
	}
	if !slices.Contains(p.Pub.Allow, callout.MultiSendSubjectPrefix+k) || slices.Contains(p.Pub.Allow, callout.MultiSendSubjectPrefix+"*") {
		t.Fatalf("a user's multi-recipient sends are not its own only: %v", p.Pub.Allow)
	}
	if !slices.Contains(p.Pub.Allow, callout.AckSubjectPrefix+k) {
		t.Fatalf("a user may not acknowledge through the gate: %v", p.Pub.Allow)
	}
	gp := callout.GatePermissions("UPROV", "X")
	for _, subj := range gp.Pub.Allow {
		if strings.Contains(subj, "DELETE") && subj != "$JS.API.CONSUMER.DELETE.X.*" || strings.Contains(subj, "PURGE") && subj != "$JS.API.STREAM.PURGE.X" || strings.Contains(subj, "STEPDOWN") || strings.Contains(subj, "GET") {
			t.Fatalf("the gate may publish to %q", subj)
		}
	}
	if gp.Sub.Allow[len(gp.Sub.Allow)-1] != "_KEZ_GATE.UPROV.>" || !slices.Contains(gp.Sub.Allow, callout.AckSubjectPrefix+">") || !slices.Contains(gp.Pub.Allow, "$JS.ACK.X.>") {
		t.Fatalf("gate %+v", gp)
	}
}
