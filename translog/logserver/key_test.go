package logserver

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

func TestLoadOrCreateKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "log.key")
	s, v, err := LoadOrCreateKey(path, "example.com/sigchain-log")
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "example.com/sigchain-log" || v.Name() != s.Name() {
		t.Fatalf("names %q %q", s.Name(), v.Name())
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi, err)
	}
	// Read again: the same key, by origin or by any name.
	for _, origin := range []string{"example.com/sigchain-log", ""} {
		s2, _, err := LoadOrCreateKey(path, origin)
		if err != nil {
			t.Fatal(err)
		}
		if s2.KeyHash() != s.KeyHash() || s2.(verifierKeyer).VerifierKey() != s.(verifierKeyer).VerifierKey() {
			t.Fatal("a second load gave another key")
		}
	}
	msg, err := note.Sign(&note.Note{Text: "x\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(path, "another/origin"); !errors.Is(err, ErrBadKey) {
		t.Errorf("another origin: %v, want ErrBadKey", err)
	}
	if _, _, err := LoadOrCreateKey(filepath.Join(dir, "new.key"), ""); !errors.Is(err, ErrBadKey) {
		t.Errorf("a new key without origin: %v, want ErrBadKey", err)
	}
	if _, _, err := LoadOrCreateKey(filepath.Join(dir, "bad.key"), "has space"); !errors.Is(err, ErrBadKey) {
		t.Errorf("an origin with a space: %v, want ErrBadKey", err)
	}
}

// Key files that are not one key pair are refused.
func TestLoadKeyAbuse(t *testing.T) {
	dir := t.TempDir()
	skey1, vkey1, _ := note.GenerateKey(nil, "o")
	_, vkey2, _ := note.GenerateKey(nil, "o")
	for name, text := range map[string]string{
		"empty":           "",
		"one line":        skey1 + "\n",
		"three lines":     skey1 + "\n" + vkey1 + "\n" + vkey1 + "\n",
		"mismatched pair": skey1 + "\n" + vkey2 + "\n",
		"swapped":         vkey1 + "\n" + skey1 + "\n",
		"garbage":         "PRIVATE+KEY+o+00000000+AAAA\nnonsense\n",
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := LoadOrCreateKey(path, ""); !errors.Is(err, ErrBadKey) {
			t.Errorf("%s: %v, want ErrBadKey", name, err)
		}
	}
}
