package sqlitestore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	gtest "github.com/kez-lat/kez-chat/group/storetest"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
)

// TestGroupContract runs the group store contract (package
// group/storetest) against the SQLite store; the second handle is a
// second Store on the file, as a second process would have.
func TestGroupContract(t *testing.T) {
	gtest.Run(t, func(t *testing.T) (gtest.Stores, func() gtest.Stores) {
		path := filepath.Join(t.TempDir(), "sig.db")
		open := func() gtest.Stores {
			s := open(t, path)
			return gtest.Stores{Groups: s.Groups(), Chains: s}
		}
		return open(), open
	})
}

// TestMigrationAddsGroups opens a file of schema version 4 (made by an
// earlier version) holding a chain: the migration keeps it and adds the
// group tables, and the chain's person creates a group through the
// handler.
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
	now := time.Now()
	alice := storetest.Identity(t, 1)
	p := storetest.NewPerson(t, alice, "alice@kez.lat", now)
	l := p.Links[0]
	if _, err := db.Exec("INSERT INTO links (chain, seqno, id, link) VALUES (?, ?, ?, ?)", l.Key().String(), l.Seqno(), l.ID().String(), l.Bytes()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s := open(t, path)
	if h, err := s.Head(ctx, alice.PublicKey()); err != nil || h.Seqno != 1 || h.ID != l.ID() {
		t.Fatalf("the chain after the migration: %v, %v", h, err)
	}
	var v int
	if err := s.db.QueryRow("PRAGMA user_version").Scan(&v); err != nil || v != 5 {
		t.Fatalf("schema version %d, %v", v, err)
	}
	srv := gtest.StartServer(t, gtest.Stores{Groups: s.Groups(), Chains: s})
	b := gtest.NewGroup(t, alice, "team@kez.lat", "alice@kez.lat", now)
	if err := srv.Client.Append(ctx, b.Links[0]); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Groups().CreatedBy(ctx, alice.PublicKey()); err != nil || n != 1 {
		t.Fatalf("created %d, %v", n, err)
	}
	if _, err := s.Groups().Head(ctx, "other@kez.lat"); err != group.ErrNotFound {
		t.Fatalf("an unknown group: %v", err)
	}
}
