package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

func TestConstantsMatchCallout(t *testing.T) {
	if DefaultStream != callout.DefaultStream || inboxPrefix != callout.InboxSubjectPrefix {
		t.Fatalf("chat and callout disagree: stream %q/%q, prefix %q/%q", DefaultStream, callout.DefaultStream, inboxPrefix, callout.InboxSubjectPrefix)
	}
}

// Alice sends three messages while Bob is offline; Bob connects later and
// gets all three, in order, once; a second inbox shows nothing new.
func TestOfflineDeliveryInOrderOnce(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := openClient(t, st, au)
	mustAdd(t, alice, "bob")

	var sent []Sent
	for i := 1; i <= 3; i++ {
		sent = append(sent, mustSend(t, alice, "bob", fmt.Sprintf("message %d", i)))
	}
	for i, s := range sent {
		if s.Seq == 0 || s.Handle != bu.Handle.String() || s.To != bu.Key {
			t.Errorf("sent %d: %+v", i, s)
		}
		if i > 0 && s.Seq <= sent[i-1].Seq {
			t.Errorf("stream sequences not increasing: %d then %d", sent[i-1].Seq, s.Seq)
		}
	}

	// Bob comes online for the first time only now.
	bob := openClient(t, st, bu)
	mustAdd(t, bob, "alice")
	receiveN(t, bob, 3)
	got := mustInbox(t, bob, false)
	if want := []string{"message 1", "message 2", "message 3"}; !slices.Equal(texts(got), want) {
		t.Fatalf("inbox: %q, want %q", texts(got), want)
	}
	for i, e := range got {
		if e.ID != sent[i].ID || e.From != au.Key || e.PeerHandle != au.Handle.String() || e.Trust != TrustTrusted || !e.Incoming {
			t.Errorf("entry %d: %+v", i, e)
		}
		if !e.SentAt.Equal(sent[i].SentAt) {
			t.Errorf("entry %d sent at %v, sender says %v", i, e.SentAt, sent[i].SentAt)
		}
	}
	if n := mustSync(t, bob); n != 0 {
		t.Errorf("a second sync stored %d new messages", n)
	}
	if again := mustInbox(t, bob, false); len(again) != 0 {
		t.Errorf("second inbox shows %q", texts(again))
	}
	if all := mustInbox(t, bob, true); len(all) != 3 {
		t.Errorf("inbox --all shows %d messages", len(all))
	}
	h, err := bob.History(testCtx(t), "alice", 0)
	if err != nil || len(h) != 3 {
		t.Fatalf("history: %d entries, %v", len(h), err)
	}
	if s := bob.Stats(); s.Received != 3 || s.Rejected != 0 {
		t.Errorf("bob's stats: %+v", s)
	}

	// Alice's history has the three, delivered according to Bob's receipts.
	delivered := func(int) bool {
		ah, err := alice.History(testCtx(t), "bob", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ah {
			if e.DeliveredAt.IsZero() || e.State != StateSent {
				return false
			}
		}
		return len(ah) == 3
	}
	receiveUntil(t, alice, "receipts", delivered)
	if s := bob.Stats(); s.ReceiptsSent == 0 || s.ReceiptsSent > 3 {
		t.Errorf("bob sent %d receipts for 3 messages", s.ReceiptsSent)
	}
}

// The receipt arrives through WaitReceipt while the recipient runs a live
// loop; the recipient's handler sees the message once.
func TestRunAndWaitReceipt(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")

	ctx := testCtx(t)
	got := make(chan *Entry, 10)
	runDone := make(chan error, 1)
	runCtx, stop := context.WithCancel(ctx)
	go func() { runDone <- bob.Run(runCtx, func(e *Entry) { got <- e }) }()

	s, err := alice.Send(ctx, "bob", "are you there?", WaitReceipt())
	if err != nil {
		t.Fatal(err)
	}
	if s.DeliveredAt.IsZero() {
		t.Errorf("no delivery time: %+v", s)
	}
	select {
	case e := <-got:
		if e.Text() != "are you there?" || e.ID != s.ID {
			t.Errorf("bob got %+v", e)
		}
	case <-ctx.Done():
		t.Fatal("bob's handler never ran")
	}
	stop()
	if err := <-runDone; err != nil {
		t.Errorf("Run: %v", err)
	}
	select {
	case e := <-got:
		t.Errorf("handler ran again: %+v", e)
	default:
	}
	e, err := alice.Message(ctx, au.Key, s.ID)
	if err != nil || e.DeliveredAt.IsZero() || e.Incoming {
		t.Errorf("alice's copy: %+v, %v", e, err)
	}
	if _, err := alice.Send(ctx, "carol", "hi"); !errors.Is(err, ErrNotContact) {
		t.Errorf("send to a stranger: %v", err)
	}
}

// Closing the client ends a Run loop in progress, and later calls say the
// client is closed.
func TestCloseStopsRun(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	bob := openClient(t, st, st.NewUser(t, "bob"))
	runDone := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		close(started)
		runDone <- bob.Run(context.Background(), nil)
	}()
	<-started
	if err := bob.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-runDone:
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Run after Close: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if _, err := bob.Sync(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Sync after Close: %v", err)
	}
	if _, err := bob.Inbox(context.Background(), false); err == nil {
		t.Error("Inbox after Close succeeded")
	}
}
