package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
)

// countingWords is the spec vector for entropy 0x00..0x1f and its key.
const (
	countingWords = "abandon amount liar amount expire adjust cage candy arch gather drum bullet absurd math era live bid rhythm alien crouch range attend journey unaware"
	countingKey   = "UBVBZNUTHDTVHMOZSAYLL6QRMPIF2VSCE5XXKBYZLM267E6TX3JHCCAR"
)

func idJSONOf(t *testing.T, environ map[string]string, home string) idJSON {
	t.Helper()
	r := mustRun(t, environ, "", "id", "--json", "--home", home)
	var out idJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("kez id --json: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{`"handle"`, `"key"`, `"peer_id"`, `"fingerprint"`} {
		if !strings.Contains(r.stdout, k) {
			t.Errorf("kez id --json lacks %s: %s", k, r.stdout)
		}
	}
	return out
}

func TestInitWordsFileRecoverRoundTrip(t *testing.T) {
	dir := t.TempDir()
	homeA, homeB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	wf := filepath.Join(dir, "words.txt")
	r := mustRun(t, nil, "", "init", "--yes", "--words-file", wf, "--home", homeA)
	if !strings.Contains(r.stdout, "NOT encrypted") || !strings.Contains(r.stdout, wf) {
		t.Errorf("init output:\n%s", r.stdout)
	}
	words, err := os.ReadFile(wf)
	if err != nil {
		t.Fatal(err)
	}
	// The words are in the file, not on stdout.
	m, err := kez.ParseMnemonic(string(words))
	if err != nil {
		t.Fatalf("the words file does not parse: %v\n%s", err, words)
	}
	for _, w := range m.Words()[:3] {
		if strings.Contains(r.stdout, ". "+w+" ") || strings.Contains(r.stdout, ". "+w+"\n") { // as formatWords lays them out
			t.Errorf("init printed the words although --words-file was given")
		}
	}
	checkMode(t, wf, 0o600)
	checkMode(t, kez.IdentityPath(homeA), 0o600)
	checkMode(t, homeA, 0o700)

	mustRun(t, nil, "", "recover", "--words-file", wf, "--home", homeB)
	a, b := idJSONOf(t, nil, homeA), idJSONOf(t, nil, homeB)
	if a != b {
		t.Fatalf("recovered a different identity:\n%+v\n%+v", a, b)
	}
	if a.Handle != "" || !strings.HasPrefix(a.Key, "U") || !strings.HasPrefix(a.PeerID, "12D3KooW") || len(a.Fingerprint) != 35 {
		t.Errorf("id --json: %+v", a)
	}
	// KEZ_HOME works as the flag's twin.
	if c := idJSONOf(t, map[string]string{"KEZ_HOME": homeB}, ""); c != b {
		t.Errorf("KEZ_HOME: %+v", c)
	}
}

func TestInitRecallCheckRight(t *testing.T) {
	plan := planInit(t, fixedRand(t, 1))
	pos := plan.nextRound()
	home := filepath.Join(t.TempDir(), "h")
	r := mustRun(t, nil, plan.answers(pos), "init", "--home", home)
	if strings.Count(r.stdout, formatWords(plan.words)) != 1 {
		t.Errorf("the words should be shown exactly once:\n%s", r.stdout)
	}
	for _, p := range pos {
		if !strings.Contains(r.stdout, "Word #"+itoa(p+1)+": ") {
			t.Errorf("did not ask for word #%d", p+1)
		}
	}
	id, err := kez.FromWords(strings.Join(plan.words, " "))
	if err != nil {
		t.Fatal(err)
	}
	if got := idJSONOf(t, nil, home); got.Key != id.PublicKey().String() {
		t.Errorf("saved %s, want the identity of the shown words %s", got.Key, id.PublicKey())
	}
	// Answers in another case, with spaces, are right too.
	plan = planInit(t, fixedRand(t, 2))
	pos = plan.nextRound()
	mustRun(t, nil, strings.ToUpper(strings.ReplaceAll(plan.answers(pos), "\n", "  \r\n")), "init", "--home", filepath.Join(t.TempDir(), "h2"))
}

