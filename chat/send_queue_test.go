package chat

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/nats-io/nats.go"
)

// natsDown stops the stack's NATS server and returns once c saw its
// connection drop.
func natsDown(t *testing.T, st *stacktest.Stack, c *testClient) {
	t.Helper()
	dropped := c.Conn().StatusChanged(nats.RECONNECTING)
	defer c.Conn().RemoveStatusListener(dropped)
	st.NATS().Shutdown()
	select {
	case <-dropped:
	case <-testCtx(t).Done():
		t.Fatal("the client did not see NATS go away")
	}
}

// TestSendQueuedWhileNATSDown: messages sent, to a person and to a group,
// while NATS is down stay pending (a Wait or SendGroup whose ctx ends says
// ErrQueued), are published once NATS is back and its stream answers
// again, end sent, and arrive exactly once.
func TestSendQueuedWhileNATSDown(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)
	if _, err := alice.CreateGroup(ctx, "team", ""); err != nil {
		t.Fatal(err)
	}
	if err := alice.AddGroupMembers(ctx, "team", "bob"); err != nil {
		t.Fatal(err)
	}
	team := "team@" + st.Domain
	waitGroup(t, bob, team, func(g *Group) bool { return len(g.Members) == 2 })
	mustSend(t, alice, "bob", "before")
	mustGroupSend(t, alice, "team", "before, to the team")
	waitGroupText(t, bob, team, "before, to the team")

	natsDown(t, st, alice)
	p1, err := alice.SendAsync(ctx, "bob", "queued 1")
	if err != nil {
		t.Fatalf("a send while NATS is down: %v", err)
	}
	ended, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := p1.Wait(ended); !errors.Is(err, ErrQueued) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait while NATS is down: %v, want ErrQueued", err)
	}
	if e, err := alice.Message(ctx, au.Key, p1.ID()); err != nil || e.State != StatePending {
		t.Fatalf("the queued message: %+v, %v; want pending", e, err)
	}
	// A bound on how long the caller waits, not on the test: the group
	// message is stored at once and then waits for NATS.
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = alice.SendGroup(short, "team", "queued to the team")
	cancel()
	if !errors.Is(err, ErrQueued) {
		t.Fatalf("SendGroup while NATS is down: %v, want ErrQueued", err)
	}
	// Sends that wait: they end once NATS is back.
	sent := make(chan error, 2)
	go func() { _, err := alice.Send(ctx, "bob", "queued 2"); sent <- err }()
	go func() { _, err := alice.SendGroup(ctx, "team", "queued 2 to the team"); sent <- err }()

	st.RestartNATS()
	if s, err := p1.Wait(ctx); err != nil || s.Seq == 0 {
		t.Fatalf("the queued message once NATS is back: %+v, %v", s, err)
	}
	for range 2 {
		if err := <-sent; err != nil {
			t.Fatalf("a send waiting for NATS: %v", err)
		}
	}
	want := map[string]bool{"queued 1": true, "queued 2": true}
	receiveUntil(t, bob, "the queued messages", func(int) bool {
		h, err := bob.History(ctx, "alice", 0)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range h {
			if want[e.Text()] {
				n++
			}
		}
		return n >= len(want)
	})
	waitGroupText(t, bob, team, "queued to the team")
	waitGroupText(t, bob, team, "queued 2 to the team")
	h, err := bob.History(ctx, "alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, e := range h {
		seen[e.Text()]++
	}
	gh, err := bob.GroupHistory(ctx, team, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range gh {
		seen[e.Text()]++
	}
	for _, text := range []string{"queued 1", "queued 2", "queued to the team", "queued 2 to the team"} {
		if seen[text] != 1 {
			t.Errorf("bob holds %q %d times, want once", text, seen[text])
		}
	}
	receiveUntil(t, alice, "every message sent", func(int) bool {
		return countRows(t, alice, `SELECT COUNT(*) FROM messages WHERE incoming = 0 AND state != 'sent'`) == 0 &&
			countRows(t, alice, `SELECT COUNT(*) FROM outbox`)+countRows(t, alice, `SELECT COUNT(*) FROM group_outbox`) == 0
	})
	if n := countRows(t, alice, `SELECT COUNT(*) FROM messages WHERE incoming = 0 AND state = 'failed'`); n != 0 {
		t.Errorf("%d messages failed", n)
	}
}

// TestSendQueuedThenRefused: a message queued while NATS is down that the
// gate refuses once it is back (over the recipient's rate) fails with the
// refusal: only the connection keeps a message pending.
func TestSendQueuedThenRefused(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{MailLimits: chatserver.MailLimits{RecipientRate: 0.001, RecipientBurst: 1}})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := openClient(t, st, au), openClient(t, st, bu)
	mustAdd(t, alice, "bob")
	mustAdd(t, bob, "alice")
	ctx := testCtx(t)
	mustSend(t, alice, "bob", "the only one the burst allows")

	natsDown(t, st, alice)
	p, err := alice.SendAsync(ctx, "bob", "over the rate")
	if err != nil {
		t.Fatal(err)
	}
	st.RestartNATS()
	if _, err := p.Wait(ctx); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("the queued message refused: %v, want ErrQuotaExceeded", err)
	}
	if e, err := alice.Message(ctx, au.Key, p.ID()); err != nil || e.State != StateFailed {
		t.Fatalf("the refused message: %+v, %v; want failed", e, err)
	}
}
