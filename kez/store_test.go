package kez

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"filippo.io/age"
)

// testWorkFactor keeps scrypt cheap in tests (2^10: about a millisecond).
var testWorkFactor = WithScryptWorkFactor(10)

func TestSaveLoadPlain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "kez")
	id := mustIdentity(t, countingWords)
	if ok, err := HasIdentity(dir); ok || err != nil {
		t.Fatalf("HasIdentity before save: %v %v", ok, err)
	}
	if err := SaveIdentity(dir, id, nil); err != nil {
		t.Fatal(err)
	}
	checkModes(t, dir, true)
	data, _ := os.ReadFile(IdentityPath(dir))
	if !bytes.HasPrefix(data, []byte("kez-identity/v1\nkey: "+id.PublicKey().String()+"\nseed: ")) {
		t.Fatalf("plain file:\n%s", data)
	}
	got, err := LoadIdentity(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.PublicKey() != id.PublicKey() || !bytes.Equal(got.Seed(), id.Seed()) {
		t.Fatal("loaded a different identity")
	}
	if ok, _ := HasIdentity(dir); !ok {
		t.Fatal("HasIdentity after save")
	}
}

func TestSaveLoadEncrypted(t *testing.T) {
	dir := t.TempDir()
	id := mustIdentity(t, countingWords)
	pass := []byte("correct horse battery staple")
	if err := SaveIdentity(dir, id, pass, testWorkFactor); err != nil {
		t.Fatal(err)
	}
	checkModes(t, dir, false)
	data, _ := os.ReadFile(IdentityPath(dir))
	if !bytes.HasPrefix(data, []byte("age-encryption.org/v1\n-> scrypt ")) {
		t.Fatalf("not an age scrypt file:\n%q", data[:min(len(data), 80)])
	}
	if bytes.Contains(data, []byte(id.PublicKey().String())) {
		t.Fatal("the encrypted file shows the key in clear")
	}
	got, err := LoadIdentity(dir, pass)
	if err != nil {
		t.Fatal(err)
	}
	if got.PublicKey() != id.PublicKey() {
		t.Fatal("loaded a different identity")
	}
	if _, err := LoadIdentity(dir, nil); !errors.Is(err, ErrPassphraseRequired) {
		t.Errorf("no passphrase: %v", err)
	}
	if _, err := LoadIdentity(dir, []byte("wrong")); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("wrong passphrase: %v", err)
	}
}

func TestLoadNoIdentity(t *testing.T) {
	_, err := LoadIdentity(filepath.Join(t.TempDir(), "missing"), nil)
	if !errors.Is(err, ErrNoIdentity) {
		t.Fatalf("got %v", err)
	}
}

func TestSaveRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	a := mustIdentity(t, countingWords)
	b := mustIdentity(t, strings.Repeat("zoo ", 23)+"vote")
	if err := SaveIdentity(dir, a, nil); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(IdentityPath(dir))
	if err := SaveIdentity(dir, b, nil); !errors.Is(err, ErrIdentityExists) {
		t.Fatalf("second save: %v", err)
	}
	after, _ := os.ReadFile(IdentityPath(dir))
	if !bytes.Equal(before, after) {
		t.Fatal("a refused save changed the file")
	}
	if err := SaveIdentity(dir, b, []byte("pw"), Overwrite(), testWorkFactor); err != nil {
		t.Fatal(err)
	}
	got, err := LoadIdentity(dir, []byte("pw"))
	if err != nil || got.PublicKey() != b.PublicKey() {
		t.Fatalf("after overwrite: %v", err)
	}
	checkNoTempFiles(t, dir)
}

func TestSaveRaceOnlyOneWins(t *testing.T) {
	dir := t.TempDir()
	ids := []*Identity{mustIdentity(t, countingWords), mustIdentity(t, strings.Repeat("zoo ", 23)+"vote")}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = SaveIdentity(dir, id, nil)
		}()
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		if err == nil {
			wins++
		} else if !errors.Is(err, ErrIdentityExists) {
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d saves won, want exactly 1", wins)
	}
	checkNoTempFiles(t, dir)
}

func TestLoadRefusesOpenPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	dir := t.TempDir()
	if err := SaveIdentity(dir, mustIdentity(t, countingWords), nil); err != nil {
		t.Fatal(err)
	}
	path := IdentityPath(dir)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o606} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadIdentity(dir, nil)
		if !errors.Is(err, ErrInsecurePermissions) || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Errorf("mode %o: %v", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := LoadIdentity(dir, nil); err != nil {
		t.Errorf("mode 0400: %v", err)
	}
}

func TestLoadBadFiles(t *testing.T) {
	id := mustIdentity(t, countingWords)
	plain := encodePlain(id)
	enc, err := EncodeIdentityFile(id, []byte("pw"), 10)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":           {},
		"ssh key":         []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n"),
		"armored age":     []byte("-----BEGIN AGE ENCRYPTED FILE-----\n"),
		"truncated plain": plain[:len(plain)-10],
		"truncated head":  plain[:5],
		"truncated age":   enc[:len(enc)/2],
		"age header only": enc[:30],
		"flipped seed":    bytes.Replace(plain, []byte("seed: "), []byte("seed: A"), 1),
		"crlf":            bytes.ReplaceAll(plain, []byte("\n"), []byte("\r\n")),
		"bigger than any": bytes.Repeat([]byte("x"), maxIdentityFile+1),
		"v2":              bytes.Replace(plain, []byte("v1"), []byte("v2"), 1),
	}
	flipped := bytes.Clone(enc)
	flipped[len(flipped)-5] ^= 1
	cases["tampered age payload"] = flipped
	for name, data := range cases {
		dir := t.TempDir()
		if err := os.WriteFile(IdentityPath(dir), data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadIdentity(dir, []byte("pw"))
		if !errors.Is(err, ErrBadIdentityFile) {
			t.Errorf("%s: got %v, want ErrBadIdentityFile", name, err)
			continue
		}
		if !strings.Contains(err.Error(), IdentityPath(dir)) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	// An age file encrypted to a key, not a passphrase, is not ours.
	x, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w, _ := age.Encrypt(&buf, x.Recipient())
	w.Write(plain)
	w.Close()
	if _, err := DecodeIdentityFile(buf.Bytes(), []byte("pw")); !errors.Is(err, ErrBadIdentityFile) || !strings.Contains(err.Error(), "X25519") {
		t.Errorf("age file to a key: %v", err)
	}
	// A folder in place of the file.
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, IdentityFileName), 0o700)
	if _, err := LoadIdentity(dir, nil); !errors.Is(err, ErrBadIdentityFile) {
		t.Errorf("a folder in place of the file: %v", err)
	}
}

func TestSaveNilIdentity(t *testing.T) {
	if err := SaveIdentity(t.TempDir(), nil, nil); err == nil {
		t.Fatal("saved a nil identity")
	}
	if _, err := EncodeIdentityFile(mustIdentity(t, countingWords), []byte("pw"), 40); err == nil {
		t.Fatal("accepted work factor 40")
	}
}

// checkModes checks the file is 0600 and, if SaveIdentity created the
// folder, that it is 0700 (an existing folder keeps its mode).
func checkModes(t *testing.T, dir string, created bool) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	if created {
		st, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o700 {
			t.Errorf("folder mode %o, want 700", st.Mode().Perm())
		}
	}
	st, err := os.Stat(IdentityPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("file mode %o, want 600", st.Mode().Perm())
	}
	checkNoTempFiles(t, dir)
}

func checkNoTempFiles(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != IdentityFileName {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