func TestInitRecallCheckWrongThreeTimesShowsWordsAgain(t *testing.T) {
	plan := planInit(t, fixedRand(t, 3))
	first := plan.nextRound()
	second := plan.nextRound()
	// Round 1: the first word right, then three wrong answers; round 2: right.
	stdin := plan.words[first[0]] + "\nwrong\nwronger\nwrongest\n" + plan.answers(second)
	home := filepath.Join(t.TempDir(), "h")
	r := mustRun(t, nil, stdin, "init", "--home", home)
	if n := strings.Count(r.stdout, formatWords(plan.words)); n != 2 {
		t.Errorf("words shown %d times, want 2 (again after three wrong answers):\n%s", n, r.stdout)
	}
	if !strings.Contains(r.stdout, "look again") || !strings.Contains(r.stdout, "Here are your words again") {
		t.Errorf("no retry guidance:\n%s", r.stdout)
	}
	if ok, _ := kez.HasIdentity(home); !ok {
		t.Fatal("identity not saved after a right second round")
	}
}

func TestInitRecallUnfinishedSavesNothing(t *testing.T) {
	plan := planInit(t, fixedRand(t, 4))
	pos := plan.nextRound()
	dir := t.TempDir()
	home, wf := filepath.Join(dir, "h"), filepath.Join(dir, "words")
	for _, stdin := range []string{"", plan.words[pos[0]] + "\n", "wrong\nwrong\nwrong\nwrong\n"} {
		fixedRand(t, 4)
		r := kezCmd(t, nil, stdin, "init", "--home", home, "--words-file", wf)
		if r.code != 1 || !strings.Contains(r.stderr, "nothing was saved") || !strings.Contains(r.stderr, "--yes") {
			t.Errorf("stdin %q: exit %d, stderr %q", stdin, r.code, r.stderr)
		}
		if ok, _ := kez.HasIdentity(home); ok {
			t.Fatal("an unfinished init saved an identity")
		}
		if _, err := os.Stat(wf); !os.IsNotExist(err) {
			t.Fatal("an unfinished init left its words file behind")
		}
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "h")
	mustRun(t, nil, "", "init", "--yes", "--home", home)
	before := idJSONOf(t, nil, home)
	r := kezCmd(t, nil, "", "init", "--yes", "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("second init: %+v", r)
	}
	if idJSONOf(t, nil, home) != before {
		t.Fatal("a refused init changed the identity")
	}
	mustRun(t, nil, "", "init", "--yes", "--force", "--home", home)
	if idJSONOf(t, nil, home).Key == before.Key {
		t.Fatal("init --force kept the old key")
	}
	// A words file is never overwritten.
	wf := filepath.Join(dir, "words")
	os.WriteFile(wf, []byte("my old backup"), 0o600)
	r = kezCmd(t, nil, "", "init", "--yes", "--force", "--words-file", wf, "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("init over a words file: %+v", r)
	}
	if b, _ := os.ReadFile(wf); string(b) != "my old backup" {
		t.Fatal("the old words file was overwritten")
	}
	if r := kezCmd(t, nil, "", "init", "extra"); r.code != 2 {
		t.Errorf("init with an argument: exit %d", r.code)
	}
}

func TestRecoverFromStdin(t *testing.T) {
	var numbered strings.Builder
	for i, w := range strings.Fields(countingWords) {
		numbered.WriteString(itoa(i+1) + ") " + strings.ToUpper(w) + "\n")
	}
	for name, stdin := range map[string]string{
		"one line":   countingWords,
		"numbered":   numbered.String(),
		"words file": "# comment\n\n" + formatWords(strings.Fields(countingWords)),
		"spread":     strings.Join(strings.Fields(countingWords)[:10], " ") + "\n\n" + strings.Join(strings.Fields(countingWords)[10:], " ") + "\n",
	} {
		home := filepath.Join(t.TempDir(), "h")
		r := mustRun(t, nil, stdin, "recover", "--home", home)
		if !strings.Contains(r.stdout, countingKey) {
			t.Errorf("%s: output lacks the key:\n%s", name, r.stdout)
		}
		if got := idJSONOf(t, nil, home); got.Key != countingKey {
			t.Errorf("%s: recovered %s", name, got.Key)
		}
	}
}

