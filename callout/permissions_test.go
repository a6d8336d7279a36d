package callout_test

import (
	"context"
	"encoding/json"
	"errors"
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

// TestInboxRoundTrip is the path a chat client takes, under exactly the
// permissions of callout.Permissions: publish with an acknowledgement,
// create the own durable consumer, fetch, iterate, acknowledge.
func TestInboxRoundTrip(t *testing.T) {
	c := newChatStack(t)
	ajs, _ := jetstream.New(c.aliceC.Conn)
	for i, text := range []string{"one", "two", "three"} {
		m := &nats.Msg{Subject: callout.InboxSubjectPrefix + c.bk + "." + c.ak, Data: []byte(text), Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, text)
		ack, err := ajs.PublishMsg(ctx(t), m)
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if ack.Stream != callout.DefaultStream {
			t.Fatalf("stored in %q", ack.Stream)
		}
	}
	// A resend with the same message ID is dropped by the duplicate window.
	dup := &nats.Msg{Subject: callout.InboxSubjectPrefix + c.bk + "." + c.ak, Data: []byte("one"), Header: nats.Header{}}
	dup.Header.Set(jetstream.MsgIDHeader, "one")
	if ack, err := ajs.PublishMsg(ctx(t), dup); err != nil || !ack.Duplicate {
		t.Fatalf("duplicate: %v %+v", err, ack)
	}

	bjs, _ := jetstream.New(c.bobC.Conn)
	cons, err := bjs.CreateOrUpdateConsumer(ctx(t), callout.DefaultStream, consumerConfig(c.bk))
	if err != nil {
		t.Fatalf("create own consumer: %v", err)
	}
	batch, err := cons.Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for m := range batch.Messages() {
		got = append(got, string(m.Data()))
		if err := m.DoubleAck(ctx(t)); err != nil {
			t.Fatalf("ack: %v", err)
		}
	}
	if batch.Error() != nil {
		t.Fatal(batch.Error())
	}
	it, err := cons.Messages()
	if err != nil {
		t.Fatal(err)
	}
	m, err := it.Next()
	it.Stop()
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, string(m.Data()))
	if err := m.Ack(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != "one" || got[1] != "two" || got[2] != "three" {
		t.Fatalf("received %q", got)
	}
	// A new handle on the same consumer (INFO) sees all acknowledged.
	cons, err = bjs.Consumer(ctx(t), callout.DefaultStream, c.bk)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		info, err := cons.Info(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if info.NumAckPending == 0 && info.NumPending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consumer still has %d unacknowledged", info.NumAckPending)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-c.aliceC.errs:
		t.Fatalf("alice: %v", err)
	case err := <-c.bobC.errs:
		t.Fatalf("bob: %v", err)
	default:
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
	subj := callout.InboxSubjectPrefix + carol + "." + c.bk // bob's sender token
	if err := c.aliceC.Publish(subj, []byte("hi, I am bob")); err != nil {
		t.Fatal(err)
	}
	c.aliceC.wantViolation(t, subj)
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

// TestCannotTouchOthersConsumers: create, read, inspect or delete bob's
// consumer, bypass consumers with direct or message get, or manage the
// stream — each a permissions violation.
func TestCannotTouchOthersConsumers(t *testing.T) {
	c := newChatStack(t)
	// Bob has a consumer and a message waiting.
	bjs, _ := jetstream.New(c.bobC.Conn)
	if _, err := bjs.CreateOrUpdateConsumer(ctx(t), callout.DefaultStream, consumerConfig(c.bk)); err != nil {
		t.Fatal(err)
	}
	ajs, _ := jetstream.New(c.aliceC.Conn)
	if _, err := ajs.Publish(ctx(t), callout.InboxSubjectPrefix+c.bk+"."+c.ak, []byte("secret")); err != nil {
		t.Fatal(err)
	}

	S := callout.DefaultStream
	for _, subj := range []string{
		"$JS.API.CONSUMER.CREATE." + S + "." + c.bk + ".kez.v1.inbox." + c.bk + ".>",
		"$JS.API.CONSUMER.CREATE." + S + "." + c.ak + ".kez.v1.inbox." + c.bk + ".>",
		"$JS.API.CONSUMER.CREATE." + S,
		"$JS.API.CONSUMER.DURABLE.CREATE." + S + "." + c.ak,
		"$JS.API.CONSUMER.MSG.NEXT." + S + "." + c.bk,
		"$JS.API.CONSUMER.INFO." + S + "." + c.bk,
		"$JS.API.CONSUMER.DELETE." + S + "." + c.bk,
		"$JS.API.CONSUMER.LIST." + S,
		"$JS.API.DIRECT.GET." + S,
		"$JS.API.DIRECT.GET." + S + ".kez.v1.inbox." + c.bk + "." + c.ak,
		"$JS.API.STREAM.MSG.GET." + S,
		"$JS.API.STREAM.INFO." + S,
		"$JS.API.STREAM.DELETE." + S,
		"$JS.API.STREAM.PURGE." + S,
		"$JS.API.INFO",
		"$JS.ACK." + S + "." + c.bk + ".1.1.1.1.0",
	} {
		if err := c.aliceC.PublishRequest(subj, c.aliceC.NewRespInbox(), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		c.aliceC.wantViolation(t, subj)
	}

	// Through the nats.go API the same attempts fail too. The request
	// gets no answer (the server drops it), so wait for the violation and
	// then give up on the call.
	for name, call := range map[string]func(context.Context) error{
		"create bob's consumer": func(ctx context.Context) error {
			_, err := ajs.CreateOrUpdateConsumer(ctx, S, consumerConfig(c.bk))
			return err
		},
		"open bob's consumer": func(ctx context.Context) error {
			_, err := ajs.Consumer(ctx, S, c.bk)
			return err
		},
	} {
		cctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- call(cctx) }()
		select {
		case err := <-c.aliceC.errs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("%s: %v", name, err)
			}
		case err := <-done:
			t.Fatalf("%s: returned %v before any violation", name, err)
		}
		cancel()
		if err := <-done; err == nil {
			t.Fatalf("alice could %s", name)
		}
	}

	// The create subject alice may use is bound to her inbox by the
	// server: a body asking for bob's inbox under her own subject fails.
	req, _ := json.Marshal(map[string]any{
		"stream_name": S,
		"config": map[string]any{
			"durable_name":   c.ak,
			"filter_subject": callout.InboxSubjectPrefix + c.bk + ".>",
			"ack_policy":     "explicit",
		},
		"action": "",
	})
	resp, err := c.aliceC.Request("$JS.API.CONSUMER.CREATE."+S+"."+c.ak+".kez.v1.inbox."+c.ak+".>", req, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var apiResp struct {
		Error *struct {
			Code        int    `json:"code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &apiResp); err != nil {
		t.Fatal(err)
	}
	if apiResp.Error == nil {
		t.Fatalf("the server accepted a filter outside the subject: %s", resp.Data)
	}
	t.Logf("server refused the mismatched filter: %s", apiResp.Error.Description)

	// Bob's message is still there, unread.
	cons, err := bjs.Consumer(ctx(t), S, c.bk)
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.NumPending != 1 || info.Delivered.Consumer != 0 {
		t.Fatalf("bob's consumer was read: %+v", info)
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
	if got := p.Sub.Allow; len(got) != 2 || got[0] != "_INBOX."+k+".>" {
		t.Fatalf("sub %v", got)
	}
	pp := callout.ProvisionerPermissions("UPROV", "X")
	if len(pp.Pub.Allow) != 4 || pp.Sub.Allow[0] != "_INBOX.UPROV.>" {
		t.Fatalf("provisioner %+v", pp)
	}
}
