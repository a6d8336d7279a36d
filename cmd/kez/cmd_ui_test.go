package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestUILogRefusesSymlink: kez ui empties ui.log at start. A symbolic
// link planted at KEZ_HOME/ui.log must not make it empty the file it
// points at (another file of the user's), nor write the log there.
func TestUILogRefusesSymlink(t *testing.T) {
	home, other := t.TempDir(), t.TempDir()
	victim := filepath.Join(other, "notes.txt")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(victim, filepath.Join(home, uiLogName)); err != nil {
		t.Fatal(err)
	}
	f, err := openUILog(home)
	if err == nil {
		f.Close()
		t.Error("openUILog followed a symbolic link")
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the file the link points at now holds %q", b)
	}
}

// TestUILogMode: ui.log is the user's only, even if an earlier one was
// left readable by others; its old lines are gone.
func TestUILogMode(t *testing.T) {
	home := t.TempDir()
	path := filepath.Join(home, uiLogName)
	if err := os.WriteFile(path, []byte("old session"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := openUILog(home)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != 0 {
		t.Errorf("ui.log is %v, %d bytes; want -rw------- and empty", st.Mode(), st.Size())
	}
	// A fresh one too.
	os.Remove(path)
	g, err := openUILog(home)
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("a new ui.log is %v (%v)", st.Mode(), err)
	}
}

// TestUILogRefusesFifo: a FIFO planted at ui.log would block kez ui's
// start (or feed its log to whoever reads it); it is refused.
func TestUILogRefusesFifo(t *testing.T) {
	home := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(home, uiLogName), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := openUILog(home)
	if err == nil {
		f.Close()
		t.Error("openUILog opened a FIFO")
	}
}

// TestUILogCapped: whatever the SDK logs, ui.log stops at uiLogMax bytes
// (a peer that makes the client log on every message cannot fill the
// disk through it).
func TestUILogCapped(t *testing.T) {
	f, err := openUILog(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := &cappedWriter{w: f, left: uiLogMax}
	line := []byte(strings.Repeat("x", 999) + "\n")
	for i := 0; i < uiLogMax/len(line)+100; i++ {
		if n, err := w.Write(line); n != len(line) || err != nil {
			t.Fatalf("write %d: %d, %v", i, n, err)
		}
	}
	if st, err := f.Stat(); err != nil || st.Size() != uiLogMax {
		t.Errorf("ui.log holds %d bytes (%v), want %d", st.Size(), err, uiLogMax)
	}
}