func TestRecoverBadWords(t *testing.T) {
	w := strings.Fields(countingWords)
	typo := append([]string(nil), w...)
	typo[4] = "expyre"
	swapped := append([]string(nil), w...)
	swapped[0], swapped[1] = swapped[1], swapped[0]
	for _, c := range []struct {
		name, stdin string
		want        []string
	}{
		{"typo", strings.Join(typo, " "), []string{"word 5", `"expyre"`, `"expire"`, "nothing was saved"}},
		{"23 words", strings.Join(w[:23], " "), []string{"24 words", "got 23"}},
		{"25 words", countingWords + " zoo", []string{"24 words", "got 25"}},
		{"checksum", strings.Join(swapped, " "), []string{"checksum"}},
		{"empty", "", []string{"got 0"}},
	} {
		home := filepath.Join(t.TempDir(), "h")
		r := kezCmd(t, nil, c.stdin, "recover", "--home", home)
		if r.code != 1 {
			t.Errorf("%s: exit %d", c.name, r.code)
		}
		for _, s := range c.want {
			if !strings.Contains(r.stderr, s) {
				t.Errorf("%s: stderr %q lacks %q", c.name, r.stderr, s)
			}
		}
		if strings.Contains(r.stderr, "kez: kez") || strings.Contains(r.stderr, ": kez:") {
			t.Errorf("%s: doubled prefix in %q", c.name, r.stderr)
		}
		if ok, _ := kez.HasIdentity(home); ok {
			t.Errorf("%s: an identity was saved", c.name)
		}
	}
	// From a file, too.
	wf := filepath.Join(t.TempDir(), "w")
	os.WriteFile(wf, []byte(strings.Join(typo, "\n")), 0o600)
	if r := kezCmd(t, nil, "", "recover", "--words-file", wf, "--home", t.TempDir()); r.code != 1 || !strings.Contains(r.stderr, "word 5") {
		t.Errorf("bad words file: %+v", r)
	}
	if r := kezCmd(t, nil, "", "recover", "--words-file", filepath.Join(t.TempDir(), "missing")); r.code != 1 || !strings.Contains(r.stderr, "reading the words") {
		t.Errorf("missing words file: %+v", r)
	}
}

func TestRecoverRefusesOverwrite(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	mustRun(t, nil, "", "init", "--yes", "--home", home)
	before := idJSONOf(t, nil, home)
	r := kezCmd(t, nil, countingWords, "recover", "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, "recover --force") {
		t.Fatalf("recover over an identity: %+v", r)
	}
	if idJSONOf(t, nil, home) != before {
		t.Fatal("a refused recover changed the identity")
	}
	mustRun(t, nil, countingWords, "recover", "--force", "--home", home)
	if got := idJSONOf(t, nil, home); got.Key != countingKey {
		t.Fatalf("recover --force: %s", got.Key)
	}
}

func TestPassphrase(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "h")
	pw := map[string]string{"KEZ_PASSPHRASE": "correct horse"}
	r := mustRun(t, pw, countingWords, "recover", "--home", home)
	if !strings.Contains(r.stdout, "encrypted with your passphrase") {
		t.Errorf("recover output:\n%s", r.stdout)
	}
	data, _ := os.ReadFile(kez.IdentityPath(home))
	if !strings.HasPrefix(string(data), "age-encryption.org/v1") {
		t.Fatal("the identity file is not encrypted")
	}
	if got := idJSONOf(t, pw, home); got.Key != countingKey {
		t.Fatalf("id with the passphrase: %s", got.Key)
	}
	r = kezCmd(t, nil, "", "id", "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, "encrypted") || !strings.Contains(r.stderr, "KEZ_PASSPHRASE") {
		t.Errorf("id without a passphrase: %+v", r)
	}
	r = kezCmd(t, map[string]string{"KEZ_PASSPHRASE": "wrong"}, "", "id", "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, "wrong passphrase") {
		t.Errorf("id with a wrong passphrase: %+v", r)
	}
	// A passphrase file: its first line, and the env twin.
	pf := filepath.Join(dir, "pass")
	os.WriteFile(pf, []byte("correct horse\nsecond line ignored\n"), 0o600)
	if got := idJSONOf(t, map[string]string{"KEZ_PASSPHRASE_FILE": pf}, home); got.Key != countingKey {
		t.Fatal("KEZ_PASSPHRASE_FILE")
	}
	home2 := filepath.Join(dir, "h2")
	mustRun(t, nil, "", "init", "--yes", "--passphrase-file", pf, "--home", home2)
	if r := kezCmd(t, nil, "", "id", "--home", home2); r.code != 1 {
		t.Error("init --passphrase-file did not encrypt")
	}
	idJSONOf(t, map[string]string{"KEZ_PASSPHRASE": "correct horse"}, home2)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if r := kezCmd(t, nil, "", "init", "--yes", "--passphrase-file", empty, "--home", filepath.Join(dir, "h3")); r.code != 1 || !strings.Contains(r.stderr, "empty") {
		t.Errorf("empty passphrase file: %+v", r)
	}
}

