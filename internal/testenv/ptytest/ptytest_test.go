package ptytest_test

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/ptytest"
)

func start(t *testing.T, o ptytest.Options, name string, args ...string) *ptytest.Term {
	t.Helper()
	if err := ptytest.Available(); err != nil {
		// Only where the harness has no pty code (it is Linux's); on
		// Linux a missing /dev/ptmx is a broken machine, not a skip.
		if runtime.GOOS == "linux" {
			t.Fatal(err)
		}
		t.Skipf("no pseudo-terminal harness on %s: %v", runtime.GOOS, err)
	}
	tm, err := ptytest.Start(exec.Command(name, args...), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tm.Close() })
	return tm
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestPtyHarness runs a real program on the slave side: it sees a
// terminal of the size asked for (stty size), the line discipline echoes
// what is typed, the program reads it, and Ctrl-D ends it; a resize is
// seen by the next stty.
func TestPtyHarness(t *testing.T) {
	tm := start(t, ptytest.Options{Rows: 33, Cols: 101}, "sh", "-c", `stty size; cat; stty size; echo "[done]"`)
	c := ctx(t)
	contains := func(s string) func([]byte) bool {
		return func(out []byte) bool { return bytes.Contains(out, []byte(s)) }
	}
	if _, err := tm.WaitOutput(c, contains("33 101")); err != nil {
		t.Fatalf("no window size: %v; output %q", err, tm.Output())
	}
	before := len(tm.Output())
	sent := time.Now()
	tm.WriteString("hello pty\n")
	// Echoed by the line discipline, then printed again by cat.
	at, err := tm.WaitOutput(c, func(out []byte) bool {
		return bytes.Count(out[before:], []byte("hello pty")) == 2
	})
	if err != nil {
		t.Fatalf("typed line not echoed and printed: %v; output %q", err, tm.Output())
	}
	if at.Before(sent) {
		t.Errorf("the wait says the echo arrived at %v, before it was typed (%v)", at, sent)
	}
	if err := tm.Resize(12, 40); err != nil {
		t.Fatal(err)
	}
	tm.WriteString("\x04") // Ctrl-D: end of input for cat
	if _, err := tm.WaitOutput(c, contains("[done]")); err != nil {
		t.Fatalf("cat did not end: %v; output %q", err, tm.Output())
	}
	if !bytes.Contains(tm.Output(), []byte("12 40")) {
		t.Errorf("the resize was not seen: %q", tm.Output())
	}
	if err := tm.Wait(c); err != nil {
		t.Errorf("exit: %v", err)
	}
	// The output ends once the program has exited: a wait for what never
	// comes fails instead of hanging.
	if _, err := tm.WaitOutput(c, contains("never printed")); !errors.Is(err, ptytest.ErrEnded) {
		t.Errorf("waiting on an ended terminal: %v, want ErrEnded", err)
	}
}

// TestPtyControllingTerminal: the program is a session leader whose
// controlling terminal is the pty (tty names it, and /dev/tty opens).
func TestPtyControllingTerminal(t *testing.T) {
	tm := start(t, ptytest.Options{}, "sh", "-c", `tty; echo ok > /dev/tty && echo "[tty ok]"`)
	c := ctx(t)
	if _, err := tm.WaitOutput(c, func(out []byte) bool { return bytes.Contains(out, []byte("[tty ok]")) }); err != nil {
		t.Fatalf("%v; output %q", err, tm.Output())
	}
	if !bytes.Contains(tm.Output(), []byte("/dev/pts/")) {
		t.Errorf("tty printed %q", tm.Output())
	}
}

// TestPtyScreen draws with cursor movements, so the words on screen are
// not runs of bytes in the stream: the screen model puts them together,
// and answers the program's cursor position query as a terminal does.
func TestPtyScreen(t *testing.T) {
	// "wor" at column 7, then "hello " at column 1 and "ld" at column 10
	// of row 3; then a cursor position report is asked for and read back
	// (raw mode, so the answer is not echoed).
	script := `stty raw -echo; printf '\033[2J\033[3;7Hwor\033[3;1Hhello \033[3;10Hld'; ` +
		`printf '\033[6n'; ans=$(dd bs=1 count=7 2>/dev/null); stty sane; ` +
		`printf '\033[5;1H[answer %s]' "$(printf %s "$ans" | tr -d '\033')"; read x`
	tm := start(t, ptytest.Options{Rows: 10, Cols: 30, Screen: true}, "sh", "-c", script)
	c := ctx(t)
	if _, err := tm.WaitScreen(c, func(s ptytest.Screen) bool { return s.Contains("hello world") }); err != nil {
		t.Fatalf("%v; screen:\n%s", err, tm.ScreenText())
	}
	if bytes.Contains(tm.Output(), []byte("hello world")) {
		t.Errorf("the stream holds %q as one run: the test does not test the model", "hello world")
	}
	if _, err := tm.WaitScreen(c, func(s ptytest.Screen) bool { return s.Contains("[answer [3;12R]") }); err != nil {
		t.Fatalf("no cursor report: %v; screen:\n%s", err, tm.ScreenText())
	}
	lines := strings.Split(tm.ScreenText(), "\n")
	if len(lines) < 3 || lines[2] != "hello world" {
		t.Errorf("row 3 is %q", lines)
	}
	tm.WriteString("\n")
	if err := tm.Wait(c); err != nil {
		t.Errorf("exit: %v", err)
	}
}

// TestPtyClose kills a program that does not exit by itself.
func TestPtyClose(t *testing.T) {
	tm := start(t, ptytest.Options{}, "sleep", "600")
	var exit *exec.ExitError
	if err := tm.Close(); !errors.As(err, &exit) {
		t.Errorf("Close of a running program: %v, want its kill", err)
	}
	select {
	case <-tm.Exited():
	default:
		t.Error("Close returned before the program exited")
	}
}
