package exampletb

import (
	"os"
	"strings"
	"testing"
)

func TestCleanupsRunLastFirstAndFoldersGo(t *testing.T) {
	tb := New()
	var order []int
	dir := tb.TempDir()
	tb.Cleanup(func() { order = append(order, 1) })
	tb.Cleanup(func() { order = append(order, 2) })
	tb.Close()
	if len(order) != 2 || order[0] != 2 || order[1] != 1 {
		t.Errorf("cleanups ran in order %v, want [2 1]", order)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the temporary folder is still there: %v", err)
	}
}

func TestFailures(t *testing.T) {
	panics := func(f func()) (msg string) {
		defer func() { msg, _ = recover().(string) }()
		f()
		return ""
	}
	if msg := panics(func() { New().Fatalf("no %s", "server") }); msg != "no server" {
		t.Errorf("Fatalf panicked with %q", msg)
	}
	tb := New()
	tb.Errorf("closing %d", 1)
	if !tb.Failed() {
		t.Error("not Failed after Errorf")
	}
	if msg := panics(tb.Close); !strings.Contains(msg, "closing 1") {
		t.Errorf("Close after Errorf panicked with %q", msg)
	}
}
