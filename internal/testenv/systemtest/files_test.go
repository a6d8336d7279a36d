package systemtest

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kezclient "github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
)

// openSharing opens u's file sharing in home, on loopback.
func (s *system) openSharing(t testing.TB, u *user, home string, logs *logBuffer) *files.Sharing {
	t.Helper()
	sh, err := files.Open(testCtx(t, 30*time.Second), files.Config{
		Client: kezclient.Config{
			Identity:     u.id,
			Home:         home,
			NATSURL:      s.natsURL,
			SigServerURL: s.sigURL,
			ServerURL:    s.chatURL,
			Domain:       domain,
			Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		},
		ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
	})
	if err != nil {
		t.Fatalf("%s's file sharing: %v", u.name, err)
	}
	return sh
}

// TestPeerDisappearsMidTransfer: bob fetches alice's 16 MiB file; a third
// of the way in, alice's client goes away (its libp2p node closes under
// the running transfer). Bob's fetch fails and keeps what it verified;
// his next fetch waits for alice, and once she is back it resumes from
// the last verified chunk: alice serves only the rest, and the file bob
// ends up with is hers, byte for byte.
func TestPeerDisappearsMidTransfer(t *testing.T) {
	t.Parallel() // mostly waiting on other processes
	sys := startSystem(t, sysOptions{})
	au, bu := sys.register(t, "alice"), sys.register(t, "bob")
	logs := &logBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("file sharing log (tail):\n%s", logs.tail(6000))
		}
	})
	aliceHome, bobHome := filepath.Join(t.TempDir(), "alice"), filepath.Join(t.TempDir(), "bob")

	const size = 16 << 20
	data := make([]byte, size)
	rand.Read(data)
	src := filepath.Join(t.TempDir(), "film.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	alice := sys.openSharing(t, au, aliceHome, logs)
	if _, err := alice.Share(testCtx(t, 30*time.Second), src); err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	bob := sys.openSharing(t, bu, bobHome, logs)
	t.Cleanup(func() { bob.Close() })
	out := filepath.Join(t.TempDir(), "film.bin")

	// First attempt: alice vanishes a third of the way in.
	var (
		lastVerified atomic.Int64
		gone         = make(chan struct{})
		vanish       sync.Once
	)
	go func() {
		<-gone
		alice.Close()
	}()
	_, err := bob.Fetch(testCtx(t, 60*time.Second), "alice@"+domain, "film.bin", out, files.WithProgress(func(verified, total int64) {
		lastVerified.Store(verified)
		if verified >= total/3 {
			vanish.Do(func() { close(gone) })
		}
		time.Sleep(2 * time.Millisecond) // a slow link, so alice's exit lands mid-transfer
	}))
	if err == nil {
		t.Fatal("the fetch completed although alice went away")
	}
	firstErr := err
	cut := lastVerified.Load()
	partial, perr := os.Stat(out + files.PartialSuffix)
	if perr != nil || partial.Size() < cut {
		t.Fatalf("after the interruption: partial file %v (%v), %d bytes verified", partial, perr, cut)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("the destination exists before the file is complete: %v", err)
	}

	// Second attempt: bob waits; alice comes back; the fetch resumes.
	waiting := make(chan struct{})
	var waitOnce sync.Once
	var firstProgress atomic.Int64
	firstProgress.Store(-1)
	done := make(chan error, 1)
	go func() {
		_, err := bob.Fetch(testCtx(t, 90*time.Second), "alice@"+domain, "film.bin", out,
			files.WithWait(60*time.Second, func(int) { waitOnce.Do(func() { close(waiting) }) }),
			files.WithProgress(func(verified, total int64) {
				firstProgress.CompareAndSwap(-1, verified)
			}))
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("the second fetch ended before alice was back: %v", err)
	}
	alice2 := sys.openSharing(t, au, aliceHome, logs)
	t.Cleanup(func() { alice2.Close() })
	if err := alice2.StartServing(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the resumed fetch: %v", err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("the fetched file differs: sha256 %x, want %x", sha256.Sum256(got), sha256.Sum256(data))
	}
	served := alice2.Stats().BytesServed
	t.Logf("peer gone mid-transfer: %d of %d bytes verified before alice vanished (fetch error: %v); the resumed fetch started at %d verified bytes, alice served %d bytes after her return (%.0f%% of the file)",
		cut, size, firstErr, firstProgress.Load(), served, 100*float64(served)/size)
	if served >= size || served > size-cut+format.ChunkSize {
		t.Fatalf("alice served %d bytes after her return: the fetch did not resume from the %d verified bytes", served, cut)
	}
}
