package files_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// Cancelling the caller's ctx in the middle of a fetch returns an error
// that is context.Canceled: while the owner's handle is resolved at a
// server that does not answer, while the fetch waits for the owner to
// come online, and while the file is transferred (what was verified is
// kept).
func TestFetchCancelledMidway(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
	ctx := context.Background()
	const size = 8 << 20
	src := filepath.Join(t.TempDir(), "data.bin")
	writeRandom(t, src, size, 5)
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	fetch := func(t *testing.T, s *files.Sharing, cancelled func(context.CancelFunc), opts ...files.FetchOption) string {
		t.Helper()
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		cancelled(cancel)
		dst := filepath.Join(t.TempDir(), "data.bin")
		if _, err := s.Fetch(cctx, alice.handle(), "data.bin", dst, opts...); !errors.Is(err, context.Canceled) {
			t.Fatalf("Fetch cancelled midway: %v, want context.Canceled", err)
		}
		mustNotExist(t, dst)
		return dst
	}

	t.Run("resolving the owner", func(t *testing.T) {
		tp := stacktest.StartTarpit(t)
		s, err := files.Open(ctx, files.Config{Client: client.Config{
			Identity: bob.user.Identity, Home: t.TempDir(), NATSURL: st.NATSURL, Domain: st.Domain, SigServerURL: st.SigServerURL,
			Resolver: &handles.Resolver{DefaultDomain: st.Domain, HomeServer: "http://" + tp.Addr()},
			Logger:   slog.New(slog.DiscardHandler),
		}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		fetch(t, s, func(cancel context.CancelFunc) {
			go func() { <-tp.Accepts(); cancel() }()
		})
	})

	t.Run("waiting for the owner", func(t *testing.T) {
		var once sync.Once
		var cancel context.CancelFunc
		fetch(t, bob.Sharing, func(c context.CancelFunc) { cancel = c },
			files.WithWait(0, func(int) { once.Do(cancel) }))
	})

	t.Run("transferring", func(t *testing.T) {
		if err := alice.StartServing(ctx); err != nil {
			t.Fatal(err)
		}
		var cancel context.CancelFunc
		var cut int64
		dst := fetch(t, bob.Sharing, func(c context.CancelFunc) { cancel = c }, files.WithProgress(func(verified, _ int64) {
			if verified > 0 && cut == 0 {
				cut = verified
				cancel()
			}
		}))
		if st, err := os.Stat(dst + files.PartialSuffix); err != nil || st.Size() < cut {
			t.Errorf("the partial file after the cut: %v, want at least %d bytes", err, cut)
		}
	})
}
