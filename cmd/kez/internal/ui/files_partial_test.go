package ui

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
)

// TestSaveRefusesPlantedPartial: a fetch resumes into PATH.kez-partial
// if one is there. Someone who can write in the download folder (a shared
// folder, say) could plant one: a link to another of the user's files
// (the fetch would write into it), or a file of theirs others may write
// (the plaintext of a private file would land in a file they read). The
// Save to prompt refuses both before anything is fetched; a partial file
// the user's own fetch left (a regular file, theirs, 0600) is resumed.
func TestSaveRefusesPlantedPartial(t *testing.T) {
	v := newTestView(t)
	dir := v.cfg.DownloadDir
	victim := filepath.Join(t.TempDir(), "bashrc")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	save := func(name string) {
		t.Helper()
		contactView(v, []format.Entry{{Name: name, Size: 10}})
		v.update(key("enter"))
		if v.prompt != promptSave {
			t.Fatalf("no Save to prompt")
		}
		v.update(key("enter"))
	}

	// A link planted at the partial file.
	if err := os.Symlink(victim, filepath.Join(dir, "a.txt"+files.PartialSuffix)); err != nil {
		t.Fatal(err)
	}
	save("a.txt")
	if !v.noteErr || !strings.Contains(v.note, "a.txt"+files.PartialSuffix) {
		t.Errorf("a planted link: the note is %q (error %v)", v.note, v.noteErr)
	}

	// A partial file others may write to.
	p := filepath.Join(dir, "b.txt"+files.PartialSuffix)
	if err := os.WriteFile(p, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o666)
	save("b.txt")
	if !v.noteErr || !strings.Contains(v.note, "b.txt"+files.PartialSuffix) {
		t.Errorf("a partial file others may write: the note is %q (error %v)", v.note, v.noteErr)
	}

	// A link planted at the state file.
	if err := os.Symlink(victim, filepath.Join(dir, "c.txt"+files.StateSuffix)); err != nil {
		t.Fatal(err)
	}
	save("c.txt")
	if !v.noteErr || !strings.Contains(v.note, "c.txt"+files.StateSuffix) {
		t.Errorf("a planted state file: the note is %q (error %v)", v.note, v.noteErr)
	}

	// The user's own partial file passes the check (and then meets the
	// offline sharing of this test).
	if err := os.WriteFile(filepath.Join(dir, "d.txt"+files.PartialSuffix), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	save("d.txt")
	if strings.Contains(v.note, files.PartialSuffix) {
		t.Errorf("the user's own partial file was refused: %q", v.note)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Errorf("the linked file now holds %q", b)
	}
}
