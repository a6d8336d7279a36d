package main

// Interactive commands tested the way people use them: the built kez
// binary in a real terminal (a tmux pane, on a private tmux server),
// driven by keystrokes, its output read from the pane as a stream.

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// terminalWait bounds each wait for output: the binary derives the
// identity and runs scrypt (2^18) on a busy machine.
const terminalWait = 2 * time.Minute

var (
	kezBinOnce sync.Once
	kezBin     string
	kezBinErr  error
)

// builtKez builds this command once per test binary.
func builtKez(t testing.TB) string {
	t.Helper()
	kezBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "kez-bin-")
		if err != nil {
			kezBinErr = err
			return
		}
		kezBin = filepath.Join(dir, "kez")
		out, err := exec.Command("go", "build", "-o", kezBin, ".").CombinedOutput()
		if err != nil {
			kezBinErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if kezBinErr != nil {
		t.Fatal(kezBinErr)
	}
	return kezBin
}

// terminal is one tmux pane running a command.
type terminal struct {
	t      *testing.T
	sock   string // the private tmux server's socket
	mu     sync.Mutex
	out    []byte        // everything the pane printed (with the echo of what was typed)
	more   chan struct{} // closed and replaced whenever out grows or the stream ends
	ended  bool
	cursor int // waitFor looks after this offset
}

// startTerminal runs "kez ARGS" with env in a new 120×40 terminal. The
// command's exit status is printed after it as "[exit N]".
func startTerminal(t *testing.T, env map[string]string, args ...string) *terminal {
	t.Helper()
	return startTerminalWith(t, termOptions{}, env, args...)
}

// termOptions shape the terminal of startTerminalWith.
type termOptions struct {
	cols, rows int    // the size; 0: 120×40
	term       string // TERM; "": xterm-256color
	// shell: after kez exits, the pane runs an interactive shell (to type
	// stty -a into) instead of waiting for a last Enter.
	shell bool
}

// startTerminalWith is startTerminal in a terminal shaped by o.
func startTerminalWith(t *testing.T, o termOptions, env map[string]string, args ...string) *terminal {
	t.Helper()
	if o.cols == 0 {
		o.cols, o.rows = 120, 40
	}
	if o.term == "" {
		o.term = "xterm-256color"
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (.ci/run installs it)")
	}
	bin := builtKez(t)
	dir := t.TempDir()
	tm := &terminal{t: t, sock: filepath.Join(dir, "tmux.sock"), more: make(chan struct{})}
	fifo := filepath.Join(dir, "pane")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}

	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	cmd := []string{"env", "-i", "PATH=" + os.Getenv("PATH"), "TERM=" + o.term, "HOME=" + dir}
	for _, k := range keys {
		cmd = append(cmd, k+"="+env[k])
	}
	cmd = append(append(cmd, bin), args...)
	// The pane waits for a first Enter, so that nothing is printed before
	// the pane's output is piped to the test.
	// The shell survives a Ctrl-C meant for kez (a trap, unlike an ignored
	// signal, is not inherited).
	script := "trap : INT; read start; " + shellQuote(cmd) + `; echo "[exit $?]"; read end`
	if o.shell {
		script = "trap : INT; read start; " + shellQuote(cmd) + `; echo "[exit $?]"; PS1='$ ' exec sh -i`
	}
	tm.tmux("new-session", "-d", "-s", "kez", "-x", strconv.Itoa(o.cols), "-y", strconv.Itoa(o.rows), "sh", "-c", script)
	t.Cleanup(func() { exec.Command("tmux", "-S", tm.sock, "kill-server").Run() })

	go tm.read(fifo)
	tm.tmux("pipe-pane", "-t", "kez", "-o", "cat > "+shellQuote([]string{fifo}))
	tm.tmux("send-keys", "-t", "kez", "Enter")
	return tm
}

