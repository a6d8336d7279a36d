package stacktest_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// login connects as id the way chat.Connect does (natsconn: nkey, private
// reply prefix); opts may override its defaults.
func login(t *testing.T, url string, id *kez.Identity, opts ...nats.Option) (*nats.Conn, error) {
	t.Helper()
	nc, err := natsconn.Connect(context.Background(), url, id, opts...)
	if err == nil {
		t.Cleanup(nc.Close)
	}
	return nc, err
}

// sendAndReceive has from send to to's inbox through the chat-server's
// gate, then to pull it from its consumer, with exactly the rights the
// callout grants.
func sendAndReceive(t *testing.T, st *stacktest.Stack, from, to *stacktest.User, text string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	snc, err := login(t, st.NATSURL, from.Identity)
	if err != nil {
		t.Fatalf("login %s: %v", from.Name, err)
	}
	sjs, _ := jetstream.New(snc)
	if _, err := sjs.Publish(ctx, callout.SendSubjectPrefix+to.Key.String()+"."+from.Key.String(), []byte(text)); err != nil {
		t.Fatalf("publish: %v", err)
	}
	rnc, err := login(t, st.NATSURL, to.Identity)
	if err != nil {
		t.Fatalf("login %s: %v", to.Name, err)
	}
	if _, err := inbox.Open(ctx, rnc, to.Key.String(), 0); err != nil {
		t.Fatalf("consumer: %v", err)
	}
	msgs, err := inbox.NewPuller(rnc, to.Key.String(), callout.DefaultStream).Fetch(ctx, 1, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	subject := callout.InboxSubjectPrefix + to.Key.String() + "." + from.Key.String()
	for _, m := range msgs {
		if string(m.Data()) != text || m.Subject() != subject {
			t.Fatalf("got %q on %s", m.Data(), m.Subject())
		}
		m.Ack()
		return
	}
	t.Fatal("no message")
}

func TestStack(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	if alice.Key != stacktest.Identity("alice").PublicKey() || alice.Handle.String() != "alice@"+stacktest.DefaultDomain {
		t.Fatalf("alice: %+v", alice)
	}
	if again := st.NewUser(t, "alice"); again.Key != alice.Key {
		t.Fatal("NewUser is not repeatable")
	}
	if ok, _ := kez.HasIdentity(alice.Home); !ok {
		t.Fatal("no identity in alice's KEZ_HOME")
	}
	if _, err := os.Stat(alice.Home + "/profile.json"); err != nil {
		t.Fatal(err)
	}

	// The NATS server runs with exactly the snippet rendered for the keys.
	conf, err := os.ReadFile(st.NATS().ConfigFile())
	if err != nil || string(conf) != st.NATSConfig {
		t.Fatalf("NATS config file differs from the rendered snippet (%v)", err)
	}

	res, err := st.Resolver().Resolve(context.Background(), "bob")
	if err != nil || res.Key != bob.Key {
		t.Fatalf("resolve bob: %v %+v", err, res)
	}

	sendAndReceive(t, st, alice, bob, "hello bob")

	// A key without a handle is refused by the broker.
	stranger := stacktest.Identity("stranger")
	if _, err := login(t, st.NATSURL, stranger, nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unregistered login: %v", err)
	}

	// NATS restarts with its store; the chat-server comes back by itself
	// and a message sent before the restart is still there.
	snc, err := login(t, st.NATSURL, alice.Identity)
	if err != nil {
		t.Fatal(err)
	}
	sjs, _ := jetstream.New(snc)
	subj := callout.SendSubjectPrefix + bob.Key.String() + "." + alice.Key.String()
	if _, err := sjs.Publish(context.Background(), subj, []byte("before restart")); err != nil {
		t.Fatal(err)
	}
	st.RestartNATS()
	carol := st.NewUser(t, "carol")
	sendAndReceive(t, st, carol, alice, "after restart")
	env := st.Env(alice)
	if env["KEZ_HOME"] != alice.Home || env["NATS_URL"] != st.NATSURL || env["KEZ_DOMAIN"] != st.Domain {
		t.Errorf("Env: %v", env)
	}
}

func TestStackNATSProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server on the first run")
	}
	st := stacktest.Start(t, stacktest.Options{NATSProcess: true, Domain: "chat.example"})
	alice, bob := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	if st.NATS().Server() != nil || st.NATS().PID() == 0 {
		t.Fatal("NATS should run as a process")
	}
	// A crash: the chat-server is no longer ready, then recovers.
	st.NATS().Kill()
	if err := st.Chat.Ready(context.Background()); err == nil {
		t.Fatal("ready while NATS is down")
	}
	st.NATS().Restart()
	st.WaitReady()
	sendAndReceive(t, st, alice, bob, "after a crash")
}
