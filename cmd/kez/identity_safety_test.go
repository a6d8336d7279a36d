package main

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

func writeFile(t *testing.T, dir, name, text string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPassphraseCommand: set, change and remove re-encrypt the same key;
// the key, the profile and the words never change, and every refusal
// leaves the file as it was.
func TestPassphraseCommand(t *testing.T) {
	dir := t.TempDir()
	home := filepath.Join(dir, "h")
	mustRun(t, nil, countingWords, "recover", "--home", home)
	if err := saveProfile(home, &profile{Key: countingKey, Handle: "alice@kez.test", Domain: "kez.test"}); err != nil {
		t.Fatal(err)
	}
	profileBefore := readBytes(t, filepath.Join(home, profileFileName))
	first := writeFile(t, dir, "first", "first secret\n")
	second := writeFile(t, dir, "second", "second secret\r\nignored\n")
	idPath := kez.IdentityPath(home)

	// set on a plain identity encrypts it.
	r := mustRun(t, nil, "", "passphrase", "set", "--new-passphrase-file", first, "--home", home)
	if !strings.Contains(r.stdout, "now encrypted with your passphrase") || !strings.Contains(r.stdout, "key, handle and 24 words are unchanged") {
		t.Errorf("passphrase set:\n%s", r.stdout)
	}
	if !bytes.HasPrefix(readBytes(t, idPath), []byte("age-encryption.org/v1")) {
		t.Fatal("passphrase set did not encrypt the identity")
	}
	checkMode(t, idPath, 0o600)
	if r := kezCmd(t, nil, "", "id", "--home", home); r.code != 1 {
		t.Fatal("the encrypted identity opens without a passphrase")
	}
	if got := idJSONOf(t, map[string]string{"KEZ_PASSPHRASE": "first secret"}, home); got.Key != countingKey || got.Handle != "alice@kez.test" {
		t.Fatalf("after set: %+v", got)
	}

	// Refusals change nothing: a wrong current passphrase, none at all, no
	// new one (not a terminal), an empty or missing new file, bad usage.
	encrypted := readBytes(t, idPath)
	empty := writeFile(t, dir, "empty", "\n")
	for name, c := range map[string]struct {
		env  map[string]string
		args []string
		code int
		want string
	}{
		"wrong current":   {map[string]string{"KEZ_PASSPHRASE": "guess"}, []string{"set", "--new-passphrase-file", second}, 1, "wrong passphrase"},
		"no current":      {nil, []string{"change", "--new-passphrase-file", second}, 1, "encrypted"},
		"no new one":      {map[string]string{"KEZ_PASSPHRASE": "first secret"}, []string{"set"}, 1, "--new-passphrase-file"},
		"empty new file":  {map[string]string{"KEZ_PASSPHRASE": "first secret"}, []string{"set", "--new-passphrase-file", empty}, 1, "empty"},
		"missing file":    {map[string]string{"KEZ_PASSPHRASE": "first secret"}, []string{"set", "--new-passphrase-file", filepath.Join(dir, "nope")}, 1, "passphrase file"},
		"remove + file":   {map[string]string{"KEZ_PASSPHRASE": "first secret"}, []string{"remove", "--new-passphrase-file", second}, 2, "usage"},
		"no subcommand":   {nil, nil, 2, "usage"},
		"bad subcommand":  {nil, []string{"reset"}, 2, "use set, change or remove"},
		"two subcommands": {nil, []string{"set", "remove"}, 2, "usage"},
	} {
		r := kezCmd(t, c.env, "", append(append([]string{"passphrase"}, c.args...), "--home", home)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: exit %d, want %d with %q:\n%s", name, r.code, c.code, c.want, r.stderr)
		}
		if !bytes.Equal(readBytes(t, idPath), encrypted) {
			t.Fatalf("%s: the identity file changed", name)
		}
	}

	// change: the old passphrase no longer opens it, the new one does
	// (its first line only, CR dropped), and flags go after the word too.
	mustRun(t, map[string]string{"KEZ_PASSPHRASE_FILE": first}, "", "passphrase", "--home", home, "change", "--new-passphrase-file", second)
	if r := kezCmd(t, map[string]string{"KEZ_PASSPHRASE": "first secret"}, "", "id", "--home", home); r.code != 1 || !strings.Contains(r.stderr, "wrong passphrase") {
		t.Errorf("the old passphrase still opens it: %+v", r)
	}
	if got := idJSONOf(t, map[string]string{"KEZ_PASSPHRASE": "second secret"}, home); got.Key != countingKey {
		t.Fatalf("after change: %+v", got)
	}

	// remove: plain again, same key.
	r = mustRun(t, map[string]string{"KEZ_PASSPHRASE": "second secret"}, "", "passphrase", "remove", "--home", home)
	if !strings.Contains(r.stdout, "NOT encrypted") || !strings.Contains(r.stdout, `"kez passphrase set"`) {
		t.Errorf("passphrase remove:\n%s", r.stdout)
	}
	if !bytes.HasPrefix(readBytes(t, idPath), []byte("kez-identity/v1\n")) {
		t.Fatal("passphrase remove left the file encrypted")
	}
	checkMode(t, idPath, 0o600)
	if got := idJSONOf(t, nil, home); got.Key != countingKey {
		t.Fatalf("after remove: %+v", got)
	}
	if !bytes.Equal(readBytes(t, filepath.Join(home, profileFileName)), profileBefore) {
		t.Error("the passphrase command changed the profile")
	}
	if r := kezCmd(t, nil, "", "passphrase", "set", "--new-passphrase-file", first, "--home", filepath.Join(dir, "none")); r.code != 1 || !strings.Contains(r.stderr, "kez init") {
		t.Errorf("passphrase without an identity: %+v", r)
	}
}

// TestNoAdviceLeadsToKeyLoss: what init and recover say about an
// unencrypted or existing identity points to "kez passphrase", never to
// replacing the key.
func TestNoAdviceLeadsToKeyLoss(t *testing.T) {
	home := filepath.Join(t.TempDir(), "h")
	r := mustRun(t, nil, "", "init", "--yes", "--home", home)
	if !strings.Contains(r.stdout, `to encrypt it, run "kez passphrase set"`) || strings.Contains(r.stdout, "--force") {
		t.Errorf("init's note on an unencrypted identity:\n%s", r.stdout)
	}
	r = kezCmd(t, nil, "", "init", "--yes", "--home", home)
	if r.code != 1 || !strings.Contains(r.stderr, `"kez passphrase set" encrypts it or changes its passphrase`) {
		t.Errorf("init over an identity: %+v", r)
	}
	if r := kezCmd(t, nil, "", "init", "--yes", "--discard-handle", "a@b.test", "--home", home); r.code != 2 || !strings.Contains(r.stderr, "goes with --force") {
		t.Errorf("--discard-handle without --force: %+v", r)
	}
	if r := kezCmd(t, nil, countingWords, "recover", "--discard-handle", "a@b.test", "--home", home); r.code != 2 {
		t.Errorf("recover --discard-handle without --force: %+v", r)
	}
	for _, c := range commands {
		if strings.Contains(c.help, "run again with --force and a passphrase") {
			t.Errorf("kez %s's help still advises replacing the key to encrypt it", c.name)
		}
	}
}

// TestInitForceKeepsHandles: init --force over an identity holding a
// handle refuses unless that very handle is named, whether the profile
// knows the handle or only the identity's sigchain does; and when it does
// not know, because the sig-server does not answer, it refuses too.
func TestInitForceKeepsHandles(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	env := st.Env(au)
	idPath := kez.IdentityPath(au.Home)
	before := readBytes(t, idPath)
	unchanged := func(what string) {
		t.Helper()
		if !bytes.Equal(readBytes(t, idPath), before) {
			t.Fatalf("%s: the identity was replaced", what)
		}
	}

	// The profile names the handle.
	r := kezCmd(t, env, "", "init", "--yes", "--force")
	if r.code != 1 || !strings.Contains(r.stderr, "holds the handle @alice@kez.test") || !strings.Contains(r.stderr, "--discard-handle=alice@kez.test") ||
		!strings.Contains(r.stderr, "kez passphrase set") || !strings.Contains(r.stderr, "Nothing was changed") {
		t.Errorf("init --force over a handle: %+v", r)
	}
	unchanged("no confirmation")
	for _, wrong := range []string{"alice", "bob@kez.test", "alice@kez.test.evil", "yes"} {
		r := kezCmd(t, env, "", "init", "--yes", "--force", "--discard-handle", wrong)
		if r.code != 1 || !strings.Contains(r.stderr, "does not name the handle") {
			t.Errorf("--discard-handle=%s: %+v", wrong, r)
		}
		unchanged("--discard-handle=" + wrong)
	}

	// Encrypted, with no passphrase to read its key: the profile's handle
	// still counts.
	mustRun(t, env, "", "passphrase", "set", "--new-passphrase-file", writeFile(t, t.TempDir(), "p", "pw\n"))
	before = readBytes(t, idPath)
	if r := kezCmd(t, env, "", "init", "--yes", "--force"); r.code != 1 || !strings.Contains(r.stderr, "@alice@kez.test") {
		t.Errorf("encrypted identity: %+v", r)
	}
	unchanged("encrypted")
	mustRun(t, with(env, "KEZ_PASSPHRASE", "pw"), "", "passphrase", "remove")
	before = readBytes(t, idPath)

	// No profile: the sigchain at the sig-server names the handle.
	os.Remove(filepath.Join(au.Home, profileFileName))
	if r := kezCmd(t, env, "", "init", "--yes", "--force"); r.code != 1 || !strings.Contains(r.stderr, "holds the handle @alice@kez.test") {
		t.Errorf("handle known only to the sigchain: %+v", r)
	}
	unchanged("sigchain")
	// A sig-server that does not answer: no guess, no replacement.
	gone := httptest.NewServer(nil)
	gone.Close()
	if r := kezCmd(t, with(env, "KEZ_SIG_SERVER", gone.URL), "", "init", "--yes", "--force"); r.code != 1 || !strings.Contains(r.stderr, "cannot tell whether the identity") || !strings.Contains(r.stderr, "nothing was changed") {
		t.Errorf("sig-server down: %+v", r)
	}
	unchanged("sig-server down")

	// Named exactly (with or without "@", any case): replaced, and the
	// profile forgets the handle of the old key.
	saveProfile(au.Home, &profile{Key: au.Key.String(), Handle: "alice@kez.test", Domain: "kez.test", Server: st.ServerURL, SigServer: st.SigServerURL})
	mustRun(t, env, "", "init", "--yes", "--force", "--discard-handle=@Alice@kez.test")
	got := idJSONOf(t, env, "")
	if got.Key == au.Key.String() || got.Handle != "" {
		t.Fatalf("after --discard-handle: %+v", got)
	}
	p, _ := loadProfile(au.Home)
	if p.Handle != "" || p.Key != "" || p.Server != st.ServerURL {
		t.Errorf("profile after discarding: %+v", p)
	}
	// The new key holds nothing: init --force goes on without asking.
	mustRun(t, env, "", "init", "--yes", "--force")
}

// TestRecoverRestoresHandle: recovering on a new machine finds the handle
// the key holds and writes the profile; a chain claiming a handle its
// registry gives to someone else restores nothing.
func TestRecoverRestoresHandle(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	servers := st.Env(nil)

	home := filepath.Join(t.TempDir(), "new-machine")
	r := mustRun(t, servers, stacktest.Words("alice").Phrase(), "recover", "--home", home)
	if !strings.Contains(r.stdout, "Found your handle") || !strings.Contains(r.stdout, "handle:       @alice@kez.test") || strings.Contains(r.stdout, "none yet") {
		t.Errorf("recover:\n%s", r.stdout)
	}
	p, err := loadProfile(home)
	if err != nil || *p != (profile{Key: au.Key.String(), Handle: "alice@kez.test", Domain: st.Domain, Server: st.ServerURL, SigServer: st.SigServerURL}) {
		t.Fatalf("profile: %+v, %v", p, err)
	}
	if got := idJSONOf(t, nil, home); got.Handle != "alice@kez.test" {
		t.Errorf("id after recover: %+v", got)
	}
	// Flags work as well as the environment.
	home2 := filepath.Join(t.TempDir(), "h2")
	r = mustRun(t, nil, stacktest.Words("alice").Phrase(), "recover", "--home", home2, "--server", st.ServerURL)
	if !strings.Contains(r.stdout, "@alice@kez.test") {
		t.Errorf("recover --server:\n%s", r.stdout)
	}

	// recover --force with the same words over the same key keeps the
	// handle without asking.
	mustRun(t, servers, stacktest.Words("alice").Phrase(), "recover", "--force", "--home", home)
	if got := idJSONOf(t, nil, home); got.Handle != "alice@kez.test" {
		t.Errorf("recover --force, same key: %+v", got)
	}
	// Other words over it would lose the handle: refused unless named.
	if r := kezCmd(t, servers, countingWords, "recover", "--force", "--home", home); r.code != 1 || !strings.Contains(r.stderr, "@alice@kez.test") || !strings.Contains(r.stderr, "--discard-handle=alice@kez.test") {
		t.Errorf("recover --force, another key: %+v", r)
	}
	if got := idJSONOf(t, nil, home); got.Key != au.Key.String() {
		t.Fatal("a refused recover replaced the key")
	}

	// Mallory's chain claims alice's handle, which the registry gives to
	// alice: recovering mallory's words restores no handle.
	mallory := stacktest.Identity("mallory")
	link, err := sigchain.NewLink(mallory, nil, sigchain.TypeEldest, sigchain.EldestBody(mallory.PublicKey(), mallory.EncryptionKey(0).PublicKey(), 0, "alice@kez.test"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := (&sigchain.Client{BaseURL: st.SigServerURL}).Append(ctx, link); err != nil {
		t.Fatal(err)
	}
	mh := filepath.Join(t.TempDir(), "m")
	r = mustRun(t, servers, stacktest.Words("mallory").Phrase(), "recover", "--home", mh)
	if !strings.Contains(r.stdout, "gives that handle to another key") || strings.Contains(r.stdout, "handle:       @alice") {
		t.Errorf("recover of a chain claiming another's handle:\n%s", r.stdout)
	}
	if p, _ := loadProfile(mh); p.Handle != "" {
		t.Errorf("profile took a handle the registry denies: %+v", p)
	}

	// A key without a chain, no server known, a sig-server down: the
	// identity is restored all the same, and kez says what it knows.
	gone := httptest.NewServer(nil)
	gone.Close()
	for name, c := range map[string]struct {
		env  map[string]string
		want string
	}{
		"no chain":        {servers, "has no sigchain for this key"},
		"no server":       {nil, `"kez register NAME --server URL"`},
		"sig-server down": {with(servers, "KEZ_SIG_SERVER", gone.URL), "kez could not read your sigchain"},
	} {
		h := filepath.Join(t.TempDir(), "h")
		r := mustRun(t, c.env, countingWords, "recover", "--home", h)
		if !strings.Contains(r.stdout, c.want) || !strings.Contains(r.stdout, countingKey) {
			t.Errorf("%s:\n%s", name, r.stdout)
		}
	}
}
