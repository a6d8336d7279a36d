package chat

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
	"github.com/nats-io/nats.go"
)

// testClient is a client of a stack user with its log.
type testClient struct {
	*Client
	user *stacktest.User
	log  *testlog.Buffer
}

// clientOpt changes the Config of a test client.
type clientOpt func(*Config)

// openClient opens a client for u on st in a fresh state folder (or the
// given one), closed in t.Cleanup. Its log is printed if the test fails.
func openClient(t testing.TB, st *stacktest.Stack, u *stacktest.User, opts ...clientOpt) *testClient {
	t.Helper()
	return openClientIn(t, st, u, filepath.Join(t.TempDir(), u.Name), opts...)
}

func openClientIn(t testing.TB, st *stacktest.Stack, u *stacktest.User, home string, opts ...clientOpt) *testClient {
	t.Helper()
	logs := &testlog.Buffer{}
	cfg := Config{Client: client.Config{
		Identity:     u.Identity,
		Home:         home,
		NATSURL:      st.NATSURL,
		ServerURL:    st.ServerURL,
		SigServerURL: st.SigServerURL,
		Domain:       st.Domain,
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		NATSOptions:  []nats.Option{nats.ReconnectWait(20 * time.Millisecond), nats.ReconnectJitter(10*time.Millisecond, 10*time.Millisecond)},
	}}
	// The stack's sig-server keeps a log: a log view would go before
	// each first message, which tests counting envelopes do not expect.
	// Those of log views opt in (withLogViews).
	cfg.LogViewInterval = -1
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open for %s: %v", u.Name, err)
	}
	tc := &testClient{Client: c, user: u, log: logs}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close for %s: %v", u.Name, err)
		}
		if t.Failed() {
			t.Logf("log of %s's client:\n%s", u.Name, tail(logs.String(), 8000))
		}
	})
	return tc
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustAdd(t testing.TB, c *testClient, handle string) *Contact {
	t.Helper()
	ct, err := c.AddContact(testCtx(t), handle)
	if err != nil {
		t.Fatalf("%s adds %s: %v", c.user.Name, handle, err)
	}
	return ct
}

func mustSend(t testing.TB, c *testClient, to, text string, opts ...SendOption) Sent {
	t.Helper()
	s, err := c.Send(testCtx(t), to, text, opts...)
	if err != nil {
		t.Fatalf("%s sends to %s: %v", c.user.Name, to, err)
	}
	return s
}

func mustSync(t testing.TB, c *testClient) int {
	t.Helper()
	n, err := c.Sync(testCtx(t))
	if err != nil {
		t.Fatalf("%s syncs: %v", c.user.Name, err)
	}
	return n
}

func mustInbox(t testing.TB, c *testClient, all bool) []*Entry {
	t.Helper()
	es, err := c.Inbox(testCtx(t), all)
	if err != nil {
		t.Fatalf("%s inbox: %v", c.user.Name, err)
	}
	return es
}

func texts(es []*Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Text()
	}
	return out
}

// receiveN receives until at least n new messages were stored in total.
func receiveN(t testing.TB, c *testClient, n int) int {
	t.Helper()
	total := 0
	receiveUntil(t, c, fmt.Sprintf("%d new messages", n), func(got int) bool { total += got; return total >= n })
	return total
}

// receiveUntil receives until done (given the number of new messages each
// step stored) says so: it drains what is waiting, then waits on the server
// for the next delivery (a long-poll fetch, not a sleep), and fails after a
// deadline.
func receiveUntil(t testing.TB, c *testClient, what string, done func(newMessages int) bool) {
	t.Helper()
	receiveUntilWithin(t, c, what, 20*time.Second, done)
}

// receiveUntilWithin is receiveUntil with another deadline (for large
// transfers).
func receiveUntilWithin(t testing.TB, c *testClient, what string, limit time.Duration, done func(newMessages int) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		n, err := c.Sync(ctx)
		if err != nil {
			t.Fatalf("%s waiting for %s: %v", c.user.Name, what, err)
		}
		if done(n) {
			return
		}
		n, err = c.waitOne(ctx, 2*time.Second)
		if ctx.Err() != nil {
			t.Fatalf("%s: no %s before the deadline (stats %+v)", c.user.Name, what, c.Stats())
		}
		if err != nil {
			t.Fatalf("%s waiting for %s: %v", c.user.Name, what, err)
		}
		if done(n) {
			return
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
