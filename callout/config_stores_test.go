package callout_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// TestNATSConfigForJetStreamStores renders the snippet of a deployment
// whose servers keep their stores in JetStream: the auth account gets
// JetStream for the chat-server's registry, the sig-server its own
// account with JetStream, and both logins bypass the callout. A registered
// user still lands in CHAT and reaches neither.
func TestNATSConfigForJetStreamStores(t *testing.T) {
	sigKP, _ := nkeys.CreateUser()
	sigPub, _ := sigKP.PublicKey()
	s := newStack(t, stackOptions{config: callout.ConfigOptions{AuthJetStream: true, SigServerKey: sigPub}})
	conf, _ := callout.NATSConfig(s.keys, callout.ConfigOptions{AuthJetStream: true, SigServerKey: sigPub})
	if !strings.Contains(conf, "auth_users: [ "+s.keys.ServicePublicKey()+", "+sigPub+", ") ||
		!strings.Contains(conf, "SIG { jetstream: enabled, users: [ { nkey: "+sigPub+" } ] }") {
		t.Fatalf("config:\n%s", conf)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for name, opts := range map[string][]nats.Option{
		"service":    s.keys.ServiceOptions(),
		"sig-server": {nats.Nkey(sigPub, sigKP.Sign)},
	} {
		nc, err := nats.Connect(s.srv.ClientURL(), opts...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		js, _ := jetstream.New(nc)
		if _, err := js.AccountInfo(ctx); err != nil {
			t.Fatalf("%s: no JetStream in its account: %v", name, err)
		}
		nc.Close()
	}

	// Without the options neither account has JetStream.
	plain := newStack(t, stackOptions{})
	nc, err := nats.Connect(plain.srv.ClientURL(), plain.keys.ServiceOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.AccountInfo(ctx); !errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) && !errors.Is(err, jetstream.ErrJetStreamNotEnabled) {
		t.Fatalf("plain snippet: the auth account has JetStream (%v)", err)
	}
}

func TestNATSConfigRejectsBadSigServer(t *testing.T) {
	keys, _ := callout.GenerateKeys()
	acct, _ := nkeys.CreateAccount()
	apub, _ := acct.PublicKey()
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	for name, o := range map[string]callout.ConfigOptions{
		"account key":  {SigServerKey: apub},
		"garbage":      {SigServerKey: "U nope"},
		"same account": {SigServerKey: upub, SigAccount: "CHAT"},
		"bad account":  {SigServerKey: upub, SigAccount: "SIG }"},
	} {
		if _, err := callout.NATSConfig(keys, o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
