package systemtest

import (
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	kezclient "github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
)

// stackClient opens a chat client for u on a stacktest stack.
func stackClient(t *testing.T, st *stacktest.Stack, u *stacktest.User) (*chat.Client, *logBuffer) {
	t.Helper()
	logs := &logBuffer{}
	c, err := chat.Open(testCtx(t, 30*time.Second), chat.Config{Client: kezclient.Config{
		Identity: u.Identity, Home: filepath.Join(t.TempDir(), u.Name),
		NATSURL: st.NATSURL, ServerURL: st.ServerURL, SigServerURL: st.SigServerURL, Domain: st.Domain,
		Logger:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		NATSOptions: []nats.Option{nats.ReconnectWait(20 * time.Millisecond)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, logs
}

// TestSigServerRewritesHistory: a sig-server (or whoever holds it) serves
// a chain that forks from, or is shorter than, what a client pinned. The
// client refuses it: the contact is flagged with the reason, sending is
// refused, messages from the contact are held rather than shown, and the
// client logs a warning. One row per rewrite.
func TestSigServerRewritesHistory(t *testing.T) {
	rows := []struct {
		name    string
		rewrite func(t *testing.T, u *stacktest.User, pinned []*sigchain.Link) []*sigchain.Link
		want    error
	}{
		{"rolled back to the eldest link", func(t *testing.T, u *stacktest.User, pinned []*sigchain.Link) []*sigchain.Link {
			return pinned[:1]
		}, sigchain.ErrRollback},
		{"forked at the second link", func(t *testing.T, u *stacktest.User, pinned []*sigchain.Link) []*sigchain.Link {
			st, err := sigchain.Verify(pinned[:1])
			if err != nil {
				t.Fatal(err)
			}
			other, err := sigchain.NewLink(u.Identity, st, sigchain.TypeSetEncryptionKey,
				sigchain.SetEncryptionKeyBody(u.Identity.EncryptionKey(7).PublicKey(), 7), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			return []*sigchain.Link{pinned[0], other}
		}, sigchain.ErrFork},
		{"another history of the same length", func(t *testing.T, u *stacktest.User, pinned []*sigchain.Link) []*sigchain.Link {
			other, err := sigchain.NewLink(u.Identity, nil, sigchain.TypeEldest,
				sigchain.EldestBody(u.Key, u.Identity.EncryptionKey(0).PublicKey(), 0, u.Handle.String()), time.Now().Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			st, err := sigchain.Verify([]*sigchain.Link{other})
			if err != nil {
				t.Fatal(err)
			}
			next, err := sigchain.NewLink(u.Identity, st, sigchain.TypeSetEncryptionKey,
				sigchain.SetEncryptionKeyBody(u.Identity.EncryptionKey(1).PublicKey(), 1), time.Now().Add(-time.Minute))
			if err != nil {
				t.Fatal(err)
			}
			return []*sigchain.Link{other, next}
		}, sigchain.ErrFork},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			st := stacktest.Start(t, stacktest.Options{})
			au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
			ctx := testCtx(t, 60*time.Second)
			// Bob's chain grows to two links before alice pins it.
			sigc := &sigchain.Client{BaseURL: st.SigServerURL}
			rot, err := sigchain.NewLink(bu.Identity, bu.Chain, sigchain.TypeSetEncryptionKey,
				sigchain.SetEncryptionKeyBody(bu.Identity.EncryptionKey(1).PublicKey(), 1), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			if err := sigc.Append(ctx, rot); err != nil {
				t.Fatal(err)
			}
			pinned, err := sigc.Fetch(ctx, bu.Key, 0)
			if err != nil {
				t.Fatal(err)
			}
			alice, alog := stackClient(t, st, au)
			bob, _ := stackClient(t, st, bu)
			for _, c := range []struct {
				c *chat.Client
				h string
			}{{alice, "bob"}, {bob, "alice"}} {
				if _, err := c.c.AddContact(ctx, c.h); err != nil {
					t.Fatal(err)
				}
			}

			st.RewriteChain(t, bu.Key, row.rewrite(t, bu, pinned))

			ct, err := alice.CheckContact(ctx, "bob")
			var cr *chat.ChainRewrittenError
			if !errors.As(err, &cr) || !errors.Is(err, row.want) || ct.Flag != chat.FlagChainRewritten {
				t.Fatalf("check: %v (flag %q), want %v", err, ct.Flag, row.want)
			}
			if _, err := alice.Send(ctx, "bob", "still you?"); !errors.Is(err, chat.ErrChainRewritten) {
				t.Fatalf("send to a rewritten contact: %v", err)
			}
			if _, err := bob.Send(ctx, "alice", "it's me"); err != nil {
				t.Fatal(err)
			}
			eventually(t, 20*time.Second, "bob's message stored", func() bool {
				n, err := alice.Sync(ctx)
				return err == nil && n > 0
			})
			held, _ := alice.Held(ctx)
			shown, _ := alice.Inbox(ctx, true)
			if len(held) != 1 || len(shown) != 0 {
				t.Fatalf("held %d, shown %d: want the message held, not shown", len(held), len(shown))
			}
			if !strings.Contains(alog.String(), "contact flagged") {
				t.Errorf("alice's client did not warn:\n%s", alog.tail(2000))
			}
			t.Logf("refused: %v", err)
		})
	}
}
