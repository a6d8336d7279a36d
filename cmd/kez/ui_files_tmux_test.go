package main

import (
	"bytes"
	"flag"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

var updateUIFiles = flag.Bool("update-ui-files", false, "rewrite testdata/ui/files_*.txt from the screens captured")

// screen returns what the pane shows now (capture-pane -p: the text of
// each row, no colours).
func (tm *terminal) screen() string {
	tm.t.Helper()
	cmd := exec.Command("tmux", "-S", tm.sock, "capture-pane", "-p", "-t", "kez")
	out, err := cmd.Output()
	if err != nil {
		tm.t.Fatalf("tmux capture-pane: %v", err)
	}
	return string(out)
}

// waitScreen captures the pane each time its output stream grows until
// ok holds for what it shows, and returns that screen.
func (tm *terminal) waitScreen(what string, ok func(screen string) bool) string {
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
			tm.t.Fatalf("the terminal closed before it showed %s; it shows:\n%s", what, s)
		}
		select {
		case <-more:
		case <-deadline.C:
			tm.t.Fatalf("the screen never showed %s in %v; it shows:\n%s", what, terminalWait, s)
		}
	}
}

// waitText waits for text on the screen.
func (tm *terminal) waitText(text string) string {
	tm.t.Helper()
	return tm.waitScreen(strconvQuote(text), func(s string) bool { return strings.Contains(s, text) })
}

func strconvQuote(s string) string { return `"` + s + `"` }

// keys sends tmux key names (Enter, C-u, Escape…).
func (tm *terminal) keys(names ...string) {
	tm.t.Helper()
	tm.tmux(append([]string{"send-keys", "-t", "kez"}, names...)...)
}

// figures matches the progress figures of a fetch under way.
var figures = regexp.MustCompile(`(\d+)%\s+([0-9.]+ [KMG]?i?B) / 6\.0 MiB`)

// TestUIFilesFetch: bob shares a file and serves it (kez share, kez serve
// with its upload capped so that the transfer takes seconds); alice's kez
// ui opens bob's files with f, fetches it to the path she typed and shows
// the progress bar; she quits halfway (Ctrl+C: what was verified is
// kept); a second kez ui fetches it again, says it resumes, ends with the
// route sentence, and the file matches. Then alice shares and unshares a
// file of her own from the s screen.
func TestUIFilesFetch(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice := with(st.Env(au), "KEZ_P2P_LISTEN", loopback)
	bob := with(st.Env(bu), "KEZ_P2P_LISTEN", loopback)

	data := make([]byte, 6<<20)
	mrand.NewChaCha8([32]byte{20}).Read(data)
	src := filepath.Join(t.TempDir(), "report.bin")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, bob, "", "share", src)
	bout, berr := newWatchWriter("Online as @bob@kez.test"), newWatchWriter()
	background(t, bob, bout, berr, "serve", "--max-upload-rate", "512k")
	bout.await(t, "Online as @bob@kez.test")
	mustRun(t, alice, "", "contacts", "add", "bob")

	dst := filepath.Join(t.TempDir(), "got", "report.bin")
	os.MkdirAll(filepath.Dir(dst), 0o700)
	fetch := func(tm *terminal) {
		tm.waitText("bob")
		tm.waitText("serving 0 files")
		tm.keys("f")
		tm.waitText("report.bin")
		tm.keys("Enter")
		tm.waitText("Save to:")
		tm.keys("C-u")
		tm.tmux("send-keys", "-t", "kez", "-l", dst)
		tm.keys("Enter")
	}

	tm := startTerminal(t, alice, "ui")
	fetch(tm)
	running := tm.waitScreen("a fetch under way", func(s string) bool {
		m := figures.FindStringSubmatch(s)
		return m != nil && m[1] != "0" && m[1] != "100" && strings.Contains(s, "fetching report.bin from bob@kez.test")
	})
	if !strings.Contains(running, "█") || !strings.Contains(running, "░") {
		t.Errorf("no progress bar:\n%s", running)
	}
	tm.keys("C-c")
	tm.waitFor("[exit 0]")
	part, err := os.Stat(dst + files.PartialSuffix)
	if err != nil || part.Size() == 0 {
		t.Fatalf("no partial file kept after quitting: %v", err)
	}
	if _, err := os.Stat(dst); err == nil {
		t.Fatal("the whole file is there after an interrupted fetch")
	}

	tm = startTerminal(t, alice, "ui")
	fetch(tm)
	tm.waitText("resuming report.bin from bob@kez.test")
	done := tm.waitText(`Fetched "report.bin" (6.0 MiB) from bob@kez.test directly.`)
	if !strings.Contains(done, "Saved to "+dst) {
		t.Errorf("no Saved to line:\n%s", done)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the fetched file differs (%v)", err)
	}
	uiFixture(t, "files_fetched.txt", done, map[string]string{filepath.Dir(dst): "DIR"})

	// Her own shares: a path that is no file is refused in words; a file
	// is shared, counted on the status line, and unshared.
	tm.keys("Escape")
	// The next key only once Esc was taken alone (Esc then s is Alt+s).
	tm.waitScreen("the list again", func(s string) bool { return !strings.Contains(s, "shares with you") })
	tm.keys("s")
	tm.waitText("You share no files")
	tm.keys("a")
	tm.waitText("Share file:")
	tm.tmux("send-keys", "-t", "kez", "-l", dst+".nothing")
	tm.keys("Enter")
	tm.waitText("there is no file at " + dst + ".nothing")
	tm.keys("a")
	tm.waitText("Share file:")
	tm.tmux("send-keys", "-t", "kez", "-l", dst)
	tm.keys("Enter")
	tm.waitText("Shared report.bin (6.0 MiB) publicly.")
	tm.waitText("serving 1 file")
	tm.keys("u")
	tm.waitText("Unshared report.bin")
	tm.waitText("serving 0 files")
	tm.keys("C-c")
	tm.waitFor("[exit 0]")
}

// uiFixture compares a captured screen, normalised (the replacements,
// then trailing spaces), with testdata/ui/name; -update-ui-files
// rewrites it.
func uiFixture(t *testing.T, name, screen string, repl map[string]string) {
	t.Helper()
	for from, to := range repl {
		screen = strings.ReplaceAll(screen, from, to)
	}
	lines := strings.Split(strings.TrimRight(screen, "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	screen = strings.Join(lines, "\n") + "\n"
	path := filepath.Join("testdata", "ui", name)
	if *updateUIFiles {
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, []byte(screen), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update-ui-files to write it)", err)
	}
	if string(want) != screen {
		t.Errorf("the screen differs from %s:\n%s\nwant:\n%s", path, screen, want)
	}
}
