package systemtest

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestHostilePullHeartbeats: a pull request's idle heartbeat is the
// user's choice, and nats-server sets no lower bound on it (a consumer's
// own heartbeat must be at least 100 ms, a pull's may be 1 ns). With 1 ns
// the consumer sends a heartbeat about every millisecond for as long as
// the pull waits, from the stream's one outgoing queue that also carries
// everyone's acknowledgements and deliveries; 64 such pulls (the
// consumer's MaxWaiting) made JetStream publish tens of thousands of
// messages a second for one user. The gate raises a heartbeat to its
// floor (a second): over a pull of 3 s mallory hears at most 3 per pull.
func TestHostilePullHeartbeats(t *testing.T) {
	st := startProcStack(t, procOptions{NoHTTPLimits: true})
	mallory := st.register(t, "mallory")
	m := userLogin(t, st.NATSURL, mallory)
	M := mallory.key.String()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := inbox.Open(ctx, m.nc, M, 0); err != nil {
		t.Fatal(err)
	}
	const pulls, expires = 8, 3 * time.Second
	type count struct{ beats, ends int }
	counts := make([]count, pulls)
	done := make(chan int, pulls)
	for i := range pulls {
		token := fmt.Sprintf("hb%d", i)
		if _, err := m.nc.Subscribe(wire.DeliverSubjectPrefix+M+"."+token, func(msg *nats.Msg) {
			switch msg.Header.Get("Status") {
			case "100":
				counts[i].beats++
			default:
				counts[i].ends++
				done <- i
			}
		}); err != nil {
			t.Fatal(err)
		}
		body, _ := json.Marshal(wire.PullRequest{Batch: 1, Expires: int64(expires), Heartbeat: 1, Deliver: token})
		if err := m.nc.Publish(callout.PullSubjectPrefix+M, body); err != nil {
			t.Fatal(err)
		}
	}
	// A pull with a heartbeat a legitimate client asks for (the positive
	// control): it still hears its heartbeats.
	ctl := make(chan struct{}, 16)
	if _, err := m.nc.Subscribe(wire.DeliverSubjectPrefix+M+".ctl", func(msg *nats.Msg) {
		if msg.Header.Get("Status") == "100" {
			ctl <- struct{}{}
		}
	}); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(wire.PullRequest{Batch: 1, Expires: int64(expires), Heartbeat: int64(time.Second), Deliver: "ctl"})
	if err := m.nc.Publish(callout.PullSubjectPrefix+M, body); err != nil {
		t.Fatal(err)
	}
	for range pulls {
		select {
		case <-done:
		case <-ctx.Done():
			t.Fatal("the pulls did not end")
		}
	}
	select {
	case <-ctl:
	case <-ctx.Done():
		t.Fatal("the positive control: a 1 s heartbeat never came")
	}
	total := 0 // each pull's count was written before its end was signalled
	for i := range pulls {
		total += counts[i].beats
	}
	t.Logf("%d pulls of %s with a 1 ns heartbeat: %d heartbeats", pulls, expires, total)
	if max := pulls * int(expires/time.Second); total > max {
		t.Errorf("%d heartbeats for %d pulls of %s, want at most %d (one a second)", total, pulls, expires, max)
	}
}

