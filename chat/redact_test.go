package chat_test

import (
	"context"
	"testing"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/redacttest"
	"github.com/kez-lat/kez-chat/kez"
)

// A client, its configuration and an Opener hold the user's private keys
// and never print them.
func TestSecretsDoNotPrint(t *testing.T) {
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	secrets := redacttest.Identity(id)
	cfg := chat.Config{Client: client.Config{Identity: id, Home: t.TempDir()}}
	c, err := chat.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o, err := chat.NewOpener(id, &chat.OpenOptions{Generations: []uint32{0, 1}})
	if err != nil {
		t.Fatal(err)
	}
	redacttest.Check(t, c, secrets...)
	redacttest.Check(t, o, secrets...)
	redacttest.Check(t, cfg, secrets...)
	if s, want := c.String(), "chat.Client("+id.PublicKey().String()+")"; s != want {
		t.Errorf("String() = %q, want %q", s, want)
	}
}
