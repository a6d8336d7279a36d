package chatserver_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// docs/operators.md §2: an administrator added to the CHAT account and to
// auth_users bypasses the callout and reaches the inbox stream, while
// KEZ logins still go through the callout.
func TestOperatorsGuideAdminUser(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys")
	conf, err := chatserver.NATSConfig(keys, callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := callout.LoadOrCreateKeys(keys)
	svc := k.ServicePublicKey()
	edited := strings.Replace(conf, "  CHAT {\n    jetstream: enabled\n", "  CHAT {\n    jetstream: enabled\n    users: [ { user: admin, password: \"s3cret\" } ]\n", 1)
	edited = strings.Replace(edited, "auth_users: [ "+svc+" ]", "auth_users: [ "+svc+", admin ]", 1)
	if edited == conf || strings.Count(edited, "admin") != 2 {
		t.Fatal("the snippet's shape changed; update docs/operators.md and this test")
	}
	ns := natstest.Run(t, edited)
	s := newServer(t, sigServer(t).URL, ns.ClientURL(), keys)
	start(t, s)
	waitReady(t, s)

	nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo("admin", "s3cret"), nats.NoReconnect())
	if err != nil {
		t.Fatalf("admin login: %v", err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	if _, err := js.Stream(context.Background(), callout.DefaultStream); err != nil {
		t.Fatalf("admin cannot see the inbox stream: %v", err)
	}
	if _, err := nats.Connect(ns.ClientURL(), nats.UserInfo("admin", "wrong"), nats.NoReconnect()); err == nil {
		t.Fatal("a wrong admin password was accepted")
	}
}
