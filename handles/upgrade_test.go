package handles_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
)

// TestSQLiteUpgradeKeepsLookAlikesOut opens a registry file written under
// skeleton rule 1: the handles registered then block their look-alikes
// under the current rule, and names that rule 1 let in side by side
// (mallory and rnallory) both keep working.
func TestSQLiteUpgradeKeepsLookAlikesOut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handles.db")
	storetest.WriteRule1SQLite(t, path, storetest.Legacy())
	// Positive control: rule 1 let a look-alike of a taken name in.
	storetest.WriteRule1SQLite(t, filepath.Join(t.TempDir(), "control.db"), []handles.Record{
		storetest.Rec("alice", storetest.Key(1)), storetest.Rec("a1ice", storetest.Key(2)),
	})

	s, err := handles.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	storetest.RunUpgraded(t, s)

	// Opening again changes nothing; a second pool sees the same.
	s2, err := handles.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	if r, err := s2.Lookup(context.Background(), handles.Handle{Name: "alice", Domain: "kez.lat"}); err != nil || r.Key != storetest.Key(2) {
		t.Fatalf("alice after reopening: %+v %v", r, err)
	}
	if _, err := s2.Claim(context.Background(), storetest.Rec("ai1ce", storetest.Key(60))); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("a look-alike after reopening: %v", err)
	}
}

// TestSQLiteNewerSkeletonRule: a file whose skeletons a newer rule
// computed is refused rather than used with the older rule.
func TestSQLiteNewerSkeletonRule(t *testing.T) {
	path := filepath.Join(t.TempDir(), "handles.db")
	s, err := handles.OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sqlitedb.Open(path, sqlitedb.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE skeleton_rule SET version = ?`, handles.SkeletonVersion+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if s, err := handles.OpenSQLite(path); !errors.Is(err, handles.ErrNewerSkeletonRule) {
		if s != nil {
			s.Close()
		}
		t.Fatalf("OpenSQLite of a newer rule's file: %v", err)
	}
}