func TestIDErrors(t *testing.T) {
	home := filepath.Join(t.TempDir(), "none")
	r := kezCmd(t, nil, "", "id", "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, `"kez init"`) || !strings.Contains(r.stderr, `"kez recover"`) {
		t.Errorf("no identity: %+v", r)
	}
	if runtime.GOOS == "windows" {
		return
	}
	mustRun(t, nil, countingWords, "recover", "--home", home)
	os.Chmod(kez.IdentityPath(home), 0o644)
	r = kezCmd(t, nil, "", "id", "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, "chmod 600 "+kez.IdentityPath(home)) {
		t.Errorf("open permissions: %+v", r)
	}
	os.Chmod(kez.IdentityPath(home), 0o600)
	os.WriteFile(kez.IdentityPath(home), []byte("garbage\n"), 0o600)
	r = kezCmd(t, nil, "", "id", "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, "not a KEZ identity file") || !strings.Contains(r.stderr, "kez recover --force") {
		t.Errorf("foreign file: %+v", r)
	}
}

func TestIDTextAndProfile(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	mustRun(t, nil, countingWords, "recover", "--home", home)
	r := mustRun(t, nil, "", "id", "--home", home)
	for _, s := range []string{"key:          " + countingKey, "peer id:      12D3KooW", "fingerprint:  18165 26978 00453 48754 87022 68111", "kez register"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("kez id lacks %q:\n%s", s, r.stdout)
		}
	}
	if err := saveProfile(home, &profile{Key: countingKey, Handle: "alice@kez.lat", Domain: "kez.lat"}); err != nil {
		t.Fatal(err)
	}
	checkMode(t, filepath.Join(home, profileFileName), 0o600)
	if got := idJSONOf(t, nil, home); got.Handle != "alice@kez.lat" {
		t.Errorf("handle %q", got.Handle)
	}
	if r := mustRun(t, nil, "", "id", "--home", home); !strings.Contains(r.stdout, "handle:       @alice@kez.lat") {
		t.Errorf("text handle:\n%s", r.stdout)
	}
	// A profile for another key (the identity was replaced) shows no handle.
	saveProfile(home, &profile{Key: "UOTHER", Handle: "mallory@kez.lat"})
	if got := idJSONOf(t, nil, home); got.Handle != "" {
		t.Errorf("handle of another key shown: %q", got.Handle)
	}
	os.WriteFile(filepath.Join(home, profileFileName), []byte("{"), 0o600)
	if r := kezCmd(t, nil, "", "id", "--home", home); r.code != 1 || !strings.Contains(r.stderr, "profile") {
		t.Errorf("damaged profile: %+v", r)
	}
	p, err := loadProfile(t.TempDir())
	if err != nil || *p != (profile{}) {
		t.Errorf("missing profile: %+v %v", p, err)
	}
}

func TestFormatWords(t *testing.T) {
	words := strings.Fields(countingWords)
	got := formatWords(words)
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != 6 {
		t.Fatalf("%d rows, want 6:\n%s", len(lines), got)
	}
	if lines[0] != " 1. abandon     2. amount      3. liar        4. amount" {
		t.Errorf("row 1: %q", lines[0])
	}
	m, err := kez.ParseMnemonic(got)
	if err != nil || m.Phrase() != countingWords {
		t.Errorf("the table does not parse back: %v", err)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	if runtime.GOOS == "windows" {
		return
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != want {
		t.Errorf("%s: mode %o, want %o", path, st.Mode().Perm(), want)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestLoadIdentityErrorsKeepSentinels(t *testing.T) {
	e := &env{stdin: strings.NewReader(""), stdout: new(strings.Builder), stderr: new(strings.Builder), getenv: func(string) string { return "" }}
	home := filepath.Join(t.TempDir(), "h")
	_, err := loadIdentity(e, home)
	if !errors.Is(err, kez.ErrNoIdentity) || strings.HasPrefix(err.Error(), "kez: ") {
		t.Fatalf("got %v", err)
	}
	id, _ := kez.FromWords(countingWords)
	if err := kez.SaveIdentity(home, id, []byte("pw"), kez.WithScryptWorkFactor(10)); err != nil {
		t.Fatal(err)
	}
	if _, err := loadIdentity(e, home); !errors.Is(err, kez.ErrPassphraseRequired) {
		t.Fatalf("got %v", err)
	}
	e.getenv = func(k string) string {
		if k == "KEZ_PASSPHRASE" {
			return "pw"
		}
		return ""
	}
	got, err := loadIdentity(e, home)
	if err != nil || got.PublicKey().String() != countingKey {
		t.Fatalf("got %v", err)
	}
}
