package inbox

import (
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
)

// TestStraysIgnored: what others can drop on a user's deliver and reply
// subjects (users may answer each other's requests; JetStream answers
// their acknowledgements on any subject they name) is not taken for the
// user's own: a delivery must carry an
// acknowledgement subject of the user's own consumer, and an answer the
// token of a pending send.
func TestStraysIgnored(t *testing.T) {
	ns := natstest.Run(t, "")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	p := NewPuller(nc, "UBOB", "KEZ_INBOX")
	for _, m := range []*nats.Msg{
		{Subject: "kez.v1.inbox.UBOB.UMAL", Reply: "$JS.ACK.KEZ_INBOX.UMAL.1.2.2.1.0", Data: []byte("mallory's own, redelivered here")},
		{Subject: "kez.v1.deliver.UBOB.x", Data: nil},
		{Subject: "kez.v1.inbox.UBOB.UMAL", Reply: "$JS.ACK.OTHER.UBOB.1.2.2.1.0"},
	} {
		if d := p.delivery(m); d != nil {
			t.Errorf("a stray was taken for a delivery: %+v", m)
		}
	}
	if d := p.delivery(&nats.Msg{Subject: "kez.v1.inbox.UBOB.UAL", Reply: "$JS.ACK.KEZ_INBOX.UBOB.1.2.2.1.0"}); d == nil {
		t.Error("positive control: bob's own delivery was not taken")
	}

	// Something takes the send (the gate would), so that the server does
	// not answer "no responders".
	if _, err := nc.Subscribe("kez.v1.send.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	pub, err := NewPublisher(nc, "UBOB", 4, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	f, err := pub.PublishMsgAsync(&nats.Msg{Subject: "kez.v1.send.UAL.UBOB"})
	if err != nil {
		t.Fatal(err)
	}
	nc.Publish(pub.prefix+"guess1", []byte(`{"stream":"KEZ_INBOX","seq":7}`))
	nc.Publish(pub.prefix+f.token, []byte(`{"stream":"KEZ_INBOX","seq":8}`))
	select {
	case ack := <-f.Ok():
		if ack.Sequence != 8 {
			t.Fatalf("the answer to another token was taken: %+v", ack)
		}
	case err := <-f.Err():
		t.Fatal(err)
	case <-time.After(5 * time.Second):
		t.Fatal("no answer")
	}
}
