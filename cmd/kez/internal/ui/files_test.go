package ui

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"

	tea "charm.land/bubbletea/v2"
	"github.com/charmbracelet/x/ansi"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
)

// hostileNames are file names a contact's signed list could hold if their
// client (or the format's checks) let them through.
var hostileNames = []string{
	"\x1b[2J\x1b[Hpwned",            // clear the screen, home the cursor
	"\x1b]0;title\x07bell",          // set the window title
	"evil\u202etxt.exe",             // right-to-left override
	"../../.ssh/authorized_keys",    // a path out of the download folder
	"..",                            // a name that is no name
	"a\r\nb\tc\x00d",                // line breaks, a tab, a NUL
	"\xff\xfeinvalid utf-8",         // not UTF-8
	strings.Repeat("W", 300) + ".x", // longer than the screen
	`C:\Windows\win.ini`,            // a Windows path
}

func newTestView(t *testing.T) *filesView {
	t.Helper()
	v := newFilesView(&Config{DownloadDir: t.TempDir()})
	t.Cleanup(v.close)
	return v
}

// contactView is v showing bob's files, as if Browse had returned entries.
func contactView(v *filesView, entries []format.Entry) {
	v.showContact("bob@kez.test")
	v.update(browsedMsg{gen: v.gen, entries: entries})
}

func key(s string) tea.KeyPressMsg {
	switch s {
	case "enter":
		return tea.KeyPressMsg{Code: tea.KeyEnter}
	case "esc":
		return tea.KeyPressMsg{Code: tea.KeyEscape}
	case "down":
		return tea.KeyPressMsg{Code: tea.KeyDown}
	case "end":
		return tea.KeyPressMsg{Code: tea.KeyEnd}
	}
	r := []rune(s)[0]
	return tea.KeyPressMsg{Code: r, Text: s}
}

// checkScreen asserts that a drawn screen fits width×height and that,
// its styling taken away, it holds nothing but printable text.
func checkScreen(t *testing.T, screen string, width, height int) string {
	t.Helper()
	lines := strings.Split(screen, "\n")
	if len(lines) > height {
		t.Errorf("%d lines in a screen of %d", len(lines), height)
	}
	for _, l := range lines {
		if w := ansi.StringWidth(l); w > width {
			t.Errorf("a line of %d cells in a screen of %d: %q", w, width, ansi.Strip(l))
		}
	}
	plain := ansi.Strip(screen)
	for _, r := range plain {
		if r != '\n' && !unicode.IsGraphic(r) {
			t.Errorf("the screen holds %U: %q", r, plain)
			break
		}
	}
	return plain
}

func TestFilesViewHostileNames(t *testing.T) {
	v := newTestView(t)
	var entries []format.Entry
	for i, n := range hostileNames {
		entries = append(entries, format.Entry{Name: n, Size: int64(i) << 20, Private: i%2 == 1})
	}
	contactView(v, entries)
	for _, size := range [][2]int{{80, 24}, {54, 20}, {30, 6}, {200, 50}} {
		plain := checkScreen(t, v.view(size[0], size[1]), size[0], size[1])
		if size[0] == 200 && (!strings.Contains(plain, "[2J[Hpwned") || !strings.Contains(plain, "eviltxt.exe")) {
			t.Errorf("a name is not drawn as inert text:\n%s", plain)
		}
	}

	// Enter on each: the proposed path is a file right in the download
	// folder, whatever the name.
	for i := range hostileNames {
		v.sel = i
		v.update(key("enter"))
		if v.prompt != promptSave {
			t.Fatalf("no Save to prompt")
		}
		proposed := v.input.Value()
		if filepath.Dir(proposed) != v.cfg.DownloadDir {
			t.Errorf("%q: proposed %q, outside %s", hostileNames[i], proposed, v.cfg.DownloadDir)
		}
		p, err := savePath(v.cfg.DownloadDir, proposed, hostileNames[i])
		if err != nil || p != proposed {
			t.Errorf("%q: the confirmed %q resolves to %q (%v)", hostileNames[i], proposed, p, err)
		}
		checkScreen(t, v.view(80, 24), 80, 24)
		v.update(key("esc"))
		if v.prompt != promptNone {
			t.Fatalf("Esc left the prompt open")
		}
	}
}

func TestFilesViewThousandEntries(t *testing.T) {
	v := newTestView(t)
	entries := make([]format.Entry, 1000)
	for i := range entries {
		entries[i] = format.Entry{Name: fmt.Sprintf("file-%04d.bin", i), Size: int64(i)}
	}
	contactView(v, entries)
	plain := checkScreen(t, v.view(80, 24), 80, 24)
	if !strings.Contains(plain, "› file-0000.bin") || strings.Contains(plain, "file-0100.bin") {
		t.Errorf("first screen:\n%s", plain)
	}
	v.update(key("end"))
	plain = checkScreen(t, v.view(80, 24), 80, 24)
	if !strings.Contains(plain, "› file-0999.bin") {
		t.Errorf("after End:\n%s", plain)
	}
	v.update(key("down"))
	if v.sel != 999 {
		t.Errorf("moved past the end: %d", v.sel)
	}
	if done, _ := v.update(key("esc")); !done {
		t.Errorf("Esc did not leave the screen")
	}
}

// TestSavePathStaysConfirmed: the fetch writes where the user confirmed;
// a folder gets the file under its cleaned name, never a path out of it.
func TestSavePathStaysConfirmed(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, n := range hostileNames {
		p, err := savePath(dir, "sub", n)
		if err != nil || filepath.Dir(p) != sub {
			t.Errorf("%q into a folder: %q (%v)", n, p, err)
		}
	}
	if p, _ := savePath(dir, "notes.txt", "x"); p != filepath.Join(dir, "notes.txt") {
		t.Errorf("a relative path: %q", p)
	}
	if p, _ := savePath(dir, "/tmp/a/../b", "x"); p != "/tmp/b" {
		t.Errorf("an absolute path: %q", p)
	}
	if _, err := savePath(dir, "  ", "x"); err == nil {
		t.Errorf("an empty path was accepted")
	}
}

