package logserver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/translog"
)

// TestIndexAheadOfLog: a log folder whose tessera files were restored from
// an older copy while index.db was not (or lost its last writes) has index
// rows for leaves the log no longer holds. Open drops them, so the leaves
// appended next are found at their own indexes: their proofs verify and a
// chain is not appended again on every request for want of its row.
func TestIndexAheadOfLog(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	logDir, backup := filepath.Join(dir, "log"), filepath.Join(dir, "backup")
	l, _ := openTest(t, dir)
	if _, err := l.Append(ctx, entry(t, 1, 1, "a1")); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", logDir, backup).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	l, _ = openTest(t, dir)
	if _, err := l.AppendAll(ctx, []translog.Entry{entry(t, 1, 2, "a2"), entry(t, 1, 3, "a3")}); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Restore the tessera files of size 1, keep index.db (rows 0-2).
	restoreKeepingIndex(t, dir, logDir, backup)

	l, _ = openTest(t, dir)
	b := entry(t, 2, 1, "b1")
	idx, err := l.Append(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if idx != 1 {
		t.Fatalf("appended at %d, want 1", idx)
	}
	if e, at, ok, err := l.Logged(ctx, b.Key); err != nil || !ok || e != b || at != 1 {
		t.Errorf("Logged(b) = %+v at %d, %v, %v", e, at, ok, err)
	}
	checkProof(t, l, b, 1)
	if e, _, ok, err := l.Logged(ctx, entry(t, 1, 1, "a1").Key); err != nil || !ok || e.Seqno != 1 {
		t.Errorf("Logged(a) = %+v %v %v, want seqno 1: the rows past the log are gone", e, ok, err)
	}
}

// restoreKeepingIndex replaces the log folder logDir (in dir) by its copy
// backup, all but index.db, which is kept as it is: tessera's files
// restored from an older copy while the index was not.
func restoreKeepingIndex(t *testing.T, dir, logDir, backup string) {
	t.Helper()
	if err := os.Rename(filepath.Join(logDir, IndexFile), filepath.Join(dir, IndexFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(logDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(backup, logDir); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(logDir, IndexFile+"-wal"))
	os.Remove(filepath.Join(logDir, IndexFile+"-shm"))
	if err := os.Rename(filepath.Join(dir, IndexFile), filepath.Join(logDir, IndexFile)); err != nil {
		t.Fatal(err)
	}
}
