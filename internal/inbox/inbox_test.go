package inbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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

// TestAckLines: each acknowledgement of a delivery is one line of a
// batch on kez.v1.ack.<me> ("<verb> <its reply subject>"), in order, in
// the forms the gate takes; a delivery acknowledged (Ack, Nak, Term in any
// form) refuses another with jetstream.ErrMsgAlreadyAckd, InProgress may
// repeat until then. FlushAcks returns once the server has them.
func TestAckLines(t *testing.T) {
	nc, sub := ackListener(t)
	p := NewPuller(nc, "UBOB", "KEZ_INBOX")
	d := func(seq int) *delivery {
		return p.delivery(&nats.Msg{Subject: "kez.v1.inbox.UBOB.UAL", Reply: fmt.Sprintf("$JS.ACK.KEZ_INBOX.UBOB.1.%d.%d.1.0", seq, seq)})
	}
	var want []string
	do := func(m *delivery, f func() error, line string) {
		t.Helper()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		want = append(want, line+" "+m.Reply())
	}
	m1, m2, m3, m4, m5, m6 := d(1), d(2), d(3), d(4), d(5), d(6)
	do(m1, m1.InProgress, "+WPI")
	do(m1, m1.InProgress, "+WPI")
	do(m1, m1.Ack, "+ACK")
	do(m2, m2.Nak, "-NAK")
	do(m3, func() error { return m3.NakWithDelay(1500 * time.Millisecond) }, "-NAK 1.5s")
	do(m4, func() error { return m4.NakWithDelay(0) }, "-NAK")
	do(m5, m5.Term, "+TERM")
	do(m6, func() error { return m6.TermWithReason("not for the gate") }, "+TERM")
	for _, m := range []*delivery{m1, m2, m3, m4, m5, m6} {
		for _, f := range []func() error{m.Ack, m.Nak, m.Term, m.InProgress, func() error { return m.NakWithDelay(time.Second) }} {
			if err := f(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
				t.Fatalf("a second acknowledgement of %s: %v", m.Reply(), err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.FlushAcks(ctx); err != nil {
		t.Fatal(err)
	}
	// The server has every batch: they are in the subscription already.
	n, _, _ := sub.Pending()
	var got []string
	for range n {
		msg, err := sub.NextMsg(0)
		if err != nil {
			t.Fatal(err)
		}
		if msg.Data[len(msg.Data)-1] != '\n' {
			t.Fatalf("a batch does not end its last line: %q", msg.Data)
		}
		got = append(got, strings.Split(string(msg.Data[:len(msg.Data)-1]), "\n")...)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("acknowledgement lines in %d batches:\n%s\nwant\n%s", n, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// DoubleAck is an acknowledgement and a flush.
	m7 := d(7)
	if err := m7.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 1 {
		t.Fatalf("after DoubleAck, %d batches at the server", n)
	}
	if msg, _ := sub.NextMsg(0); string(msg.Data) != "+ACK "+m7.Reply()+"\n" {
		t.Fatalf("DoubleAck sent %q", msg.Data)
	}
	nc.Close()
	if err := d(8).Ack(); !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("an Ack on a closed connection: %v", err)
	}
}

// TestAckBatches: many acknowledgements leave as few messages, each
// within the gate's bounds (wire.MaxAckLines lines, wire.MaxAckBytes
// bytes), all of them, in order.
func TestAckBatches(t *testing.T) {
	nc, sub := ackListener(t)
	sub.SetPendingLimits(-1, -1)
	// A long stream name makes the byte bound bite before the line bound.
	stream := strings.Repeat("S", 100)
	p := NewPuller(nc, "UBOB", stream)
	const total = 10_000
	for i := range total {
		if err := p.delivery(&nats.Msg{Reply: fmt.Sprintf("$JS.ACK.%s.UBOB.1.%d.%d.1.0", stream, i, i)}).Ack(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.FlushAcks(ctx); err != nil {
		t.Fatal(err)
	}
	n, _, _ := sub.Pending()
	next := 0
	for range n {
		msg, err := sub.NextMsg(0)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(msg.Data), "\n"), "\n")
		if len(lines) > wire.MaxAckLines || len(msg.Data) > wire.MaxAckBytes {
			t.Fatalf("a batch of %d lines, %d bytes", len(lines), len(msg.Data))
		}
		for _, l := range lines {
			if w := fmt.Sprintf("+ACK $JS.ACK.%s.UBOB.1.%d.%d.1.0", stream, next, next); l != w {
				t.Fatalf("line %d: %q, want %q", next, l, w)
			}
			next++
		}
	}
	t.Logf("%d acknowledgements in %d messages", total, n)
	if next != total || n >= total {
		t.Fatalf("%d acknowledgements in %d messages, want %d in fewer", next, n, total)
	}
}

// ackListener connects to a fresh nats-server and subscribes to the
// acknowledgement subject of the user UBOB, where the gate would listen.
// The connection is closed at the end of the test.
func ackListener(t *testing.T) (*nats.Conn, *nats.Subscription) {
	t.Helper()
	ns := natstest.Run(t, "")
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync(wire.AckSubjectPrefix + "UBOB")
	if err != nil {
		t.Fatal(err)
	}
	return nc, sub
}
