package handles

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

func openTestStore(t testing.TB) (*SQLiteStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "handles.db")
	s, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, path
}

func rec(name string, key kez.PublicKey) Record {
	return Record{Handle: Handle{Name: name, Domain: "kez.lat"}, Key: key, EncryptionKey: []byte{1, 2, 3}, UpdatedAt: time.Unix(1_800_000_000, 0)}
}

func TestSQLiteStore(t *testing.T) {
	ctx := context.Background()
	s, path := openTestStore(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	alice, bob := newIdentity(t).PublicKey(), newIdentity(t).PublicKey()

	created, err := s.Claim(ctx, rec("alice", alice))
	if err != nil || !created {
		t.Fatalf("first claim: %v %v", created, err)
	}
	// Replay by the same key: harmless, refreshes the encryption key.
	r2 := rec("alice", alice)
	r2.EncryptionKey, r2.Generation = []byte{9}, 1
	if created, err := s.Claim(ctx, r2); err != nil || created {
		t.Fatalf("replay: %v %v", created, err)
	}
	got, err := s.Lookup(ctx, Handle{"alice", "kez.lat"})
	if err != nil || got.Key != alice || string(got.EncryptionKey) != "\x09" || got.Generation != 1 || got.ClaimedAt.Unix() != 1_800_000_000 {
		t.Fatalf("lookup: %+v %v", got, err)
	}

	for _, tc := range []struct {
		r    Record
		want error
	}{
		{rec("alice", bob), ErrTaken},
		{rec("al.ice", bob), ErrTaken}, // same skeleton
		{rec("a-l_ice", bob), ErrTaken},
		{rec("alicia", alice), ErrKeyHasHandle},
		{rec("al.ice", alice), ErrKeyHasHandle},
	} {
		if _, err := s.Claim(ctx, tc.r); !errors.Is(err, tc.want) {
			t.Errorf("claim %s by %s: %v, want %v", tc.r.Handle, tc.r.Key.String()[:8], err, tc.want)
		}
	}
	// The same name at another domain is another name.
	other := rec("alice", bob)
	other.Handle.Domain = "other.example"
	if created, err := s.Claim(ctx, other); err != nil || !created {
		t.Fatalf("alice at another domain: %v %v", created, err)
	}
	if r, err := s.LookupKey(ctx, bob); err != nil || r.Handle != other.Handle {
		t.Fatalf("LookupKey: %+v %v", r, err)
	}
	if _, err := s.LookupKey(ctx, newIdentity(t).PublicKey()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LookupKey unknown: %v", err)
	}
	if _, err := s.Lookup(ctx, Handle{"nobody1", "kez.lat"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup unknown: %v", err)
	}

	// Suspension shows in LookupKey and refuses renewals.
	if err := s.SetSuspended(ctx, Handle{"alice", "kez.lat"}, true); err != nil {
		t.Fatal(err)
	}
	if r, err := s.LookupKey(ctx, alice); err != nil || !r.Suspended {
		t.Fatalf("suspended: %+v %v", r, err)
	}
	if _, err := s.Claim(ctx, rec("alice", alice)); !errors.Is(err, ErrSuspended) {
		t.Fatalf("claim while suspended: %v", err)
	}
	if err := s.SetSuspended(ctx, Handle{"zed", "kez.lat"}, true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("suspend unknown: %v", err)
	}

	// The file keeps everything across a reopen.
	s.Close()
	s2, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if r, err := s2.Lookup(ctx, Handle{"alice", "kez.lat"}); err != nil || r.Key != alice || !r.Suspended {
		t.Fatalf("after reopen: %+v %v", r, err)
	}
	// Release frees the name and the key.
	if err := s2.Release(ctx, Handle{"alice", "kez.lat"}); err != nil {
		t.Fatal(err)
	}
	if err := s2.Release(ctx, Handle{"alice", "kez.lat"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second release: %v", err)
	}
	if created, err := s2.Claim(ctx, rec("al.ice", alice)); err != nil || !created {
		t.Fatalf("claim after release: %v %v", created, err)
	}
}

func TestSQLiteConcurrentClaims(t *testing.T) {
	ctx := context.Background()
	s, path := openTestStore(t)
	// A second handle on the file: two connection pools, as two processes.
	s2, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })

	const n = 16
	keys := make([]kez.PublicKey, n)
	for i := range keys {
		keys[i] = newIdentity(t).PublicKey()
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners int
		taken   int
		start   = make(chan struct{})
	)
	for i := range n {
		store := s
		if i%2 == 1 {
			store = s2
		}
		wg.Go(func() {
			<-start
			created, err := store.Claim(ctx, rec("popular", keys[i]))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && created:
				winners++
			case errors.Is(err, ErrTaken):
				taken++
			default:
				t.Errorf("claim %d: %v %v", i, created, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if winners != 1 || taken != n-1 {
		t.Fatalf("%d winners, %d taken; want 1 and %d", winners, taken, n-1)
	}
}

func TestOpenSQLiteRefusesNewerSchema(t *testing.T) {
	s, path := openTestStore(t)
	if _, err := s.db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := OpenSQLite(path); err == nil {
		t.Fatal("opened a file with a newer schema")
	}
}
