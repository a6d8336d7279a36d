package files_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/natsconn"
)

// serve starts p.Serve and returns the channel of its result once a
// fetch from p succeeded (so p is serving).
func serve(t *testing.T, owner, fetcher *peer, name string) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- owner.Serve(context.Background()) }()
	dst := filepath.Join(t.TempDir(), name)
	if _, err := fetcher.Fetch(context.Background(), owner.handle(), name, dst, files.WithWait(stacktest.Prompt, nil)); err != nil {
		t.Fatalf("fetch from a serving owner: %v", err)
	}
	return done
}

// Serve returns ErrClosed promptly when the sharing is closed or shut
// down; afterwards the owner is offline and every call says it is closed.
func TestServeReturnsErrClosed(t *testing.T) {
	for _, how := range []string{"Close", "Shutdown"} {
		t.Run(how, func(t *testing.T) {
			st := stacktest.Start(t, stacktest.Options{})
			alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
			ctx := context.Background()
			src := filepath.Join(t.TempDir(), "notes.txt")
			writeRandom(t, src, 1000, 1)
			if _, err := alice.Share(ctx, src); err != nil {
				t.Fatal(err)
			}
			served := serve(t, alice, bob, "notes.txt")
			var err error
			if how == "Close" {
				err = alice.Close()
			} else {
				err = alice.Shutdown(ctx)
			}
			if err != nil {
				t.Fatalf("%s: %v", how, err)
			}
			if err := stacktest.Returns(t, "Serve after "+how, served); !errors.Is(err, files.ErrClosed) {
				t.Errorf("Serve after %s: %v, want ErrClosed", how, err)
			}
			if err := alice.Serve(ctx); !errors.Is(err, files.ErrClosed) {
				t.Errorf("Serve on a closed sharing: %v", err)
			}
			if err := alice.StartServing(ctx); !errors.Is(err, files.ErrClosed) {
				t.Errorf("StartServing on a closed sharing: %v", err)
			}
			if _, err := alice.Share(ctx, src); !errors.Is(err, files.ErrClosed) {
				t.Errorf("Share on a closed sharing: %v", err)
			}
			if _, err := alice.Unshare(ctx, "notes.txt"); !errors.Is(err, files.ErrClosed) {
				t.Errorf("Unshare on a closed sharing: %v", err)
			}
			if _, err := alice.Fetch(ctx, bob.handle(), "x", t.TempDir()); !errors.Is(err, files.ErrClosed) {
				t.Errorf("Fetch on a closed sharing: %v", err)
			}
			_, err = bob.Fetch(ctx, alice.handle(), "notes.txt", filepath.Join(t.TempDir(), "again"))
			if !errors.Is(err, files.ErrOwnerOffline) {
				t.Errorf("fetch from the closed owner: %v, want ErrOwnerOffline", err)
			}
		})
	}
}

// Shutdown lets a transfer under way finish: the owner shuts down as the
// fetcher starts receiving, the fetch completes, then Serve returns
// ErrClosed.
func TestShutdownFinishesTransfer(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
	ctx := context.Background()
	const size = 16 << 20
	src := filepath.Join(t.TempDir(), "big.bin")
	writeRandom(t, src, size, 3)
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	served := serve(t, alice, bob, "big.bin")

	shut := make(chan error, 1)
	var once sync.Once
	dst := filepath.Join(t.TempDir(), "big.bin")
	// The first progress call comes once alice's node accepted the request.
	_, err := bob.Fetch(ctx, alice.handle(), "big.bin", dst, files.WithProgress(func(int64, int64) {
		once.Do(func() { go func() { shut <- alice.Shutdown(ctx) }() })
	}))
	if err != nil {
		t.Fatalf("a fetch under way while the owner shut down: %v", err)
	}
	sameFile(t, src, dst)
	if err := stacktest.Returns(t, "Shutdown", shut); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := stacktest.Returns(t, "Serve after Shutdown", served); !errors.Is(err, files.ErrClosed) {
		t.Errorf("Serve after Shutdown: %v, want ErrClosed", err)
	}
}

// Shutdown honours its ctx: with a fetch waiting for an offline owner, it
// gives up when ctx ends and closes, and the fetch returns promptly with
// ErrClosed, even on a NATS connection the sharing does not own.
func TestShutdownHonoursItsContext(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	bob := newPeer(t, st, "bob")
	au := st.NewUser(t, "alice")
	ctx := context.Background()
	nc, err := natsconn.Connect(ctx, st.NATSURL, au.Identity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	alice, err := files.Open(ctx, files.Config{
		Client: client.Config{Identity: au.Identity, Home: au.Home, SigServerURL: st.SigServerURL, Resolver: st.Resolver()},
		NATS:   nc, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, MaxWaitInterval: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Close() })

	src := filepath.Join(t.TempDir(), "later.txt")
	writeRandom(t, src, 1000, 4)
	if _, err := bob.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	var once sync.Once
	fetched := make(chan error, 1)
	go func() {
		_, err := alice.Fetch(ctx, bob.handle(), "later.txt", t.TempDir(),
			files.WithWait(0, func(int) { once.Do(func() { close(waiting) }) }))
		fetched <- err
	}()
	select {
	case <-waiting:
	case <-time.After(stacktest.Prompt):
		t.Fatal("the fetch never waited for bob")
	}

	sctx, cancel := context.WithCancel(ctx)
	shut := make(chan error, 1)
	go func() { shut <- alice.Shutdown(sctx) }()
	cancel()
	if err := stacktest.Returns(t, "Shutdown with an ended ctx", shut); !errors.Is(err, context.Canceled) {
		t.Errorf("Shutdown: %v, want context.Canceled", err)
	}
	if err := stacktest.Returns(t, "the waiting fetch", fetched); !errors.Is(err, files.ErrClosed) {
		t.Errorf("the waiting fetch: %v, want ErrClosed", err)
	}
	if !nc.IsConnected() {
		t.Error("Shutdown closed a NATS connection the sharing does not own")
	}
}
