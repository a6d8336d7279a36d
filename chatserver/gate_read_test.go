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
)

// waitStreamMsgs polls the inbox stream until it holds want messages.
func waitStreamMsgs(t testing.TB, st *stacktest.Stack, want uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := streamMsgs(t, st); got != want; got = streamMsgs(t, st) {
		if time.Now().After(deadline) {
			t.Fatalf("the stream holds %d messages, want %d", got, want)
		}
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
