package main

// kez ui tested the way people use it: the built binary in a tmux pane
// (terminal_test.go's harness), driven by keys, its screen read with
// capture-pane and compared, made stable, with the fixtures in
// testdata/ui (go test -run TestUI -update rewrites them).

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

var updateUI = flag.Bool("update", false, "rewrite the screen fixtures in testdata/ui")

// screen returns what the pane shows now, one line per row, trailing
// blanks dropped.
func (tm *terminal) screen() string {
	tm.t.Helper()
	out, err := exec.Command("tmux", "-S", tm.sock, "capture-pane", "-p", "-t", "kez").Output()
	if err != nil {
		tm.t.Fatalf("tmux capture-pane: %v", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// waitScreen waits until the screen satisfies ok, capturing it again each
// time the pane's output grows (tmux has drawn what it passed on by the
// time it answers capture-pane), and returns it.
func (tm *terminal) waitScreen(what string, ok func(string) bool) string {
	tm.t.Helper()
	deadline := time.NewTimer(terminalWait)
	defer deadline.Stop()
	for {
		tm.mu.Lock()
		more, ended := tm.more, tm.ended
		tm.mu.Unlock()
		s := tm.screen()
		if ok(s) {
			return s
		}
		if ended {
			tm.t.Fatalf("the terminal closed before it showed %s; the screen:\n%s", what, s)
		}
		select {
		case <-more:
		case <-deadline.C:
			tm.t.Fatalf("the screen did not show %s within %v:\n%s", what, terminalWait, s)
		}
	}
}

// waitShows waits until the screen holds every one of texts.
func (tm *terminal) waitShows(texts ...string) string {
	tm.t.Helper()
	return tm.waitScreen(strings.Join(texts, " and "), func(s string) bool {
		for _, t := range texts {
			if !strings.Contains(s, t) {
				return false
			}
		}
		return true
	})
}

// waitGone waits until the screen no longer holds text.
func (tm *terminal) waitGone(text string) string {
	tm.t.Helper()
	return tm.waitScreen("no "+text, func(s string) bool { return !strings.Contains(s, text) })
}

// keys presses keys by tmux's names (Enter, Tab, C-a, Escape, PPage...).
func (tm *terminal) keys(keys ...string) {
	tm.t.Helper()
	tm.tmux(append([]string{"send-keys", "-t", "kez"}, keys...)...)
}

// typeText types text as it is.
func (tm *terminal) typeText(text string) {
	tm.t.Helper()
	tm.tmux("send-keys", "-t", "kez", "-l", text)
}

// startUI runs kez ui for env in a cols×rows terminal with a shell after
// it, and waits for its first screen.
func startUI(t *testing.T, env map[string]string, cols, rows int) *terminal {
	t.Helper()
	tm := startTerminalWith(t, termOptions{cols: cols, rows: rows, shell: true}, env, "ui")
	tm.waitShows("kez — ")
	return tm
}

// online waits until the status line says the UI is online.
func (tm *terminal) online() string {
	tm.t.Helper()
	return tm.waitShows("● online")
}

var (
	stableTime   = regexp.MustCompile(`\b\d\d:\d\d\b`)
	stableDay    = regexp.MustCompile(`─+ (Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d{1,2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)( \d{4})? ─+`)
	stableKey    = regexp.MustCompile(`U[A-Z2-7]{11,}…?`)
	stableDigits = regexp.MustCompile(`\b\d{5}\b`)
)

// stable replaces what changes from run to run in a screen (times, days,
// keys, safety numbers) with placeholders.
func stable(s string) string {
	s = stableDay.ReplaceAllString(s, "── DAY ──")
	s = stableTime.ReplaceAllString(s, "HH:MM")
	s = stableKey.ReplaceAllString(s, "KEY")
	return stableDigits.ReplaceAllString(s, "NNNNN")
}

// matchFixture compares a screen, made stable, with testdata/ui/NAME.txt
// (-update writes it).
func matchFixture(t *testing.T, name, screen string) {
	t.Helper()
	path := filepath.Join("testdata", "ui", name+".txt")
	got := stable(screen) + "\n"
	if *updateUI {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run %s -update writes it)", err, t.Name())
	}
	if !bytes.Equal(want, []byte(got)) {
		t.Errorf("the screen differs from %s (-update rewrites it):\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// uiPair starts a stack with alice and bob, contacts of each other.
func uiPair(t *testing.T) (st *stacktest.Stack, alice, bob map[string]string) {
	t.Helper()
	st = stacktest.Start(t, stacktest.Options{})
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice = with(st.Env(st.NewUser(t, "alice")), "KEZ_P2P_LISTEN", loopback)
	bob = with(st.Env(st.NewUser(t, "bob")), "KEZ_P2P_LISTEN", loopback)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "contacts", "add", "alice")
	return st, alice, bob
}

// TestUIChat: alice and bob, each in kez ui, write to each other; each
// sees the other's message arrive, their own marked delivered, and the
// conversation screen at 80×24 is the README's.
func TestUIChat(t *testing.T) {
	st, aliceEnv, bobEnv := uiPair(t)
	_ = st
	mustRun(t, aliceEnv, "", "send", "bob", "hello from the command line")

	bob := startUI(t, bobEnv, 80, 24)
	alice := startUI(t, aliceEnv, 80, 24)
	alice.online()
	bob.online()
	bob.waitShows("alice@kez.test", "hello from the")

	// bob opens alice's conversation and answers.
	bob.keys("Enter")
	bob.waitShows("hello from the command line")
	bob.typeText("hi alice, from kez ui")
	bob.keys("Enter")
	bob.waitShows("bob: hi alice, from kez ui")

	alice.waitShows("(1)")
	alice.keys("Enter")
	alice.waitShows("bob: hi alice, from kez ui")
	alice.typeText("two lines:")
	alice.keys("M-Enter")
	alice.typeText("the second one")
	alice.keys("Enter")
	alice.waitShows("alice: two lines:", "the second one")
	bob.waitShows("alice: two lines:", "the second one")
	screen := alice.waitShows("✓✓ read")
	matchFixture(t, "chat", screen)

	// q in the message box is a letter; Esc then q quits.
	alice.typeText("q")
	alice.waitShows("│q")
	alice.keys("Escape")
	alice.waitShows("q quit")
	alice.keys("q")
	alice.waitFor("[exit 0]")
}
