package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

func chain(t *testing.T, n int) []*sigchain.Link {
	id, err := kez.FromWords("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art")
	if err != nil {
		t.Fatal(err)
	}
	var st *sigchain.State
	var out []*sigchain.Link
	typ, body := sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "")
	for i := range n {
		l, err := sigchain.NewLink(id, st, typ, body, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if st, err = st.Extend([]*sigchain.Link{l}); err != nil {
			t.Fatal(err)
		}
		out = append(out, l)
		typ, body = sigchain.TypeSetHandle, sigchain.SetHandleBody(fmt.Sprintf("h%d@kez.lat", i))
	}
	return out
}

func open(t *testing.T, path string) *Store {
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestAppendHeadLinks(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "s.db"))
	links := chain(t, 5)
	key := links[0].Key()
	if _, err := s.Head(ctx, key); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("empty head: %v", err)
	}
	if _, _, err := s.Links(ctx, key, 0, 10); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("empty links: %v", err)
	}
	var ce *sigchain.ConflictError
	if err := s.Append(ctx, links[1]); !errors.As(err, &ce) || ce.Head.Seqno != 0 {
		t.Fatalf("seqno 2 on an empty chain: %v", err)
	}
	for _, l := range links {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []*sigchain.Link{links[0], links[3], links[4]} {
		if err := s.Append(ctx, l); !errors.As(err, &ce) || ce.Head.Seqno != 5 || ce.Head.ID != links[4].ID() {
			t.Fatalf("re-append %d: %v", l.Seqno(), err)
		}
	}
	h, err := s.Head(ctx, key)
	if err != nil || h.Seqno != 5 || h.ID != links[4].ID() {
		t.Fatalf("head %v %v", h, err)
	}
	got, h, err := s.Links(ctx, key, 1, 2)
	if err != nil || len(got) != 2 || h.Seqno != 5 || string(got[0]) != string(links[1].Bytes()) || string(got[1]) != string(links[2].Bytes()) {
		t.Fatalf("links since 1 limit 2: %d %v %v", len(got), h, err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestTwoStoresOneFile races appends through two Store values on one file,
// as two processes would: SQLite's lock, not the Go mutex, decides.
func TestTwoStoresOneFile(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	a, b := open(t, path), open(t, path)
	links := chain(t, 2)
	if err := a.Append(ctx, links[0]); err != nil {
		t.Fatal(err)
	}
	// 40 racers, all appending the same seqno-2 link: one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			err := s.Append(ctx, links[1])
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, sigchain.ErrConflict):
				conflicts++
			default:
				t.Errorf("append: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != 39 {
		t.Fatalf("%d wins, %d conflicts", wins, conflicts)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s := open(t, path)
	s.Close()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(path); err == nil || !strings.Contains(err.Error(), "newer") {
		t.Fatalf("got %v", err)
	}
}
