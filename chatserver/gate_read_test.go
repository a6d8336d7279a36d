package chatserver_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/nats-io/nats.go/jetstream"
)

// waitStreamMsgs polls the inbox stream until it holds want messages.
func waitStreamMsgs(t testing.TB, st *stacktest.Stack, want uint64) {
	t.Helper()
	if got, ok := poll(func() uint64 { return streamMsgs(t, st) }, func(n uint64) bool { return n == want }); !ok {
		t.Fatalf("the stream holds %d messages, want %d", got, want)
	}
}

// TestGateRemovesReadMail: what a recipient acknowledged (+ACK, +TERM)
// leaves the stream, up to its consumer's acknowledgement floor: a
// message refused with -NAK stays, and so does one acknowledged above it
// until the gap closes. Another user's acknowledgements, naming the
// recipient's deliveries or stream sequences in their own batches, remove
// nothing of the recipient's, and a flood of forged lines of one's own
// makes at most one removal per batch. Removals are counted.
func TestGateRemovesReadMail(t *testing.T) {
	lim := chatserver.MailLimits{RemoveReadAfter: 2, RemoveReadEvery: 100 * time.Millisecond}
	st := stacktest.Start(t, stacktest.Options{MailLimits: lim})
	alice, bob, mallory := gateLogin(t, st, "alice"), gateLogin(t, st, "bob"), gateLogin(t, st, "mallory")
	for i := range 5 {
		if code, _ := gateCode(t, alice.send(t, bob.key, []byte(fmt.Sprint("for bob ", i)))); code != 0 {
			t.Fatal("refused")
		}
	}
	if code, _ := gateCode(t, alice.send(t, mallory.key, []byte("for mallory"))); code != 0 {
		t.Fatal("refused")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := inbox.NewPuller(bob.nc, bob.key.String(), callout.DefaultStream).Fetch(ctx, 5, 0)
	if err != nil || len(got) != 5 {
		t.Fatalf("bob's fetch: %d, %v", len(got), err)
	}
	r := make([]string, len(got))
	for i, m := range got {
		r[i] = m.Reply()
	}
	mine, err := inbox.NewPuller(mallory.nc, mallory.key.String(), callout.DefaultStream).Fetch(ctx, 1, 0)
	if err != nil || len(mine) != 1 {
		t.Fatalf("mallory's fetch: %d, %v", len(mine), err)
	}

	// Mallory names bob's deliveries, and bob's stream sequences under
	// her own consumer, and acknowledges her own message: only hers goes.
	B, M := bob.key.String(), mallory.key.String()
	forged := []string{"+ACK " + r[0], "+TERM " + r[1]}
	for _, ri := range r {
		forged = append(forged, "+ACK "+strings.Replace(ri, B, M, 1))
	}
	mallory.ackBatch(t, append(forged, "+ACK "+mine[0].Reply())...)
	waitStreamMsgs(t, st, 5)

	// Bob acknowledges 0 and 3, terminates 1, refuses 2: 0 and 1 go; 3
	// stays above the gap 2 leaves.
	bob.ackBatch(t, "+ACK "+r[0], "+TERM "+r[1], "-NAK 1h "+r[2], "+ACK "+r[3])
	waitStreamMsgs(t, st, 3)
	s, err := st.JetStream(t).Stream(ctx, callout.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if meta, _ := got[2].Metadata(); s.CachedInfo().State.FirstSeq != meta.Sequence.Stream {
		t.Errorf("the stream starts at %d, want bob's message 2 at %d", s.CachedInfo().State.FirstSeq, meta.Sequence.Stream)
	}
	// Bob acknowledges 2 after all, and 4: the gap closes, all go.
	bob.ackBatch(t, "+ACK "+r[2], "+ACK "+r[4])
	waitStreamMsgs(t, st, 0)
	waitMetric(t, st, "kez_chat_gate_read_removed_messages_total", "6")
	if v := metricValue(t, st, `kez_chat_gate_read_removals_total{result="error"}`); v != "0" {
		t.Errorf("%s failed removals", v)
	}
	for sample, want := range map[string]string{
		`kez_chat_gate_limit{name="remove_read_after"}`:         "2",
		`kez_chat_gate_limit{name="remove_read_every_seconds"}`: "0.1",
		`kez_chat_gate_limit{name="remove_read_rate"}`:          "200",
	} {
		if got := metricValue(t, st, sample); got != want {
			t.Errorf("%s = %s, want %s", sample, got, want)
		}
	}
}

// TestGateReadRemovalRate: forged acknowledgement lines of one's own
// consumer (sequences JetStream never delivered) cost the gate at most
// one removal per RemoveReadAfter of them, and all users' removals
// together stay within RemoveReadRate.
func TestGateReadRemovalRate(t *testing.T) {
	lim := chatserver.MailLimits{RemoveReadAfter: 1, RemoveReadEvery: time.Hour, RemoveReadRate: 5}
	st := stacktest.Start(t, stacktest.Options{MailLimits: lim})
	mallory := gateLogin(t, st, "mallory")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := inbox.Open(ctx, mallory.nc, mallory.key.String(), 0); err != nil {
		t.Fatal(err)
	}
	S, M := callout.DefaultStream, mallory.key.String()
	start := time.Now()
	for i := range 200 {
		mallory.ackBatch(t, fmt.Sprintf("+ACK $JS.ACK.%s.%s.1.%d.%d.1.0", S, M, 1000+i, i+1))
	}
	mallory.nc.Flush()
	// 200 batches of one line each: each may queue mallory, but she waits
	// in the queue at most once at a time, and the bucket (5/s, one
	// second's worth at once) lets the removals through slowly.
	waitMetric(t, st, `kez_chat_gate_ack_lines_total{result="forwarded"}`, "200")
	// Whenever read, the count is within the bucket: its one second's
	// worth plus the rate times the time since the first batch.
	n := removals(t, st)
	if limit := 5 + 5*time.Since(start).Seconds(); float64(n) > limit {
		t.Fatalf("%d removals in %v, over the rate", n, time.Since(start))
	}
}

// removals reads the number of removals the gate made.
func removals(t testing.TB, st *stacktest.Stack) int {
	t.Helper()
	var ok, failed int
	fmt.Sscan(metricValue(t, st, `kez_chat_gate_read_removals_total{result="ok"}`), &ok)
	fmt.Sscan(metricValue(t, st, `kez_chat_gate_read_removals_total{result="error"}`), &failed)
	return ok + failed
}

// TestGateReadRetriesBounded: what a user's acknowledgements buy is a
// bounded number of removals: one when RemoveReadAfter of them have
// gathered, then at most a few retries while the floor stays below what
// was acknowledged. Mallory, with one key, tries to keep the retries
// going by sending one more acknowledgement line after each removal:
// lines naming stream sequences her consumer never delivered (which
// JetStream ignores), and, with no forgery, the same acknowledgement of
// a real delivery again while a message she refused leaves a gap below
// it.
func TestGateReadRetriesBounded(t *testing.T) {
	const triggerRemovals = 4 // the removal a trigger makes and its retries
	for _, tc := range []struct {
		name  string
		lines func(t *testing.T, st *stacktest.Stack, mallory *gateUser) (trigger []string, again string)
	}{
		{"forged sequences", func(t *testing.T, st *stacktest.Stack, mallory *gateUser) ([]string, string) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if _, err := inbox.Open(ctx, mallory.nc, mallory.key.String(), 0); err != nil {
				t.Fatal(err)
			}
			S, M := callout.DefaultStream, mallory.key.String()
			line := func(i int) string { return fmt.Sprintf("+ACK $JS.ACK.%s.%s.1.%d.%d.1.0", S, M, 1_000_000_000+i, i+1) }
			trigger := make([]string, 256)
			for i := range trigger {
				trigger[i] = line(i)
			}
			return trigger, line(999)
		}},
		{"a gap of her own", func(t *testing.T, st *stacktest.Stack, mallory *gateUser) ([]string, string) {
			for i := range 2 {
				if code, _ := gateCode(t, mallory.send(t, mallory.key, []byte(fmt.Sprint("to myself ", i)))); code != 0 {
					t.Fatal("refused")
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			got, err := inbox.NewPuller(mallory.nc, mallory.key.String(), callout.DefaultStream).Fetch(ctx, 2, 0)
			if err != nil || len(got) != 2 {
				t.Fatalf("fetch: %d, %v", len(got), err)
			}
			mallory.ackBatch(t, "-NAK 1h "+got[0].Reply())
			trigger := make([]string, 256)
			for i := range trigger {
				trigger[i] = "+ACK " + got[1].Reply()
			}
			return trigger, "+ACK " + got[1].Reply()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lim := chatserver.MailLimits{RemoveReadAfter: 256, RemoveReadEvery: time.Hour}
			st := stacktest.Start(t, stacktest.Options{MailLimits: lim})
			mallory := gateLogin(t, st, "mallory")
			trigger, again := tc.lines(t, st, mallory)
			mallory.ackBatch(t, trigger...)
			waitRemovals(t, st, 1)
			// One more line after each removal, until none follows within
			// 2 s (five times the longest retry) or she has 20.
			seen, lines := removals(t, st), 0
			for seen < 5*triggerRemovals {
				deadline := time.Now().Add(2 * time.Second)
				n := removals(t, st)
				for ; n == seen && time.Now().Before(deadline); n = removals(t, st) {
				}
				if n == seen {
					break
				}
				seen = n
				mallory.ackBatch(t, again)
				lines++
			}
			if seen > triggerRemovals {
				t.Fatalf("%d removals for %d acknowledgement lines (RemoveReadAfter 256): at most %d", seen, len(trigger)+lines, triggerRemovals)
			}
			t.Logf("%d removals for %d lines", seen, len(trigger)+lines)
		})
	}
}

// waitRemovals polls the chat-server's metrics until the gate has made at
// least n removals.
func waitRemovals(t testing.TB, st *stacktest.Stack, n int) {
	t.Helper()
	if got, ok := poll(func() int { return removals(t, st) }, func(got int) bool { return got >= n }); !ok {
		t.Fatalf("%d removals, want %d", got, n)
	}
}

// TestGateReadKeepsRedeliveredMail: mail delivered but not acknowledged
// stays through removals whatever happens to it meanwhile: extended with
// +WPI, left to its ack wait and delivered again, the consumer updated to
// another ack wait by a consumer request (the gate's onConsumer path).
// It goes once acknowledged, by +TERM on its redelivery or +ACK on the
// subject of its first delivery, with what was acknowledged above it.
func TestGateReadKeepsRedeliveredMail(t *testing.T) {
	lim := chatserver.MailLimits{RemoveReadAfter: 1, RemoveReadEvery: 100 * time.Millisecond}
	st := stacktest.Start(t, stacktest.Options{MailLimits: lim})
	alice, bob := gateLogin(t, st, "alice"), gateLogin(t, st, "bob")
	for i := range 4 {
		if code, _ := gateCode(t, alice.send(t, bob.key, []byte(fmt.Sprint("for bob ", i)))); code != 0 {
			t.Fatal("refused")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	B := bob.key.String()
	// The gate made bob's consumer with the default ack wait at the first
	// send; bob asks for the shortest.
	if _, err := inbox.Open(ctx, bob.nc, B, callout.MinAckWait); err != nil {
		t.Fatal(err)
	}
	puller := inbox.NewPuller(bob.nc, B, callout.DefaultStream)
	got, err := puller.Fetch(ctx, 4, 0)
	if err != nil || len(got) != 4 {
		t.Fatalf("fetch: %d, %v", len(got), err)
	}
	seq := func(m jetstream.Msg) uint64 {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		return meta.Sequence.Stream
	}
	// 0 in progress, 1 left to its ack wait, 2 and 3 acknowledged.
	bob.ackBatch(t, "+WPI "+got[0].Reply(), "+ACK "+got[2].Reply(), "+ACK "+got[3].Reply())
	before := removals(t, st)
	waitRemovals(t, st, before+3)
	if n := streamMsgs(t, st); n != 4 {
		t.Fatalf("the stream holds %d messages after removals, want all 4 (0 and 1 not acknowledged)", n)
	}
	// Both come again after the ack wait.
	again, err := puller.Fetch(ctx, 2, 10*time.Second)
	if err != nil || len(again) != 2 {
		t.Fatalf("redelivery: %d, %v", len(again), err)
	}
	for _, m := range again {
		meta, _ := m.Metadata()
		if s := meta.Sequence.Stream; (s != seq(got[0]) && s != seq(got[1])) || meta.NumDelivered < 2 {
			t.Fatalf("redelivered stream sequence %d (delivery %d), want %d or %d again", s, meta.NumDelivered, seq(got[0]), seq(got[1]))
		}
	}
	// Bob's client asks for its consumer again with a longer ack wait:
	// the gate updates it in place.
	if _, err := inbox.Open(ctx, bob.nc, B, time.Minute); err != nil {
		t.Fatal(err)
	}
	if info := st.ConsumerInfo(t, bob.key); info.Config.AckWait != time.Minute || info.NumAckPending != 2 {
		t.Fatalf("bob's consumer: ack wait %v, %d pending; want 1m0s and 2", info.Config.AckWait, info.NumAckPending)
	}
	before = removals(t, st)
	bob.ackBatch(t, "+ACK "+got[3].Reply()) // notes bob again
	waitRemovals(t, st, before+3)
	if n := streamMsgs(t, st); n != 4 {
		t.Fatalf("the stream holds %d messages after removals, want 4", n)
	}
	var term string
	for _, m := range again {
		if seq(m) == seq(got[0]) {
			term = "+TERM " + m.Reply()
		}
	}
	if term == "" {
		t.Fatal("message 0 was not delivered again")
	}
	bob.ackBatch(t, term, "+ACK "+got[1].Reply())
	waitStreamMsgs(t, st, 0)
}

// TestGateRemovesReadMailWithinAMinute: with the default settings, a
// message its recipient acknowledged is gone from the stream within a
// minute (RemoveReadEvery, 10 s by default, is the bound; one
// acknowledgement alone never reaches RemoveReadAfter).
func TestGateRemovesReadMailWithinAMinute(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the default sweep (up to 10 s)")
	}
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := gateLogin(t, st, "alice"), gateLogin(t, st, "bob")
	if code, _ := gateCode(t, alice.send(t, bob.key, []byte("read me"))); code != 0 {
		t.Fatal("refused")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := inbox.NewPuller(bob.nc, bob.key.String(), callout.DefaultStream).Fetch(ctx, 1, 0)
	if err != nil || len(got) != 1 {
		t.Fatalf("bob's fetch: %d, %v", len(got), err)
	}
	acked := time.Now()
	bob.ackBatch(t, "+ACK "+got[0].Reply())
	for streamMsgs(t, st) != 0 {
		if time.Since(acked) > time.Minute {
			t.Fatal("the acknowledged message is still stored after a minute")
		}
	}
	t.Logf("gone %v after the acknowledgement", time.Since(acked).Round(time.Millisecond))
}
