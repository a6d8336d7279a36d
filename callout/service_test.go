package callout_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestRegisteredUserLandsInUserAccount(t *testing.T) {
	s := newStack(t, stackOptions{})
	alice := s.user("alice@kez.lat")
	c := s.mustConnect(alice)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	cz, err := s.srv.Server().Connz(&server.ConnzOptions{Username: true, Account: callout.DefaultUserAccount})
	if err != nil {
		t.Fatal(err)
	}
	if len(cz.Conns) != 1 {
		t.Fatalf("user account has %d connections, want 1", len(cz.Conns))
	}
	// The NATS user name is the key: what the gate reads from
	// Nats-Request-Info to learn who sent a request.
	if got := cz.Conns[0]; got.AuthorizedUser != alice.PublicKey().String() || got.Account != "USERS" {
		t.Fatalf("connection is user %q in account %q, want %s in USERS", got.AuthorizedUser, got.Account, alice.PublicKey())
	}
	if st := s.svc.Stats(); st.Authorized != 1 || st.Denied != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnregisteredKeyRefused(t *testing.T) {
	s := newStack(t, stackOptions{})
	stranger := newIdentity(t)
	_, err := s.connect(stranger)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unregistered key: got %v, want an authorization violation", err)
	}
	if st := s.svc.Stats(); st.Denied != 1 || st.Authorized != 0 {
		t.Fatalf("stats %+v", st)
	}
	if !s.logged("is not registered") {
		t.Fatalf("service log lacks the denial reason:\n%s", s.log)
	}
}

func TestForgedNonceSignatureRefused(t *testing.T) {
	s := newStack(t, stackOptions{})
	alice := s.user("alice@kez.lat")
	mallory := s.user("mallory@kez.lat")
	// Mallory claims Alice's key but can only sign with her own.
	_, err := s.connectAs(alice.PublicKey(), mallory.SignNATSNonce)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("forged signature: got %v, want an authorization violation", err)
	}
	if !s.logged("does not verify") {
		t.Fatalf("service log lacks the reason:\n%s", s.log)
	}
	// Alice herself still gets in.
	s.mustConnect(alice)
}

func TestSuspendedAndPolicyDenials(t *testing.T) {
	errPolicy := errors.New("bots are not allowed")
	s := newStack(t, stackOptions{service: callout.Config{
		Authorizer: func(_ context.Context, r *callout.Request) error {
			if strings.HasPrefix(r.Entry.Handle, "bot") {
				return errPolicy
			}
			if r.ServerID == "" || r.Key.IsZero() {
				return errors.New("request without server or key")
			}
			return nil
		},
	}})
	sus := newIdentity(t)
	s.dir.Set(sus.PublicKey(), callout.Entry{Handle: "sus@kez.lat", Suspended: true})
	if _, err := s.connect(sus); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("suspended: %v", err)
	}
	bot := s.user("bot1@kez.lat")
	if _, err := s.connect(bot); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("policy: %v", err)
	}
	s.mustConnect(s.user("carol@kez.lat"))
	if st := s.svc.Stats(); st.Denied != 2 || st.Authorized != 1 {
		t.Fatalf("stats %+v", st)
	}
	if !s.logged("bots are not allowed") || !s.logged("is suspended") {
		t.Fatalf("service log lacks the reasons:\n%s", s.log)
	}
}

// failingDirectory cannot answer.
type failingDirectory struct{}

func (failingDirectory) Lookup(context.Context, kez.PublicKey) (callout.Entry, error) {
	return callout.Entry{}, errors.New("the registry database is locked")
}

func TestDirectoryErrorFailsClosed(t *testing.T) {
	s := newStack(t, stackOptions{})
	s.svc.Close()
	s.cfg.Directory = failingDirectory{}
	svc := s.startService()
	if _, err := s.connect(newIdentity(t)); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("directory down: %v", err)
	}
	if st := svc.Stats(); st.Denied != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestServiceStoppedFailsClosed(t *testing.T) {
	s := newStack(t, stackOptions{config: callout.ConfigOptions{AuthTimeout: time.Second}})
	alice := s.user("alice@kez.lat")
	s.mustConnect(alice)
	if err := s.svc.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.connect(alice); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("with no callout service: got %v, want an authorization violation", err)
	}
	s.startService()
	s.mustConnect(alice)
}

func TestReplicasShareTheQueueGroup(t *testing.T) {
	s := newStack(t, stackOptions{})
	second := s.startService()
	alice := s.user("alice@kez.lat")
	// Queue groups pick a member at random: log in until both replicas
	// have answered (the chance that one answers 200 in a row is 2^-199).
	for i := 0; i < 200; i++ {
		c := s.mustConnect(alice)
		c.Close()
		if s.svc.Stats().Authorized > 0 && second.Stats().Authorized > 0 {
			t.Logf("after %d logins: replica 1 answered %d, replica 2 answered %d", i+1, s.svc.Stats().Authorized, second.Stats().Authorized)
			return
		}
	}
	t.Fatalf("one replica answered everything: %+v / %+v", s.svc.Stats(), second.Stats())
}

func TestServerRestartKeepsServing(t *testing.T) {
	s := newStack(t, stackOptions{config: callout.ConfigOptions{AuthTimeout: time.Second}})
	alice := s.user("alice@kez.lat")
	s.mustConnect(alice).Close()
	s.srv.Restart()
	// The service's connection reconnects by itself; poll (the server is
	// a real external party here) until a login succeeds.
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := s.connect(alice)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no login after the server restarted: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	keys, err := callout.GenerateKeys()
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]callout.Config{
		"no keys":      {Directory: &callout.StaticDirectory{}},
		"no directory": {Keys: keys},
		"tiny ttl":     {Keys: keys, Directory: &callout.StaticDirectory{}, TTL: time.Millisecond},
	} {
		if _, err := callout.New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestServiceListenTwice(t *testing.T) {
	s := newStack(t, stackOptions{})
	nc, err := nats.Connect(s.srv.ClientURL(), s.keys.ServiceOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := s.svc.Listen(nc); err == nil {
		t.Fatal("second Listen accepted")
	}
	s.svc.Close()
	if err := s.svc.Listen(nc); err == nil {
		t.Fatal("Listen after Close accepted")
	}
}

// TestExpiryRenewsAndRevokes: when the short-lived user JWT expires the
// server drops the connection, the client reconnects through the callout
// and is authorized again — unless its key was removed meanwhile.
func TestExpiryRenewsAndRevokes(t *testing.T) {
	s := newStack(t, stackOptions{config: callout.ConfigOptions{AuthTimeout: time.Second}, service: callout.Config{TTL: 2 * time.Second}})
	alice := s.user("alice@kez.lat")
	reconnected, closed := make(chan struct{}, 4), make(chan struct{})
	opts := append(loginOptions(alice.PublicKey(), alice.SignNATSNonce)[:3], // without NoReconnect
		nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }))
	nc, err := nats.Connect(s.srv.ClientURL(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	select {
	case <-reconnected:
	case <-time.After(20 * time.Second):
		t.Fatal("no reconnect after the user JWT expired")
	}
	if got := s.svc.Stats().Authorized; got < 2 {
		t.Fatalf("authorized %d times, want a renewal", got)
	}
	s.dir.Delete(alice.PublicKey())
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatal("the client was not cut off after its key was removed")
	}
	if !s.logged("is not registered") {
		t.Fatal("no denial logged")
	}
}