func TestOwnViewPrompts(t *testing.T) {
	v := newTestView(t)
	v.showOwn()
	if v.status() != "files offline" {
		t.Errorf("status before setSharing: %q", v.status())
	}
	plain := checkScreen(t, v.view(80, 24), 80, 24)
	if !strings.Contains(plain, "files are not open yet") {
		t.Errorf("offline own screen:\n%s", plain)
	}
	v.update(key("p"))
	if v.prompt != promptShare || v.input.Prompt != "Share file: " {
		t.Fatalf("p: prompt %d %q", v.prompt, v.input.Prompt)
	}
	for _, r := range "notes.txt" {
		v.update(key(string(r)))
	}
	v.update(key("enter"))
	if v.prompt != promptTo || v.path != filepath.Join(v.cfg.DownloadDir, "notes.txt") {
		t.Fatalf("after the path: prompt %d, path %q", v.prompt, v.path)
	}
	plain = checkScreen(t, v.view(80, 24), 80, 24)
	if !strings.Contains(plain, "To: ") {
		t.Errorf("no To prompt:\n%s", plain)
	}
	for _, r := range " , @ ," {
		v.update(key(string(r)))
	}
	v.update(key("enter"))
	if !strings.Contains(v.note, "needs at least one handle") || !v.noteErr || v.prompt != promptNone {
		t.Errorf("a private share to no one: %q", v.note)
	}
	v.update(key("p"))
	v.update(key("x"))
	v.update(key("enter"))
	v.update(key("b"))
	v.update(key("enter"))
	if !strings.Contains(v.note, "not open yet") || !v.noteErr {
		t.Errorf("a share while offline: %q", v.note)
	}
}

// TestTransferProgressNeverBlocks: the progress callback returns at once
// however often the fetch calls it with no one reading, and the screen
// then gets the latest figures.
func TestTransferProgressNeverBlocks(t *testing.T) {
	tr := &transfer{handle: "bob@kez.test", name: "big.bin", notify: make(chan struct{}, 1), done: make(chan struct{})}
	for i := int64(1); i <= 100000; i++ {
		tr.progress(i, 100000)
	}
	msg := tr.wait()()
	if m, ok := msg.(transferMsg); !ok || m.t != tr {
		t.Fatalf("wait returned %#v", msg)
	}
	if tr.verified.Load() != 100000 {
		t.Errorf("verified %d", tr.verified.Load())
	}
	v := newTestView(t)
	v.transfers = append(v.transfers, tr)
	if cmd := v.transferred(tr); cmd == nil {
		t.Errorf("a running fetch is not waited for")
	}
	tr.verified.Store(50000)
	plain := checkScreen(t, v.view(80, 24), 80, 24)
	if !strings.Contains(plain, "fetching big.bin from bob@kez.test") || !strings.Contains(plain, " 50%") {
		t.Errorf("running fetch:\n%s", plain)
	}
	tr.err = &files.OfflineError{Owner: "bob@kez.test"}
	close(tr.done)
	v.transferred(tr)
	plain = checkScreen(t, v.view(80, 24), 80, 24)
	if !strings.Contains(plain, "bob@kez.test is offline") {
		t.Errorf("ended fetch:\n%s", plain)
	}
}

func TestFetchSentences(t *testing.T) {
	v := newTestView(t)
	cases := []struct {
		err  error
		want string
	}{
		{&files.OfflineError{Owner: "bob@kez.test"}, "bob@kez.test is offline: ask them to open kez ui or run kez serve"},
		{&files.UnreachableError{Owner: "bob@kez.test", Addrs: 1}, "bob@kez.test's device is online but cannot be reached"},
		{&files.NotSharedError{Owner: "bob@kez.test", What: "x\x1b"}, `shares no file named "x\x1b"`},
		{fmt.Errorf("files: %w (the owner says: changed)", files.ErrNotFound), "bob@kez.test no longer has that file"},
		{files.ErrForbidden, "privately with others, not with you"},
		{&os.PathError{Op: "fetch to", Path: "/d/x", Err: os.ErrExist}, "/d/x already exists"},
	}
	for _, c := range cases {
		if got := v.fetchSentence(c.err, "bob@kez.test", 0, 0); !strings.Contains(got, c.want) {
			t.Errorf("%v: %q, want %q in it", c.err, got, c.want)
		}
	}
	if got := v.fetchSentence(fmt.Errorf("x: %w", files.ErrClosed), "bob@kez.test", 1<<20, 4<<20); !strings.Contains(got, "1.0 MiB of 4.0 MiB verified, which is kept") {
		t.Errorf("interrupted: %q", got)
	}
}

// FuzzSaveName: whatever a contact names a file, the proposed save path
// is a file right in the download folder.
func FuzzSaveName(f *testing.F) {
	for _, n := range hostileNames {
		f.Add(n)
	}
	f.Add("notes.txt")
	f.Fuzz(func(t *testing.T, s string) {
		dir := filepath.FromSlash("/downloads")
		name := saveName(s)
		if p := filepath.Join(dir, name); filepath.Dir(p) != dir || name == "" || name == "." || name == ".." {
			t.Fatalf("saveName(%q) = %q leaves the folder", s, name)
		}
		for _, r := range name {
			if !unicode.IsGraphic(r) {
				t.Fatalf("saveName(%q) holds %U", s, r)
			}
		}
	})
}
