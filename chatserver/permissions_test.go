package chatserver_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestEveryGrantIsNecessary: callout.Permissions is minimal. One user
// holds exactly its grants, and each of the others holds all of them but
// one (static users of the user account, listed in auth_users, so that
// their permissions are the test's); each walks the whole path a client
// takes (its consumer, a send, a receive, an acknowledgement, asking a
// peer and answering one). The full user does everything; every user
// missing a grant fails the step that grant is for.
func TestEveryGrantIsNecessary(t *testing.T) {
	keysDir := t.TempDir()
	conf, err := chatserver.NATSConfig(keysDir, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type grant struct {
		pub   bool
		index int
		step  string // the step that needs it
	}
	full := callout.Permissions(stacktest.Identity("x").PublicKey(), "")
	need := map[string]string{ // grant (with K for the key) → step
		"kez.v1.send.*.K":        "send",
		"kez.v1.msend.K":         "msend",
		"kez.v1.consumer.K":      "consumer",
		"kez.v1.pull.K":          "receive",
		"kez.v1.ack.K":           "ack",
		"kez.v1.p2p.*":           "ask a peer",
		"_INBOX.*.>":             "answer a peer",
		"sub _INBOX.K.>":         "consumer",
		"sub kez.v1.deliver.K.>": "receive",
		"sub kez.v1.p2p.K":       "answer a peer",
	}
	var grants []grant
	for i := range full.Pub.Allow {
		grants = append(grants, grant{true, i, ""})
	}
	for i := range full.Sub.Allow {
		grants = append(grants, grant{false, i, ""})
	}
	if len(grants) != len(need) {
		t.Fatalf("callout.Permissions has %d grants, this test knows %d: name the step each new one is for", len(grants), len(need))
	}
	type member struct {
		name    string
		id      *kez.Identity
		without *grant
	}
	members := []member{{name: "full", id: stacktest.Identity("full")}}
	var users []string
	for i := range grants {
		g := &grants[i]
		id := stacktest.Identity(fmt.Sprintf("lacks%d", i))
		k := id.PublicKey().String()
		p := callout.Permissions(id.PublicKey(), "")
		var name string
		if g.pub {
			name = p.Pub.Allow[g.index]
			p.Pub.Allow = slices.Delete(p.Pub.Allow, g.index, g.index+1)
			g.step = need[strings.ReplaceAll(name, k, "K")]
		} else {
			name = p.Sub.Allow[g.index]
			p.Sub.Allow = slices.Delete(p.Sub.Allow, g.index, g.index+1)
			g.step = need["sub "+strings.ReplaceAll(name, k, "K")]
		}
		if g.step == "" {
			t.Fatalf("no step known for grant %q", name)
		}
		members = append(members, member{name: fmt.Sprintf("lacks%d", i), id: id, without: g})
		users = append(users, fmt.Sprintf("      { nkey: %s, permissions: { publish: { allow: %s }, subscribe: { allow: %s } } }", k, quoteList(p.Pub.Allow), quoteList(p.Sub.Allow)))
	}
	fp := callout.Permissions(members[0].id.PublicKey(), "")
	users = append(users, fmt.Sprintf("      { nkey: %s, permissions: { publish: { allow: %s }, subscribe: { allow: %s } } }", members[0].id.PublicKey(), quoteList(fp.Pub.Allow), quoteList(fp.Sub.Allow)))
	var keys []string
	for _, m := range members {
		keys = append(keys, m.id.PublicKey().String())
	}
	conf = strings.Replace(conf, "  USERS {\n", "  USERS {\n    users: [\n"+strings.Join(users, "\n")+"\n    ]\n", 1)
	conf = strings.Replace(conf, "auth_users: [ ", "auth_users: [ "+strings.Join(keys, ", ")+", ", 1)
	ns := natstest.Run(t, conf)
	chains, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { chains.Close() })
	sig := httptest.NewServer(sigchain.NewHandler(chains, sigchain.WithLogger(quiet), sigchain.WithLimits(sigchain.NoLimits())))
	t.Cleanup(sig.Close)
	srv := newServer(t, sig.URL, ns.ClientURL(), keysDir)
	srv.HTTPLimits = handles.NoLimits() // ten registrations from one address
	start(t, srv)
	waitReady(t, srv)
	api := httptest.NewServer(srv.Handler())
	t.Cleanup(api.Close)
	bobID := register(t, sig.URL, api.URL, "bob")
	for _, m := range members {
		register(t, sig.URL, api.URL, m.name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bob, err := natsconn.Connect(ctx, ns.ClientURL(), bobID)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bob.Close)
	bobKey := bobID.PublicKey().String()
	if _, err := bob.Subscribe(callout.P2PSubjectPrefix+bobKey, func(m *nats.Msg) { m.Respond([]byte("here")) }); err != nil {
		t.Fatal(err)
	}
	bjs, _ := jetstream.New(bob)

	const wait = 1500 * time.Millisecond
	for _, m := range members {
		t.Run(m.name, func(t *testing.T) {
			k := m.id.PublicKey().String()
			nc, err := natsconn.Connect(ctx, ns.ClientURL(), m.id)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			failed := map[string]bool{}
			step := func(name string, f func(context.Context) error) {
				sctx, cancel := context.WithTimeout(ctx, wait)
				defer cancel()
				if err := f(sctx); err != nil {
					failed[name] = true
				}
			}
			step("consumer", func(ctx context.Context) error { _, err := inbox.Open(ctx, nc, k, 0); return err })
			step("send", func(ctx context.Context) error {
				pub, err := inbox.NewPublisher(nc, k, 8, wait)
				if err != nil {
					return err
				}
				defer pub.Close()
				f, err := pub.PublishMsgAsync(&nats.Msg{Subject: callout.SendSubjectPrefix + bobKey + "." + k, Data: []byte("to bob")})
				if err != nil {
					return err
				}
				select {
				case <-f.Ok():
					return nil
				case err := <-f.Err():
					return err
				}
			})
			var msendErr error
			step("msend", func(ctx context.Context) error {
				a, err := inbox.MultiSend(ctx, nc, m.id.PublicKey(), []kez.PublicKey{bobID.PublicKey()}, []byte("to bob"), "")
				if err == nil && a.Stored != 1 {
					err = fmt.Errorf("answer %+v", a)
				}
				msendErr = err
				return err
			})
			var got []jetstream.Msg
			if _, err := bjs.Publish(ctx, callout.SendSubjectPrefix+k+"."+bobKey, []byte("from bob")); err != nil {
				t.Fatalf("bob's send: %v", err)
			}
			step("receive", func(ctx context.Context) error {
				got, err = inbox.NewPuller(nc, k, callout.DefaultStream).Fetch(ctx, 1, wait/2)
				if err == nil && len(got) != 1 {
					err = fmt.Errorf("%d messages", len(got))
				}
				return err
			})
			step("ack", func(ctx context.Context) error {
				if len(got) == 0 {
					return fmt.Errorf("nothing to acknowledge")
				}
				got[0].Ack()
				tick := time.NewTicker(20 * time.Millisecond) // polling the server's state
				defer tick.Stop()
				for consumerInfo(t, ns.ClientURL(), keysDir, k).NumAckPending != 0 {
					select {
					case <-ctx.Done():
						return ctx.Err()
					case <-tick.C:
					}
				}
				return nil
			})
			step("ask a peer", func(ctx context.Context) error {
				r, err := nc.RequestWithContext(ctx, callout.P2PSubjectPrefix+bobKey, nil)
				if err == nil && string(r.Data) != "here" {
					err = fmt.Errorf("answer %q", r.Data)
				}
				return err
			})
			step("answer a peer", func(ctx context.Context) error {
				sub, err := nc.Subscribe(callout.P2PSubjectPrefix+k, func(m *nats.Msg) { m.Respond([]byte("me")) })
				if err != nil {
					return err
				}
				defer sub.Unsubscribe()
				nc.Flush()
				r, err := bob.RequestWithContext(ctx, callout.P2PSubjectPrefix+k, nil)
				if err == nil && string(r.Data) != "me" {
					err = fmt.Errorf("answer %q", r.Data)
				}
				return err
			})
			switch {
			case m.without == nil && len(failed) != 0:
				t.Fatalf("with every grant, these steps failed: %v", failed)
			case m.without != nil && !failed[m.without.step]:
				t.Fatalf("without the grant for %q, that step still worked (failed: %v)", m.without.step, failed)
			case m.without != nil && m.without.step == "msend" && !errors.Is(msendErr, inbox.ErrMultiSendUnsupported):
				// As from a chat-server before multi-recipient sends: a
				// clean error at once, not a timeout.
				t.Fatalf("without the msend grant: %v", msendErr)
			}
		})
	}
}

// consumerInfo returns key's consumer as the chat-server's key sees it.
func consumerInfo(t testing.TB, url, keysDir, key string) *jetstream.ConsumerInfo {
	t.Helper()
	keys, err := callout.LoadOrCreateKeys(keysDir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, keys.ProvisionerOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	c, err := js.Consumer(context.Background(), callout.DefaultStream, key)
	if err != nil {
		t.Fatal(err)
	}
	return c.CachedInfo()
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// TestMultiSendWithoutExport: a nats.conf written before multi-recipient
// sends (no kez.v1.msend.> stream between the accounts) leaves a client's
// multi-recipient send with no one to take it: the client gets
// inbox.ErrMultiSendUnsupported at once, and one-to-one sends still work.
func TestMultiSendWithoutExport(t *testing.T) {
	keysDir := t.TempDir()
	conf, err := chatserver.NATSConfig(keysDir, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for _, line := range strings.Split(conf, "\n") {
		if !strings.Contains(line, callout.MultiSendSubjectPrefix) {
			old = append(old, line)
		}
	}
	if len(old) != strings.Count(conf, "\n")+1-2 {
		t.Fatalf("the rendered nats.conf does not have the two msend lines:\n%s", conf)
	}
	ns := natstest.Run(t, strings.Join(old, "\n"))
	chains, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { chains.Close() })
	sig := httptest.NewServer(sigchain.NewHandler(chains, sigchain.WithLogger(quiet), sigchain.WithLimits(sigchain.NoLimits())))
	t.Cleanup(sig.Close)
	srv := newServer(t, sig.URL, ns.ClientURL(), keysDir)
	start(t, srv)
	waitReady(t, srv)
	api := httptest.NewServer(srv.Handler())
	t.Cleanup(api.Close)
	alice, bob := register(t, sig.URL, api.URL, "alice"), register(t, sig.URL, api.URL, "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := natsconn.Connect(ctx, ns.ClientURL(), alice)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := inbox.MultiSend(ctx, nc, alice.PublicKey(), []kez.PublicKey{bob.PublicKey()}, []byte("x"), ""); !errors.Is(err, inbox.ErrMultiSendUnsupported) || !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("msend through an old nats.conf: %v", err)
	}
	js, _ := jetstream.New(nc)
	if _, err := js.Publish(ctx, callout.SendSubject(bob.PublicKey(), alice.PublicKey()), []byte("x")); err != nil {
		t.Fatalf("a send through the same nats.conf: %v", err)
	}
}
