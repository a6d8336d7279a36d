package chatserver_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// An operator's chat-server for kez.lat: a struct literal and Start. The
// registry answers at once; logins through NATS work once the operator's
// NATS runs with the printed nats.conf snippet (nothing listens at
// NATSURL in this example, so the server says it is not ready).
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "chatserver-example")
	defer os.RemoveAll(dir)

	// The sig-server (the operator runs kez-sig-server; here in-process).
	chains, _ := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	defer chains.Close()
	sig := httptest.NewServer(sigchain.NewHandler(chains))
	defer sig.Close()

	srv := &chatserver.Server{
		Domain:       "kez.lat",
		SigServerURL: sig.URL,
		NATSURL:      "nats://127.0.0.1:1",
		DBPath:       filepath.Join(dir, "chat.db"),
		KeysDir:      filepath.Join(dir, "keys"),
		Logger:       slog.New(slog.DiscardHandler),
	}
	if err := srv.Start(ctx); err != nil {
		panic(err)
	}
	defer srv.Close()
	web := httptest.NewServer(srv.Handler())
	defer web.Close()

	// What the operator adds to nats.conf.
	conf, _ := chatserver.NATSConfig(srv.KeysDir, callout.ConfigOptions{})
	fmt.Println(strings.Contains(conf, "auth_callout"), strings.Contains(conf, srv.Keys().IssuerPublicKey()))

	// A client learns the domain, appends its eldest link and claims.
	info, _ := (&handles.Client{BaseURL: web.URL}).Info(ctx)
	alice, _ := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	h := handles.Handle{Name: "alice", Domain: info.Domain}
	reg, err := handles.Register(ctx, alice, h, handles.RegisterOptions{ServerURL: web.URL, SigServerURL: info.SigServer})
	if err != nil {
		panic(err)
	}
	fmt.Println(reg.Record.Handle, reg.Created)

	// The callout's directory now admits alice's key.
	e, _ := chatserver.RegistryDirectory{Store: srv.Store()}.Lookup(ctx, alice.PublicKey())
	fmt.Println(e.Handle)

	fmt.Println(srv.Ready(ctx) != nil)
	// Output:
	// true true
	// alice@kez.lat true
	// alice@kez.lat
	// true
}
