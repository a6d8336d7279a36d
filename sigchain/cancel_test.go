package sigchain_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Cancelling the caller's ctx while the client waits for a sig-server that
// does not answer returns an error that is context.Canceled.
func TestFetchCancelledMidRequest(t *testing.T) {
	key := stacktest.Identity("alice").PublicKey()
	for _, call := range []struct {
		name string
		do   func(context.Context, *sigchain.Client) error
	}{
		{"Fetch", func(ctx context.Context, c *sigchain.Client) error { _, err := c.Fetch(ctx, key, 0); return err }},
		{"FetchVerified", func(ctx context.Context, c *sigchain.Client) error {
			_, err := c.FetchVerified(ctx, key, nil)
			return err
		}},
	} {
		t.Run(call.name, func(t *testing.T) {
			// A tarpit each: a connection dialled for a cancelled request
			// may be kept idle and reused, and would not be seen.
			tp := stacktest.StartTarpit(t)
			c := &sigchain.Client{BaseURL: "http://" + tp.Addr()}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { <-tp.Accepts(); cancel() }()
			if err := call.do(ctx, c); !errors.Is(err, context.Canceled) {
				t.Fatalf("%s cancelled mid-request: %v, want context.Canceled", call.name, err)
			}
		})
	}
}
