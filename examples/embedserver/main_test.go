package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
)

// The example's server, on a real NATS that holds the snippet for its
// keys: users register on its one port (sigchain API and handle claim),
// WebFinger finds them, and they log in to NATS through its callout and
// exchange a message through the inbox stream it provisioned.
func TestEmbedServer(t *testing.T) {
	dir := t.TempDir()
	conf, err := chatserver.NATSConfig(filepath.Join(dir, "keys"), callout.ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.Run(t, conf)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srvCtx, stop := context.WithCancel(ctx)
	readyURL := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(srvCtx, config{
			Listen: "127.0.0.1:0", Domain: "kez.test", NATSURL: ns.ClientURL(), Dir: dir,
			Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}, func(u string) { readyURL <- u })
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	var base string
	select {
	case base = <-readyURL:
	case err := <-done:
		t.Fatalf("run returned before it was ready: %v", err)
	case <-ctx.Done():
		t.Fatal("the server did not get ready")
	}

	if body := get(t, base+"/"); !strings.Contains(body, "hosts the KEZ domain kez.test") {
		t.Errorf("the program's own page: %q", body)
	}
	if body := get(t, base+"/readyz"); !strings.Contains(body, "ready") {
		t.Errorf("/readyz: %q", body)
	}

	alice := register(ctx, t, base, "alice")
	bob := register(ctx, t, base, "bob")

	jrd, err := (&handles.Client{BaseURL: base}).WebFinger(ctx, handles.Handle{Name: "bob", Domain: "kez.test"})
	if err != nil {
		t.Fatalf("WebFinger: %v", err)
	}
	if jrd.Subject != "acct:bob@kez.test" {
		t.Errorf("WebFinger subject %q", jrd.Subject)
	}

	open := func(id *kez.Identity) *chat.Client {
		c, err := chat.Open(ctx, chat.Config{Client: client.Config{
			Identity: id, Home: t.TempDir(), NATSURL: ns.ClientURL(), ServerURL: base,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}})
		if err != nil {
			t.Fatalf("chat.Open: %v", err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	ac, bc := open(alice), open(bob)
	if _, err := ac.AddContact(ctx, "bob"); err != nil {
		t.Fatalf("alice adds bob: %v", err)
	}
	if _, err := ac.Send(ctx, "bob", "hello from an embedded server"); err != nil {
		t.Fatalf("alice sends: %v", err)
	}
	if _, err := bc.Sync(ctx); err != nil {
		t.Fatalf("bob syncs: %v", err)
	}
	reqs, err := bc.Requests(ctx) // alice is not bob's contact
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 || reqs[0].Text() != "hello from an embedded server" || reqs[0].From != alice.PublicKey() {
		t.Fatalf("bob's requests: %+v", reqs)
	}
}

// register does what "kez register NAME" does, with handles.Register: the
// eldest sigchain link, then the handle claim, both on the one server.
func register(ctx context.Context, t *testing.T, base, name string) *kez.Identity {
	t.Helper()
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	h := handles.Handle{Name: name, Domain: "kez.test"}
	if _, err := handles.Register(ctx, id, h, handles.RegisterOptions{ServerURL: base, SigServerURL: base}); err != nil {
		t.Fatalf("registering %s: %v", h, err)
	}
	return id
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
