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
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/uifixture"
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
	return tm.until(what, func() (bool, string) {
		s := tm.screen()
		return ok(s), s
	})
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

// online waits until the status line says the UI is online and serves
// the user's files.
func (tm *terminal) online() string {
	tm.t.Helper()
	return tm.waitShows("● online", "serving ")
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
	screen := alice.waitShows("the second one  ✓✓ read") // bob read it
	matchFixture(t, "chat", screen)

	// q in the message box is a letter; Esc then q quits.
	alice.typeText("q")
	alice.waitShows("│q")
	alice.keys("Escape")
	alice.waitShows("q quit")
	alice.keys("q")
	alice.waitFor("[exit 0]")
}

// TestUIRequestAccepted: a stranger's message request, its text full of
// terminal escapes and bidi overrides, shows inert in Requests; opened, it
// has the request banner; Ctrl+A accepts it and the reply reaches them.
func TestUIRequestAccepted(t *testing.T) {
	st, aliceEnv, _ := uiPair(t)
	carol := st.Env(st.NewUser(t, "carol"))
	mustRun(t, carol, "", "contacts", "add", "alice")
	hostile := "\x1b]0;pwned\x07\x1b[2J\x1b[31mhi\x1b[0m \u202eevil\u202c alice\u009b1m"
	mustRun(t, carol, "", "send", "alice", hostile)

	alice := startUI(t, aliceEnv, 80, 24)
	alice.online()
	alice.waitShows("Requests (1)", "carol@kez.test")
	alice.keys("Down")
	alice.keys("Enter")
	screen := alice.waitShows("A message request from carol@kez.test", "Ctrl+B block")
	if !strings.Contains(screen, "carol: ]0;pwned[2J[31mhi[0m evil alice1m") {
		t.Errorf("the hostile text is not drawn inert:\n%s", screen)
	}
	if title := alice.display("#{pane_title}"); strings.Contains(title, "pwned") {
		t.Errorf("a message set the terminal's title: %q", title)
	}
	matchFixture(t, "request", screen)

	alice.keys("C-a")
	alice.waitShows("carol@kez.test is a contact now")
	alice.waitGone("A message request from")
	alice.typeText("welcome, carol")
	alice.keys("Enter")
	alice.waitShows("alice: welcome, carol")
	if out := mustRun(t, carol, "", "inbox").stdout; !strings.Contains(out, "welcome, carol") {
		t.Errorf("carol's inbox lacks the reply:\n%s", out)
	}
}

