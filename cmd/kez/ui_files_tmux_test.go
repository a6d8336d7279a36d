package main

import (
	"bytes"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

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
		tm.waitShows("bob")
		tm.waitShows("serving 0 files")
		tm.keys("f")
		tm.waitShows("report.bin")
		tm.keys("Enter")
		tm.waitShows("Save to:")
		tm.keys("C-u")
		tm.typeText(dst)
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
	tm.waitShows("resuming report.bin from bob@kez.test")
	done := tm.waitShows(`Fetched "report.bin" (6.0 MiB) from bob@kez.test directly.`)
	if !strings.Contains(done, "Saved to "+dst) {
		t.Errorf("no Saved to line:\n%s", done)
	}
	if got, err := os.ReadFile(dst); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the fetched file differs (%v)", err)
	}
	matchFixture(t, "files_fetched", strings.ReplaceAll(done, filepath.Dir(dst), "DIR"))

	// Her own shares: a path that is no file is refused in words; a file
	// is shared, counted on the status line, and unshared.
	tm.keys("Escape")
	// The next key only once Esc was taken alone (Esc then s is Alt+s).
	tm.waitGone("shares with you")
	tm.keys("s")
	tm.waitShows("You share no files")
	tm.keys("a")
	tm.waitShows("Share file:")
	tm.typeText(dst + ".nothing")
	tm.keys("Enter")
	tm.waitShows("there is no file at " + dst + ".nothing")
	tm.keys("a")
	tm.waitShows("Share file:")
	tm.typeText(dst)
	tm.keys("Enter")
	tm.waitShows("Shared report.bin (6.0 MiB) publicly.")
	tm.waitShows("serving 1 file")
	tm.keys("u")
	tm.waitShows("Unshared report.bin")
	tm.waitShows("serving 0 files")
	tm.keys("C-c")
	tm.waitFor("[exit 0]")
}
