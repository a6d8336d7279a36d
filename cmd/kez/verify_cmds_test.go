package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// digitsOf keeps the ASCII digits of s.
func digitsOf(s string) string {
	return regexp.MustCompile(`[^0-9]`).ReplaceAllString(s, "")
}

// TestContactsVerifySafetyNumber: both sides see one safety number; the
// one read out verifies; a wrong one is refused without showing the right
// one, so nothing on the screen can be pasted back to "verify".
func TestContactsVerifySafetyNumber(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "contacts", "add", "alice")
	want := kez.SafetyNumber(au.Key, bu.Key)

	// Shown, not checked: twelve groups in three rows, the same on both
	// sides, with the command the other side runs.
	ra := mustRun(t, alice, "", "contacts", "verify", "bob")
	rb := mustRun(t, bob, "", "contacts", "verify", "alice")
	if digitsOf(ra.stdout) == "" || !strings.Contains(digitsOf(ra.stdout), digitsOf(want)) || !strings.Contains(digitsOf(rb.stdout), digitsOf(want)) {
		t.Fatalf("the safety number %s is not on both sides:\n%s\n%s", want, ra.stdout, rb.stdout)
	}
	g := strings.Fields(want)
	if !strings.Contains(ra.stdout, "    "+strings.Join(g[4:8], " ")+"\n") {
		t.Errorf("not laid out four groups a row:\n%s", ra.stdout)
	}
	if !strings.Contains(ra.stdout, `"kez contacts verify alice@kez.test"`) || !strings.Contains(rb.stdout, `"kez contacts verify bob@kez.test"`) {
		t.Errorf("the other side's command is not named:\n%s\n%s", ra.stdout, rb.stdout)
	}
	var js contactVerifyJSON
	if err := json.Unmarshal([]byte(mustRun(t, alice, "", "contacts", "verify", "bob", "--json").stdout), &js); err != nil {
		t.Fatal(err)
	}
	if js != (contactVerifyJSON{Handle: "bob@kez.test", Key: bu.Key.String(), Fingerprint: bu.Key.Fingerprint(), SafetyNumber: want}) {
		t.Errorf("verify --json: %+v", js)
	}

	// Wrong numbers: another pair's, a digit short, bob's fingerprint
	// doubled. None verifies, none shows what was expected.
	carol := stacktest.Identity("carol").PublicKey()
	for name, typed := range map[string]string{
		"carol and bob":       kez.SafetyNumber(carol, bu.Key),
		"alice twice":         kez.SafetyNumber(au.Key, au.Key),
		"a digit short":       want[:len(want)-1],
		"fingerprint ×2":      bu.Key.Fingerprint() + " " + bu.Key.Fingerprint(),
		"alice's fingerprint": au.Key.Fingerprint(),
	} {
		r := kezCmd(t, alice, "", "contacts", "verify", "bob", typed)
		if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "nothing was changed") {
			t.Errorf("%s: exit %d\nstdout %q\nstderr %q", name, r.code, r.stdout, r.stderr)
		}
		for _, secret := range append([]string{want, bu.Key.Fingerprint()}, strings.Fields(want)...) {
			if strings.Contains(r.stderr, secret) || (len(secret) > 5 && strings.Contains(digitsOf(r.stderr), digitsOf(secret))) {
				t.Errorf("%s: the refusal shows the expected digits %q:\n%s", name, secret, r.stderr)
			}
		}
	}
	if r := mustRun(t, alice, "", "contacts", "list", "--json"); strings.Contains(r.stdout, `"verified":true`) {
		t.Fatalf("a wrong number verified bob:\n%s", r.stdout)
	}

	// What bob reads out (copied from his screen, rows and all) verifies.
	var rows []string
	for _, l := range strings.Split(rb.stdout, "\n") {
		if strings.HasPrefix(l, "    ") {
			rows = append(rows, l)
		}
	}
	r := mustRun(t, alice, "", append([]string{"contacts", "verify", "bob"}, rows...)...)
	if !strings.Contains(r.stdout, "@bob@kez.test is verified") {
		t.Errorf("verify:\n%s", r.stdout)
	}
	if r := mustRun(t, alice, "", "contacts", "verify", "bob"); !strings.Contains(r.stdout, "You verified @bob@kez.test on ") {
		t.Errorf("verified state not shown:\n%s", r.stdout)
	}
	if r := kezCmd(t, alice, "", "contacts", "verify", "carol"); r.code != 1 || !strings.Contains(r.stderr, "not a contact") {
		t.Errorf("verify a stranger: exit %d\n%s", r.code, r.stderr)
	}
}
