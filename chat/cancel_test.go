package chat

import (
	"context"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// Cancelling the caller's ctx in the middle of a send returns an error
// that is context.Canceled: while the contact's handle is checked at a
// server that does not answer, and while the send waits for the stream's
// acknowledgement and the recipient's receipt.
func TestSendCancelledMidway(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	st.NewUser(t, "bob")
	first := openClient(t, st, au)
	mustAdd(t, first, "bob")
	home := first.cfg.Client.Home
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}

	t.Run("checking the contact", func(t *testing.T) {
		tp := stacktest.StartTarpit(t)
		alice := openClientIn(t, st, au, home, func(c *Config) {
			c.Client.ServerURL = "http://" + tp.Addr() // hangs whoever asks it
			c.RefreshInterval = -1                     // the contact is checked on every send
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go func() { <-tp.Accepts(); cancel() }()
		if _, err := alice.Send(ctx, "bob", "hello"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Send cancelled while checking the contact: %v, want context.Canceled", err)
		}
		if err := alice.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("waiting for the receipt", func(t *testing.T) {
		alice := openClientIn(t, st, au, home)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Bob is offline: no receipt comes until the ctx ends.
		p, err := alice.SendAsync(ctx, "bob", "are you there?", WaitReceipt())
		if err != nil {
			t.Fatal(err)
		}
		go func() { <-p.Done(); cancel() }()
		if _, err := p.Wait(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Send cancelled while waiting: %v, want context.Canceled", err)
		}
	})
}