func (tm *terminal) tmux(args ...string) {
	tm.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", tm.sock}, args...)...)
	cmd.Env = append(os.Environ(), "TERM=xterm-256color")
	if out, err := cmd.CombinedOutput(); err != nil {
		tm.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (tm *terminal) read(fifo string) {
	f, err := os.Open(fifo) // blocks until pipe-pane's cat opens it
	if err == nil {
		defer f.Close()
	}
	buf := make([]byte, 4096)
	for err == nil {
		var n int
		n, err = f.Read(buf)
		tm.mu.Lock()
		tm.out = append(tm.out, buf[:n]...)
		close(tm.more)
		tm.more = make(chan struct{})
		tm.mu.Unlock()
	}
	tm.mu.Lock()
	tm.ended = true
	close(tm.more)
	tm.more = make(chan struct{})
	tm.mu.Unlock()
}

// waitFor waits until s appears after everything waitFor matched before,
// and returns what the pane printed from there up to the end of s.
func (tm *terminal) waitFor(s string) string {
	tm.t.Helper()
	return tm.until(fmt.Sprintf("%q", s), func() (bool, string) {
		tm.mu.Lock()
		defer tm.mu.Unlock()
		if i := bytes.Index(tm.out[tm.cursor:], []byte(s)); i >= 0 {
			seen := string(tm.out[tm.cursor : tm.cursor+i+len(s)])
			tm.cursor += i + len(s)
			return true, seen
		}
		return false, string(tm.out)
	})
}

// until waits until check reports true, calling it again each time the
// pane's output grows, and returns what it returned; on a timeout or the
// end of the stream it fails the test with what check last showed.
func (tm *terminal) until(what string, check func() (ok bool, shown string)) string {
	tm.t.Helper()
	deadline := time.NewTimer(terminalWait)
	defer deadline.Stop()
	for {
		tm.mu.Lock()
		more, ended := tm.more, tm.ended
		tm.mu.Unlock()
		ok, shown := check()
		if ok {
			return shown
		}
		if ended {
			tm.t.Fatalf("the terminal closed without showing %s; it showed:\n%s", what, shown)
		}
		select {
		case <-more:
		case <-deadline.C:
			tm.t.Fatalf("no %s in the terminal after %v; it showed:\n%s", what, terminalWait, shown)
		}
	}
}

// typeLine types text and Enter.
func (tm *terminal) typeLine(text string) {
	tm.t.Helper()
	if text != "" {
		tm.tmux("send-keys", "-t", "kez", "-l", text)
	}
	tm.tmux("send-keys", "-t", "kez", "Enter")
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestTerminalRecover types a recovery as a person would: words on
// several lines with a misspelt one and a valid but wrong one, the empty
// line that ends them, then an empty passphrase (refused until
// "unencrypted"), a mismatch, and a passphrase. The passphrase must not be
// asked for before the empty line, the misspelt word alone is asked again,
// and the handle is restored.
func TestTerminalRecover(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	home := filepath.Join(t.TempDir(), "new-machine")
	env := with(st.Env(nil), "KEZ_HOME", home)
	words := stacktest.Words("alice").Words()
	wrong24 := "abandon" // a backup word, but not this backup's 24th
	if words[23] == wrong24 {
		wrong24 = "zoo"
	}

	tm := startTerminal(t, env, "recover")
	tm.waitFor("Type your 24 words")
	tm.waitFor("word 1: ")
	tm.typeLine(strings.Join(words[:12], " "))
	tm.waitFor("word 13: ")
	line := append(append([]string{}, words[12:23]...), wrong24)
	line[2] = "xyzzy" // word 15
	tm.typeLine(strings.Join(line, " "))
	tm.waitFor(`Word 15 ("xyzzy") is not a backup word`)
	tm.waitFor("word 15 again: ")
	tm.typeLine(words[14])
	// All 24 are in, but the words have not ended: no passphrase yet.
	seen := tm.waitFor("That is 24 words; Enter to go on: ")
	if strings.Contains(seen, "assphrase") {
		t.Fatalf("the passphrase was asked for before the words ended:\n%s", seen)
	}
	tm.typeLine("")
	tm.waitFor("checksum does not match")
	tm.waitFor("Number of a word to correct")
	tm.typeLine("24")
	tm.waitFor(fmt.Sprintf(`word 24 (now %q): `, wrong24))
	tm.typeLine(words[23])

	tm.waitFor("Choose a passphrase")
	tm.waitFor("Passphrase: ")
	tm.typeLine("") // an empty passphrase is not taken as "none"
	tm.waitFor(`Type "unencrypted" to store it so`)
	tm.typeLine("")
	tm.waitFor("Passphrase: ")
	tm.typeLine("correct horse")
	tm.waitFor("Same passphrase again: ")
	tm.typeLine("correct hose")
	tm.waitFor("do not match")
	tm.waitFor("Passphrase: ")
	tm.typeLine("correct horse")
	tm.waitFor("Same passphrase again: ")
	tm.typeLine("correct horse")
	out := tm.waitFor("[exit 0]")
	for _, want := range []string{"encrypted with your passphrase", "Found your handle", "handle:       @alice@kez.test", au.Key.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("recover's output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "correct horse") {
		t.Error("the passphrase was echoed")
	}

	data, err := os.ReadFile(kez.IdentityPath(home))
	if err != nil || !bytes.HasPrefix(data, []byte("age-encryption.org/v1")) {
		t.Fatalf("the identity is not encrypted (%v)", err)
	}
	id, err := kez.LoadIdentity(home, []byte("correct horse"))
	if err != nil || id.PublicKey() != au.Key {
		t.Fatalf("recovered %v, %v; want alice's key", id, err)
	}
	if p, _ := loadProfile(home); p.Handle != "alice@kez.test" {
		t.Errorf("profile: %+v", p)
	}
}

// TestTerminalInitForceConfirm: init --force over a registered identity
// wants the handle typed (a wrong answer stops it, the right one goes on),
// and "unencrypted" typed after an empty passphrase is the one way to
// store the new key plain. Then kez passphrase set encrypts it.
func TestTerminalInitForceConfirm(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	env := st.Env(au)
	before, err := os.ReadFile(kez.IdentityPath(au.Home))
	if err != nil {
		t.Fatal(err)
	}

	tm := startTerminal(t, env, "init", "--force", "--yes")
	tm.waitFor("WARNING: The identity in")
	tm.waitFor("holds the handle @alice@kez.test")
	tm.waitFor("type alice@kez.test and press Enter")
	tm.typeLine("bob@kez.test")
	if out := tm.waitFor("[exit 1]"); !strings.Contains(out, "stopped") || !strings.Contains(out, "nothing was changed") {
		t.Errorf("a wrong handle:\n%s", out)
	}
	if after, _ := os.ReadFile(kez.IdentityPath(au.Home)); !bytes.Equal(after, before) {
		t.Fatal("a wrong answer replaced the identity")
	}

	tm = startTerminal(t, env, "init", "--force", "--yes")
	tm.waitFor("type alice@kez.test and press Enter")
	tm.typeLine("alice@kez.test")
	tm.waitFor("Passphrase: ")
	tm.typeLine("")
	tm.waitFor(`Type "unencrypted"`)
	tm.typeLine("unencrypted")
	out := tm.waitFor("[exit 0]")
	if !strings.Contains(out, "NOT encrypted") || !strings.Contains(out, "Your paper backup") {
		t.Errorf("init --force:\n%s", out)
	}
	id, err := kez.LoadIdentity(au.Home, nil)
	if err != nil || id.PublicKey() == au.Key {
		t.Fatalf("after init --force: %v, same key %v", err, id != nil && id.PublicKey() == au.Key)
	}
	if p, _ := loadProfile(au.Home); p.Handle != "" {
		t.Errorf("the profile still names the discarded handle: %+v", p)
	}

	// kez passphrase set on the new plain identity: an empty passphrase is
	// refused here (remove is for that), then a mismatch, then it is set.
	tm = startTerminal(t, env, "passphrase", "set")
	tm.waitFor("Passphrase: ")
	tm.typeLine("")
	tm.waitFor("cannot be empty")
	tm.waitFor("Passphrase: ")
	tm.typeLine("pw one")
	tm.waitFor("Same passphrase again: ")
	tm.typeLine("pw two")
	tm.waitFor("do not match")
	tm.waitFor("Passphrase: ")
	tm.typeLine("pw one")
	tm.waitFor("Same passphrase again: ")
	tm.typeLine("pw one")
	if out := tm.waitFor("[exit 0]"); !strings.Contains(out, "now encrypted") {
		t.Errorf("passphrase set:\n%s", out)
	}
	again, err := kez.LoadIdentity(au.Home, []byte("pw one"))
	if err != nil || again.PublicKey() != id.PublicKey() {
		t.Fatalf("after passphrase set: %v", err)
	}
}

// TestTerminalCtrlC: Ctrl-C at a prompt ends the command at once, saves
// nothing, and leaves the terminal echoing again (a passphrase prompt
// turns echo off).
func TestTerminalCtrlC(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	env := map[string]string{"KEZ_HOME": home}

	tm := startTerminal(t, env, "recover")
	tm.waitFor("word 1: ")
	tm.tmux("send-keys", "-t", "kez", "C-c")
	if out := tm.waitFor("[exit 1]"); !strings.Contains(out, "nothing was saved") {
		t.Errorf("Ctrl-C at the words:\n%s", out)
	}

	tm = startTerminal(t, env, "init")
	tm.waitFor("Passphrase: ")
	tm.tmux("send-keys", "-t", "kez", "C-c")
	if out := tm.waitFor("[exit 1]"); !strings.Contains(out, "interrupted") {
		t.Errorf("Ctrl-C at the passphrase:\n%s", out)
	}
	tm.typeLine("echo is back") // read by the pane's shell after kez ended
	tm.waitFor("echo is back")
	if ok, _ := kez.HasIdentity(home); ok {
		t.Fatal("an interrupted command saved an identity")
	}
}