// TestHostileAckForeignSequences: a consumer takes the stream sequence
// from the acknowledgement's subject, not from what it delivered, and
// before the gate took acknowledgements they reached JetStream straight
// from users. Mallory, whose consumer has read past everything, now may
// not publish a $JS.ACK subject at all (the broker refuses it), and sends
// the gate batches that acknowledge, terminate, nak and ask for more on
// every sequence of the stream, alice's waiting mail included: on her own
// acknowledgement subjects (which the gate passes on, but for +NXT), on
// alice's, and in the longer forms nats-server reads with the stream and
// consumer four tokens in, naming the inbox stream and alice's consumer
// there. The gate drops every line that is not a known verb on her own
// consumer's nine-token subject; the interest-retention stream keeps a
// message while any consumer whose filter takes it has not acknowledged
// it: alice still receives all three, and her consumer is unchanged.
func TestHostileAckForeignSequences(t *testing.T) {
	st := startProcStack(t, procOptions{NoHTTPLimits: true, Admin: true, ChatArgs: []string{"--remove-read-after", "1"}})
	mallory, alice, bob := st.register(t, "mallory"), st.register(t, "alice"), st.register(t, "bob")
	m, a, b := userLogin(t, st.NATSURL, mallory), userLogin(t, st.NATSURL, alice), userLogin(t, st.NATSURL, bob)
	S, M, A := callout.DefaultStream, mallory.key.String(), alice.key.String()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, u := range []*rawUser{m, a} {
		if _, err := inbox.Open(ctx, u.nc, u.key.String(), 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if ans := b.send(alice.key, []byte(fmt.Sprint("for alice ", i)), 10*time.Second); ans != "" {
			t.Fatal(ans)
		}
		if ans := m.send(mallory.key, []byte(fmt.Sprint("for mallory ", i)), 10*time.Second); ans != "" {
			t.Fatal(ans)
		}
	}
	// Mallory reads hers: her consumer's pointer passes every sequence.
	if got, err := inbox.NewPuller(m.nc, M, S).Fetch(ctx, 10, 0); err != nil || len(got) != 3 {
		t.Fatalf("mallory's fetch: %d, %v", len(got), err)
	}
	js := st.AdminJetStream(t)
	before := snapshot(t, js)
	// Straight to JetStream, as before the gate took acknowledgements:
	// refused by the broker, on her own consumer too.
	for _, subj := range []string{
		fmt.Sprintf("$JS.ACK.%s.%s.1.2.2.1.0", S, M),
		fmt.Sprintf("$JS.ACK.%s.%s.1.1.1.1.0", S, A),
	} {
		if err := m.nc.Publish(subj, []byte("+ACK")); err != nil {
			t.Fatal(err)
		}
		m.nc.Flush()
		waitFor(t, m.errs, "Publish to \""+subj+"\"")
	}
	var batch strings.Builder
	lines, valid := 0, 0
	for seq := 1; seq <= 6; seq++ {
		for _, verb := range []string{"+ACK", "+TERM", "-NAK", "+WPI", "-NAK 1ns", "+NXT", `+NXT {"batch":5}`, `-NAK {"delay":1}`} {
			for i, subj := range []string{
				fmt.Sprintf("$JS.ACK.%s.%s.1.%d.%d.1.0", S, M, seq, seq),
				fmt.Sprintf("$JS.ACK.%s.%s.1.%d.%d.1.0", S, A, seq, seq),
				fmt.Sprintf("$JS.ACK.%s.%s.%s.%s.1.%d.%d.1.0.x", S, M, S, A, seq, seq),
				fmt.Sprintf("$JS.ACK.%s.%s._.h.%s.%s.1.%d.%d.1.0.x", S, M, S, A, seq, seq),
			} {
				fmt.Fprintf(&batch, "%s %s\n", verb, subj)
				lines++
				if i == 0 && !strings.HasPrefix(verb, "+NXT") && !strings.Contains(verb, "{") {
					valid++
				}
			}
		}
	}
	if err := m.nc.Publish(callout.AckSubjectPrefix+M, []byte(batch.String())); err != nil {
		t.Fatal(err)
	}
	// The gate handled the batch once its counters moved; mallory's
	// consumer takes acknowledgements in order, so once her +ACK of 6 took
	// effect (none of hers awaits one: the positive control) every one
	// before it, on alice's sequences included, was handled too.
	eventually(t, 20*time.Second, "the gate's count of mallory's lines", func() bool {
		return metric(t, st.ChatURL, `kez_chat_gate_ack_lines_total{result="forwarded"}`) == float64(valid)
	})
	if got := metric(t, st.ChatURL, `kez_chat_gate_ack_lines_total{result="dropped"}`); got != float64(lines-valid) {
		t.Errorf("%v lines dropped, want %d of %d", got, lines-valid, lines)
	}
	eventually(t, 20*time.Second, "mallory's acknowledgements", func() bool {
		c, err := js.Consumer(ctx, S, M)
		return err == nil && c.CachedInfo().NumAckPending == 0
	})
	// What mallory acknowledged of her own leaves the stream (the gate
	// removes read mail); nothing of alice's does.
	eventually(t, 20*time.Second, "the removal of mallory's read mail", func() bool {
		st, err := js.Stream(ctx, S)
		return err == nil && st.CachedInfo().State.Msgs == 3
	})
	after := snapshot(t, js)
	if after.consumers[A] != before.consumers[A] || after.pending[A] != 3 {
		t.Errorf("alice's consumer changed:\n before %s (%d waiting)\n after  %s (%d waiting)", before.consumers[A], before.pending[A], after.consumers[A], after.pending[A])
	}
	if len(after.msgs) != 3 {
		t.Errorf("the stream holds %d messages, want alice's 3", len(after.msgs))
	}
	got, err := inbox.NewPuller(a.nc, A, S).Fetch(ctx, 10, 0)
	if err != nil || len(got) != 3 {
		t.Fatalf("alice received %d of her 3 messages (%v)", len(got), err)
	}
	t.Logf("%d lines: %d forwarded, %d dropped; alice's 3 messages delivered", lines, valid, lines-valid)
}

// TestHostileAckNextHeartbeats: an acknowledgement whose body is "+NXT
// {…}" is also a pull request, and when users published acknowledgements
// to JetStream themselves it bypassed the gate's bounds on pulls: 64
// waiting +NXT pulls with a 1 ns idle heartbeat made nats-server burn 15%
// of a CPU for as long as mallory liked. Now the broker refuses her
// $JS.ACK publish (with or without a reply subject), and the gate drops
// +NXT lines from her batches: her delivery stays unacknowledged (a +NXT
// would have acknowledged it), no pull waits on her consumer and not one
// heartbeat reaches her. The positive control: an +ACK of her second
// delivery in a later batch takes effect.
func TestHostileAckNextHeartbeats(t *testing.T) {
	st := startProcStack(t, procOptions{NoHTTPLimits: true, Admin: true})
	mallory := st.register(t, "mallory")
	m := userLogin(t, st.NATSURL, mallory)
	S, M := callout.DefaultStream, mallory.key.String()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := inbox.Open(ctx, m.nc, M, 0); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if ans := m.send(mallory.key, []byte(fmt.Sprint("for mallory ", i)), 10*time.Second); ans != "" {
			t.Fatal(ans)
		}
	}
	got, err := inbox.NewPuller(m.nc, M, S).Fetch(ctx, 2, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("mallory's fetch: %d, %v", len(got), err)
	}
	r1, r2 := got[0].Reply(), got[1].Reply()
	heard := make(chan *nats.Msg, 1024)
	reply := wire.ReplyInbox(M) + ".nxt"
	if _, err := m.nc.ChanSubscribe(reply, heard); err != nil {
		t.Fatal(err)
	}
	const pulls = 64 // the consumer's MaxWaiting
	next := fmt.Sprintf(`+NXT {"batch":1,"expires":%d,"idle_heartbeat":1}`, int64(30*time.Second))
	// The attack as it was: refused by the broker.
	if err := m.nc.PublishRequest(r1, reply, []byte(next)); err != nil {
		t.Fatal(err)
	}
	m.nc.Flush()
	waitFor(t, m.errs, "Publish to \""+r1+"\"")
	// Through the gate.
	var batch strings.Builder
	for range pulls {
		fmt.Fprintf(&batch, "%s %s\n+NXT %s\n", next, r1, r1)
	}
	if err := m.nc.PublishRequest(callout.AckSubjectPrefix+M, reply, []byte(batch.String())); err != nil {
		t.Fatal(err)
	}
	if err := m.nc.Publish(callout.AckSubjectPrefix+M, []byte("+ACK "+r2+"\n")); err != nil {
		t.Fatal(err)
	}
	js := st.AdminJetStream(t)
	var info *jetstream.ConsumerInfo
	eventually(t, 20*time.Second, "the +ACK of mallory's second delivery", func() bool {
		c, err := js.Consumer(ctx, S, M)
		if err == nil {
			info = c.CachedInfo()
		}
		return err == nil && info.AckFloor.Stream == 0 && info.NumAckPending == 1
	})
	if info.NumWaiting != 0 {
		t.Errorf("%d pulls wait on mallory's consumer", info.NumWaiting)
	}
	if got := metric(t, st.ChatURL, `kez_chat_gate_ack_lines_total{result="dropped"}`); got != 2*pulls {
		t.Errorf("%v lines dropped, want %d", got, 2*pulls)
	}
	// Nothing answered her on the reply subjects she named.
	m.nc.Flush()
	if len(heard) != 0 {
		t.Errorf("mallory heard %d messages on her reply subject", len(heard))
	}
}
