package stacktest

// Fault injection for tests of clients that must notice a dishonest or
// changed server: a handle that moves to another key, and a sig-server that
// rewrites a chain. Both act on the stack's own SQLite files, as the
// operator (or an attacker holding the server) could.

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// dir is the stack's state folder.
func (s *Stack) dir() string { return s.dev.Dir }

// ReleaseHandle frees name in the chat-server's registry, as the operator's
// Release does, so that another key may claim it (with a chain that claims
// it). Any failure fails the test.
func (s *Stack) ReleaseHandle(t testing.TB, name string) {
	t.Helper()
	h, err := handles.Rules{DefaultDomain: s.Domain, AllowLocal: s.allowLocal}.Parse(name)
	if err != nil {
		t.Fatalf("stacktest: %v", err)
	}
	reg, err := handles.OpenSQLite(filepath.Join(s.dir(), devstack.ChatDB))
	if err != nil {
		t.Fatalf("stacktest: opening the registry: %v", err)
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := reg.Release(ctx, h); err != nil {
		t.Fatalf("stacktest: releasing %s: %v", h, err)
	}
}

// MoveHandle makes u's handle name another key, Identity(by)'s, as a
// handle released by the operator and claimed again would: contacts that
// pinned u's key see a key change. Any failure fails the test.
func (s *Stack) MoveHandle(t testing.TB, u *User, by string) {
	t.Helper()
	s.ReleaseHandle(t, u.Handle.String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := handles.Register(ctx, Identity(by), u.Handle, handles.RegisterOptions{ServerURL: s.ServerURL, SigServerURL: s.SigServerURL}); err != nil {
		t.Fatalf("stacktest: registering %s to %s: %v", u.Handle, by, err)
	}
}

// RewriteChain makes the sig-server show links as key's whole chain from
// now on, replacing what it stored, without verifying them: a sig-server
// that rewrites history (a fork, or a rollback when links is shorter).
// Any failure fails the test.
func (s *Stack) RewriteChain(t testing.TB, key kez.PublicKey, links []*sigchain.Link) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(s.dir(), devstack.SigDB)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatalf("stacktest: opening the sig-server's store: %v", err)
	}
	defer db.Close()
	tx, err := db.Begin()
	if err != nil {
		t.Fatalf("stacktest: %v", err)
	}
	defer tx.Rollback()
	// The layout of sigchain/sqlitestore (schema version 1).
	if _, err := tx.Exec(`DELETE FROM links WHERE chain = ?`, key.String()); err != nil {
		t.Fatalf("stacktest: rewriting the chain of %s: %v", key, err)
	}
	for _, l := range links {
		if _, err := tx.Exec(`INSERT INTO links (chain, seqno, id, link) VALUES (?, ?, ?, ?)`, key.String(), int64(l.Seqno()), l.ID().String(), l.Bytes()); err != nil {
			t.Fatalf("stacktest: rewriting the chain of %s: %v", key, err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("stacktest: rewriting the chain of %s: %v", key, err)
	}
}
