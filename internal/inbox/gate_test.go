package inbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go/jetstream"
)

// TestConsumeAcksThroughGate: what a Consume handler acknowledges goes to
// the gate in batches and reaches bob's consumer, and a Drain hands the
// queued acknowledgements to the connection before Closed: closing the
// connection right after loses none. A Fetch's delivery acknowledged with
// DoubleAck reaches carol's consumer too. (Each user has one consumer; a
// Consume's last pull may still wait there after Drain, so the Fetch is
// carol's.)
func TestConsumeAcksThroughGate(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, carol := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	anc, err := natsconn.Connect(ctx, st.NATSURL, alice.Identity)
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	ajs, _ := jetstream.New(anc)
	const n = 50
	for i := range n {
		if _, err := ajs.Publish(ctx, callout.SendSubjectPrefix+bob.Key.String()+"."+alice.Key.String(), fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	bnc, err := natsconn.Connect(ctx, st.NATSURL, bob.Identity)
	if err != nil {
		t.Fatal(err)
	}
	defer bnc.Close()
	B := bob.Key.String()
	if _, err := inbox.Open(ctx, bnc, B, 0); err != nil {
		t.Fatal(err)
	}
	p := inbox.NewPuller(bnc, B, callout.DefaultStream)
	got := make(chan struct{}, n)
	never := make(chan struct{})
	count := 0
	cs := p.Consume(n, func() <-chan struct{} { return never }, func(m jetstream.Msg) {
		if err := m.Ack(); err != nil {
			t.Error(err)
		}
		if count++; count == n {
			close(got)
		}
	}, func(err error) { t.Log(err) })
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("bob did not receive his messages")
	}
	cs.Drain()
	<-cs.Closed()
	bnc.Close()
	waitAcked := func(u *stacktest.User, floor uint64) {
		t.Helper()
		for info := st.ConsumerInfo(t, u.Key); info.AckFloor.Stream != floor || info.NumAckPending != 0; info = st.ConsumerInfo(t, u.Key) {
			if ctx.Err() != nil {
				t.Fatalf("%s's consumer: ack floor %d, %d pending; want %d, 0", u.Name, info.AckFloor.Stream, info.NumAckPending, floor)
			}
		}
	}
	waitAcked(bob, n)

	if _, err := ajs.Publish(ctx, callout.SendSubjectPrefix+carol.Key.String()+"."+alice.Key.String(), []byte("for carol")); err != nil {
		t.Fatal(err)
	}
	cnc, err := natsconn.Connect(ctx, st.NATSURL, carol.Identity)
	if err != nil {
		t.Fatal(err)
	}
	defer cnc.Close()
	C := carol.Key.String()
	if _, err := inbox.Open(ctx, cnc, C, 0); err != nil {
		t.Fatal(err)
	}
	msgs, err := inbox.NewPuller(cnc, C, callout.DefaultStream).Fetch(ctx, 5, 0)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("carol's fetch: %d, %v", len(msgs), err)
	}
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	waitAcked(carol, n+1)
}
