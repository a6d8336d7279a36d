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
	"github.com/kez-lat/kez-chat/sigchain/storetest"
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

// TestOrphanAgeByClock dates orphans with an injected clock: a
// collection whose cutoff is one second before the orphan was made keeps
// it, one at the moment after deletes it, and a chain with a handle made
// at the same time is kept.
func TestOrphanAgeByClock(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s, err := Open(filepath.Join(t.TempDir(), "s.db"), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	orphan := chain(t, 1)[0] // the eldest link names no handle
	named := handled(t)
	for _, l := range []*sigchain.Link{orphan, named} {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.CollectOrphans(ctx, now); n != 0 || err != nil {
		t.Fatalf("cutoff at the moment it was made: %d, %v", n, err)
	}
	if n, err := s.CollectOrphans(ctx, now.Add(time.Second)); n != 1 || err != nil {
		t.Fatalf("cutoff a second later: %d, %v", n, err)
	}
	if _, err := s.Head(ctx, orphan.Key()); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("orphan: %v", err)
	}
	if h, err := s.Head(ctx, named.Key()); err != nil || h.Seqno != 1 {
		t.Fatalf("the chain with a handle: %v %v", h, err)
	}
}

// handled returns an eldest link naming a handle, of another key than
// chain's.
func handled(t *testing.T) *sigchain.Link {
	id, err := kez.FromWords("zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo vote")
	if err != nil {
		t.Fatal(err)
	}
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "zoo@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestMigrationListsOrphans opens a file of schema version 1 (made by an
// earlier version) holding two orphan chains, a chain whose eldest link
// names a handle and one that named a handle in a later set_handle link:
// the migration lists only the orphans, dated at the migration, and an
// orphan that then names a handle leaves the list.
func TestMigrationListsOrphans(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schema + "PRAGMA user_version = 1;"); err != nil {
		t.Fatal(err)
	}
	orphan := storetest.Chain(t, storetest.Identity(t, 1), 1)
	setLater := storetest.Chain(t, storetest.Identity(t, 2), 2) // eldest without, then set_handle
	namesLater := storetest.Chain(t, storetest.Identity(t, 3), 2)
	var stored []*sigchain.Link
	stored = append(stored, orphan...)
	stored = append(stored, setLater...)
	stored = append(stored, handled(t), namesLater[0])
	for _, l := range stored {
		if _, err := db.Exec("INSERT INTO links (chain, seqno, id, link) VALUES (?, ?, ?, ?)", l.Key().String(), l.Seqno(), l.ID().String(), l.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	migrated := time.Now().Unix()
	s := open(t, path)
	got := map[string]bool{}
	rows, err := s.db.QueryContext(ctx, "SELECT chain, since FROM orphans")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var c string
		var since int64
		if err := rows.Scan(&c, &since); err != nil {
			t.Fatal(err)
		}
		if since < migrated-1 || since > time.Now().Unix()+1 {
			t.Errorf("orphan dated %d, want the migration's time %d", since, migrated)
		}
		got[c] = true
	}
	rows.Close()
	if len(got) != 2 || !got[orphan[0].Key().String()] || !got[namesLater[0].Key().String()] {
		t.Fatalf("orphans after the migration: %v, want the 2 chains that never named a handle", got)
	}
	if err := s.Append(ctx, namesLater[1]); err != nil {
		t.Fatal(err)
	}
	if n, err := s.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("collected %d, %v; want only the orphan that never named a handle", n, err)
	}
	if _, err := s.Head(ctx, namesLater[0].Key()); err != nil {
		t.Fatalf("the chain that named a handle after the migration: %v", err)
	}
}

// TestMigrationAddsPrekeys opens a file of schema version 2 (made by an
// earlier version) holding a chain: the migration adds the prekey table,
// the chain is kept, and its key can publish a prekey at once.
func TestMigrationAddsPrekeys(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schema + orphans + "PRAGMA user_version = 2;"); err != nil {
		t.Fatal(err)
	}
	id := storetest.Identity(t, 1)
	l := storetest.Chain(t, id, 1)[0]
	if _, err := db.Exec("INSERT INTO links (chain, seqno, id, link) VALUES (?, ?, ?, ?)", l.Key().String(), l.Seqno(), l.ID().String(), l.Bytes()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, path)
	var version int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil || version != 5 {
		t.Fatalf("schema version %d, %v; want 5", version, err)
	}
	if h, err := s.Head(ctx, id.PublicKey()); err != nil || h.Seqno != 1 {
		t.Fatalf("the chain after the migration: %v, %v", h, err)
	}
	p := storetest.Prekey(t, id, 1, time.Now(), time.Hour)
	if err := s.PutPrekey(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Prekey(ctx, id.PublicKey()); err != nil {
		t.Fatal(err)
	}
}

// TestMigrationAddsDevices opens a file of schema version 3 (made by an
// earlier version) holding a chain with a prekey: the migration adds the
// device index and the link requests, and the chain adds a device whose
// revocation deletes the device's prekey.
func TestMigrationAddsDevices(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schema + orphans + prekeys + "PRAGMA user_version = 3;"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	p := storetest.NewPerson(t, storetest.Identity(t, 1), "alice@kez.lat", now)
	l := p.Links[0]
	if _, err := db.Exec("INSERT INTO links (chain, seqno, id, link) VALUES (?, ?, ?, ?)", l.Key().String(), l.Seqno(), l.ID().String(), l.Bytes()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, path)
	dev := storetest.Identity(t, 2)
	if err := s.Append(ctx, p.AddDevice(t, dev, now)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutPrekey(ctx, storetest.Prekey(t, dev, 1, now, time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Append(ctx, p.RevokeDevice(t, dev.PublicKey(), now)); err != nil {
		t.Fatal(err)
	}
	if e, err := s.Device(ctx, dev.PublicKey()); err != nil || !e.Revoked || e.Person != p.ID.PublicKey() {
		t.Fatalf("%+v, %v", e, err)
	}
	if _, err := s.Prekey(ctx, dev.PublicKey()); !errors.Is(err, sigchain.ErrNoPrekey) {
		t.Fatalf("the revoked device's prekey: %v", err)
	}
	req := storetest.LinkRequest(t, storetest.Identity(t, 3), "phone", now)
	if created, err := s.PutLinkRequest(ctx, req, now, 10); !created || err != nil {
		t.Fatalf("%v, %v", created, err)
	}
}

// TestMigrationAddsGroups opens a file of schema version 4 (made by an
// earlier version) holding a chain: the migration keeps the chain and
// adds the empty group tables, which take a group's link and creator.
func TestMigrationAddsGroups(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schema + orphans + prekeys + devices + "PRAGMA user_version = 4;"); err != nil {
		t.Fatal(err)
	}
	l := chain(t, 1)[0]
	if _, err := db.Exec("INSERT INTO links (chain, seqno, id, link) VALUES (?, ?, ?, ?)", l.Key().String(), l.Seqno(), l.ID().String(), l.Bytes()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, path)
	if h, err := s.Head(ctx, l.Key()); err != nil || h.Seqno != 1 || h.ID != l.ID() {
		t.Fatalf("the chain after the migration: %v, %v", h, err)
	}
	err = s.WriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec("INSERT INTO group_links (grp, seqno, id, link) VALUES ('team@kez.lat', 1, 'b', x'7b7d')"); err != nil {
			return err
		}
		_, err := tx.Exec("INSERT INTO group_creators (grp, creator) VALUES ('team@kez.lat', ?)", l.Key().String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := s.ReadTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRow("SELECT COUNT(*) FROM group_links JOIN group_creators USING (grp)").Scan(&n)
	}); err != nil || n != 1 {
		t.Fatalf("%d group rows, %v", n, err)
	}
}
