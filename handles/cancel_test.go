package handles_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// Cancelling the caller's ctx while a resolution waits for a server that
// does not answer returns an error that is context.Canceled (and
// ErrUnreachable), whichever server it waited for.
func TestResolveCancelledMidRequest(t *testing.T) {
	// A tarpit each: a connection dialled for a cancelled request may be
	// kept idle and reused, and would not be seen as a new one.
	tp1, tp2 := stacktest.StartTarpit(t), stacktest.StartTarpit(t)
	for _, c := range []struct {
		name   string
		tp     *stacktest.Tarpit
		r      *handles.Resolver
		handle string
	}{
		{"home server", tp1, &handles.Resolver{DefaultDomain: "kez.test", HomeServer: "http://" + tp1.Addr()}, "bob"},
		{"WebFinger", tp2, &handles.Resolver{DefaultDomain: "kez.test", BaseURLs: map[string]string{"remote.test": "http://" + tp2.Addr()}}, "bob@remote.test"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tp := c.tp
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() { <-tp.Accepts(); cancel() }()
			_, err := c.r.Resolve(ctx, c.handle)
			if !errors.Is(err, context.Canceled) || !errors.Is(err, handles.ErrUnreachable) {
				t.Fatalf("Resolve cancelled mid-request: %v, want context.Canceled and ErrUnreachable", err)
			}
		})
	}
}