// display returns a tmux format of the pane (#{pane_title}, #{alternate_on}).
func (tm *terminal) display(format string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", "-S", tm.sock, "display-message", "-p", "-t", "kez", format).Output()
	if err != nil {
		tm.t.Fatalf("tmux display-message: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestUIRequestFlood: requests from many keys keep the list usable (the
// section draws a few and counts the rest), and a 48 KiB message without
// a space neither freezes the screen nor stops typing.
func TestUIRequestFlood(t *testing.T) {
	st, aliceEnv, bobEnv := uiPair(t)
	for _, name := range []string{"s1", "s2", "s3", "s4", "s5", "s6", "s7"} {
		env := st.Env(st.NewUser(t, name))
		mustRun(t, env, "", "contacts", "add", "alice")
		mustRun(t, env, "", "send", "alice", "hello from "+name)
	}
	mustRun(t, bobEnv, "", "send", "alice", "a huge one")
	mustRun(t, bobEnv, strings.Repeat("y", 48<<10-3)+"END", "send", "alice")

	alice := startUI(t, aliceEnv, 80, 24)
	alice.online()
	screen := alice.waitShows("Requests (7)", "… and 2 more")
	if n := strings.Count(screen, "@kez.test"); n > 2+1+5 { // title, status, bob, 5 requests
		t.Errorf("the list draws %d handles:\n%s", n, screen)
	}
	alice.keys("Enter") // bob's conversation, with the huge message at the bottom
	alice.waitShows("yyyyyyyyEND")
	alice.typeText("still typing")
	alice.waitShows("│still typing")
}

// TestUIKeyChange: bob's handle moves to another key; alice's UI shows
// the red banner with the safety number as soon as she opens bob's
// conversation, nothing she types is sent, and Ctrl+A accepts the new
// key, after which her message reaches the new bob.
func TestUIKeyChange(t *testing.T) {
	st, aliceEnv, _ := uiPair(t)
	mustRun(t, aliceEnv, "", "send", "bob", "before the change")
	st.ReleaseHandle(t, "bob")
	newBobHome, _ := newHome(t)
	newBob := with(st.Env(nil), "KEZ_HOME", newBobHome)
	mustRun(t, newBob, "", "register", "bob")

	alice := startUI(t, aliceEnv, 80, 24)
	alice.online()
	alice.keys("Enter")
	screen := alice.waitShows("WARNING: @bob@kez.test's KEY CHANGED", "Sending is blocked until you accept the change", "bob@kez.test !", "Safety number of the new key")
	for _, want := range []string{"Safety number of the new key", "Compare it with bob in person, then press", "accept the new key."} {
		if !strings.Contains(screen, want) {
			t.Errorf("the banner lacks %q:\n%s", want, screen)
		}
	}
	if n := len(stableDigits.FindAllString(screen, -1)); n != 12 {
		t.Errorf("the banner shows %d groups of five digits, want the 12 of a safety number:\n%s", n, screen)
	}
	matchFixture(t, "keychange", screen)

	alice.typeText("not to the new key")
	alice.keys("Enter")
	alice.waitShows("Not sent: sending is blocked")

	alice.keys("C-a")
	alice.waitShows("bob@kez.test is a contact now")
	alice.waitGone("KEY CHANGED")
	alice.typeText("hello, new bob")
	alice.keys("Enter")
	alice.waitShows("alice: hello, new bob", "✓ sent")
	out := mustRun(t, newBob, "", "inbox", "--requests").stdout + mustRun(t, newBob, "", "inbox").stdout
	if !strings.Contains(out, "hello, new bob") || strings.Contains(out, "not to the new key") {
		t.Errorf("the new bob received:\n%s", out)
	}
}

// TestUIKeyMovedBeforeAccept: bob's handle moves to a second key (the
// banner shows its safety number), then to a third before alice presses
// Ctrl+A: nothing is pinned, the banner shows the third key's number, and
// only the next Ctrl+A pins it; what alice sends then reaches the third
// key.
func TestUIKeyMovedBeforeAccept(t *testing.T) {
	st, aliceEnv, _ := uiPair(t)
	st.ReleaseHandle(t, "bob")
	secondHome, _ := newHome(t)
	second := with(st.Env(nil), "KEZ_HOME", secondHome)
	mustRun(t, second, "", "register", "bob")

	alice := startUI(t, aliceEnv, 80, 24)
	alice.online()
	alice.keys("Enter")
	shown := stableDigits.FindAllString(alice.waitShows("KEY CHANGED", "Safety number of the new key"), -1)

	st.ReleaseHandle(t, "bob")
	thirdHome, _ := newHome(t)
	third := with(st.Env(nil), "KEZ_HOME", thirdHome)
	mustRun(t, third, "", "register", "bob")
	alice.keys("C-a")
	screen := alice.waitShows("Not accepted")
	if now := stableDigits.FindAllString(screen, -1); len(now) != 12 || slices.Equal(now, shown) {
		t.Errorf("the banner still shows the second key's number %q:\n%s", shown, screen)
	}
	if !strings.Contains(screen, "KEY CHANGED") {
		t.Errorf("the refused accept cleared the banner:\n%s", screen)
	}

	alice.keys("C-a")
	alice.waitShows("bob@kez.test is a contact now")
	alice.waitGone("KEY CHANGED")
	alice.typeText("hello, third bob")
	alice.keys("Enter")
	alice.waitShows("alice: hello, third bob", "✓ sent")
	if out := mustRun(t, third, "", "inbox", "--requests").stdout; !strings.Contains(out, "hello, third bob") {
		t.Errorf("the third bob received:\n%s", out)
	}
}

// TestUIQuitRestoresTerminal: q, Ctrl+C, SIGTERM and SIGHUP each end kez
// ui with the terminal as it was: the alternate screen left, and the
// shell's line editing (icanon) and echo back, as stty -a shows.
func TestUIQuitRestoresTerminal(t *testing.T) {
	_, aliceEnv, _ := uiPair(t)
	for _, how := range []string{"q", "C-c", "TERM", "HUP"} {
		t.Run(how, func(t *testing.T) {
			alice := startUI(t, aliceEnv, 80, 24)
			alice.online()
			if alice.display("#{alternate_on}") != "1" {
				t.Error("kez ui does not draw on the alternate screen")
			}
			switch how {
			case "q", "C-c":
				alice.keys(how)
			default:
				alice.signal(how)
			}
			alice.waitFor("[exit 0]")
			alice.waitFor("$ ")
			alice.typeLine("stty -a")
			out := alice.waitFor("$ ")
			for _, flag := range []string{"icanon", "echo"} {
				if !regexp.MustCompile(`(^|\s)` + flag + `(\s|$)`).MatchString(out) {
					t.Errorf("after %s, stty -a lacks %s:\n%s", how, flag, out)
				}
			}
			if alice.display("#{alternate_on}") != "0" {
				t.Errorf("after %s, the terminal is still on the alternate screen", how)
			}
		})
	}
}

// signal sends sig (TERM, HUP) to the kez the pane's shell runs.
func (tm *terminal) signal(sig string) {
	tm.t.Helper()
	shell := tm.display("#{pane_pid}")
	b, err := os.ReadFile("/proc/" + shell + "/task/" + shell + "/children")
	pid := strings.Fields(string(b))
	if err != nil || len(pid) != 1 {
		tm.t.Fatalf("the pane's shell %s has children %q (%v)", shell, pid, err)
	}
	if out, err := exec.Command("kill", "-"+sig, pid[0]).CombinedOutput(); err != nil {
		tm.t.Fatalf("kill -%s: %v %s", sig, err, out)
	}
}

// TestUILayout: the list screen at 80×24, the help overlay, a resize to
// a wider terminal and to one too narrow for two panes (one at a time).
func TestUILayout(t *testing.T) {
	_, aliceEnv, bobEnv := uiPair(t)
	mustRun(t, bobEnv, "", "send", "alice", "a first line\nand a second")

	alice := startUI(t, aliceEnv, 80, 24)
	alice.online()
	matchFixture(t, "list", alice.waitShows("bob@kez.test (1)", "a first line"))

	alice.keys("?")
	matchFixture(t, "help", alice.waitShows("Keys", "Ctrl+A", "this help"))
	alice.keys("x") // any key closes it
	alice.waitGone("this help")

	alice.tmux("resize-window", "-t", "kez", "-x", "100", "-y", "30")
	alice.waitScreen("the status line on row 30", func(s string) bool {
		rows := strings.Split(s, "\n")
		return len(rows) == 30 && strings.HasPrefix(rows[29], "● online")
	})
	alice.tmux("resize-window", "-t", "kez", "-x", "50", "-y", "20")
	alice.waitShows("bob@kez.test (1)")
	alice.waitGone("│")
	alice.keys("Enter")
	screen := alice.waitShows("bob: a first line", "and a second")
	if strings.Contains(screen, "Requests") || strings.Contains(screen, "│") {
		t.Errorf("at 50 columns the list and the conversation share the screen:\n%s", screen)
	}
	matchFixture(t, "narrow", screen)
	alice.keys("Escape")
	alice.waitGone("bob: a first line")
	alice.waitShows("bob@kez.test")
}

// TestBareKezOnATerminal: bare kez on a terminal opens the UI when the
// state folder holds keys, and prints the help (exit 2) when it holds
// none, as it does off a terminal (TestBareKezExits2).
func TestBareKezOnATerminal(t *testing.T) {
	_, aliceEnv, _ := uiPair(t)
	tm := startTerminalWith(t, termOptions{cols: 80, rows: 24}, aliceEnv)
	tm.online()
	tm.waitShows("kez — @alice@kez.test", "bob@kez.test")
	tm.keys("q")
	tm.waitFor("[exit 0]")

	empty := with(aliceEnv, "KEZ_HOME", filepath.Join(t.TempDir(), "none"))
	tm = startTerminalWith(t, termOptions{cols: 80, rows: 24}, empty)
	out := tm.waitFor("[exit 2]")
	if !strings.Contains(out, "usage: kez COMMAND") {
		t.Errorf("bare kez without keys:\n%s", out)
	}
}

// TestREADMEShowsTheUI: the README's capture of kez ui is the chat
// fixture (TestUIChat's screen), times and day aside.
func TestREADMEShowsTheUI(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(readme), "Alice talking with bob, at 80×24:\n\n```text\n")
	block, _, ok2 := strings.Cut(after, "```\n")
	if !ok || !ok2 {
		t.Fatal("README.md has no capture of kez ui")
	}
	want, err := os.ReadFile(filepath.Join("testdata", "ui", "chat.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if got := stable(block); got != string(want) {
		t.Errorf("README.md's capture is not testdata/ui/chat.txt:\n%s---\n%s", got, want)
	}
}

// TestUIOfflineAndPlain: with NO_COLOR on a dumb terminal the screen still
// says everything in words; when NATS goes down the status line says so,
// a message sent meanwhile shows "sent, waiting for NATS" until NATS is
// back and answers; n asks for a handle and names one no one holds.
func TestUIOfflineAndPlain(t *testing.T) {
	st, aliceEnv, bobEnv := uiPair(t)
	mustRun(t, bobEnv, "", "send", "alice", "are you there?")
	alice := startTerminalWith(t, termOptions{cols: 80, rows: 24, term: "dumb", shell: true}, with(aliceEnv, "NO_COLOR", "1"), "ui", "--verbose")
	alice.online()
	alice.waitShows("bob@kez.test (1)")

	alice.keys("n")
	alice.waitShows("Add contact (handle):")
	alice.typeText("nobody")
	alice.keys("Enter")
	alice.waitShows("Not added:", "nobody")

	alice.keys("Enter")
	alice.waitShows("bob: are you there?")
	st.NATS().Shutdown()
	alice.waitShows("○ offline — reconnecting")
	alice.typeText("queued while NATS was down")
	alice.keys("Enter")
	alice.waitShows("alice: queued while NATS was down", "sent, waiting for NATS")
	st.NATS().Restart()
	st.WaitReady()
	alice.waitShows("● online")
	// The SDK publishes it again once NATS and its stream are back: sent,
	// never failed for the time the broker was away.
	alice.waitScreen("the queued message sent", func(s string) bool {
		if strings.Contains(s, "alice: queued while NATS was down  ✗ failed") {
			t.Fatalf("the message queued while NATS was down failed:\n%s", s)
		}
		return strings.Contains(s, "alice: queued while NATS was down  ✓")
	})
	// --verbose: the SDK's lines went to ui.log, never to the screen.
	alice.keys("Escape")
	alice.waitShows("q quit")
	alice.keys("q")
	out := alice.waitFor("[exit 0]")
	logged, err := os.ReadFile(filepath.Join(aliceEnv["KEZ_HOME"], "ui.log"))
	if err != nil || !bytes.Contains(logged, []byte("level=DEBUG")) {
		t.Errorf("ui.log holds no debug lines (%v):\n%s", err, logged)
	}
	if strings.Contains(out, "level=") {
		t.Errorf("log lines reached the terminal:\n%s", out)
	}
}

// TestUIScrollBack: a conversation longer than a page is read back to its
// first message with PgUp (older pages load as the top is reached), and
// PgDn returns to the newest; no server is needed to read (the status
// line says it is offline).
func TestUIScrollBack(t *testing.T) {
	f, err := uifixture.Write(filepath.Join(t.TempDir(), "home"), uifixture.Options{Contacts: 2, Messages: 240})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KEZ_HOME": f.Home, "NATS_URL": closedURL(t, "nats")}
	tm := startUI(t, env, 80, 24)
	tm.waitShows(localName(f.Handles[0]))
	tm.waitShows("○ offline — trying again (1)", "cannot reach NATS")
	tm.keys("Enter")
	tm.waitShows("message 120 of 120")
	oldest := func(s string) int {
		n := 1 << 30
		for _, m := range regexp.MustCompile(`message (\d+) of 120`).FindAllStringSubmatch(s, -1) {
			k, _ := strconv.Atoi(m[1])
			n = min(n, k)
		}
		return n
	}
	for top := oldest(tm.screen()); top > 1; {
		tm.keys("PPage")
		screen := tm.waitScreen("older messages", func(s string) bool { return oldest(s) < top })
		top = oldest(screen)
	}
	if !strings.Contains(tm.screen(), "message 1 of 120") {
		t.Errorf("the first message is not shown:\n%s", tm.screen())
	}
	for range 12 {
		tm.keys("NPage")
	}
	tm.waitShows("message 120 of 120")
}

// localName is a handle's name before "@".
func localName(h string) string { name, _, _ := strings.Cut(h, "@"); return name }
