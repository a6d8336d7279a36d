package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// TestShareToFlaggedContact: kez share --to follows the rule of kez ui's
// files screen (package recipients). bob's handle moved to another key
// after alice added him, so sharing with him (alone or with others) is
// refused with the warning and nothing is shared, as a message to him
// would be; carol, no contact, and dave, a contact at his pinned key, get
// the file, and dave can fetch it.
func TestShareToFlaggedContact(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	st.NewUser(t, "carol")
	du := st.NewUser(t, "dave")
	alice := st.Env(au)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, alice, "", "contacts", "add", "dave")
	st.MoveHandle(t, bu, "not-bob")
	path := filepath.Join(t.TempDir(), "plans.txt")
	if err := os.WriteFile(path, []byte("the plans"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, to := range [][]string{{"--to", "bob"}, {"--to", "carol", "--to", "@bob"}} {
		r := kezCmd(t, alice, "", append([]string{"share", path}, to...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "nothing was shared: WARNING: the key of bob@kez.test changed") ||
			!strings.Contains(r.stderr, "kez contacts add bob@kez.test") {
			t.Errorf("share %v: exit %d\n%s%s", to, r.code, r.stdout, r.stderr)
		}
		if own := ownFilesJSONOf(t, alice); len(own) != 0 {
			t.Fatalf("shared after the refusal: %+v", own)
		}
	}

	r := mustRun(t, alice, "", "share", path, "--to", "carol", "--to", "dave")
	if !strings.Contains(r.stdout, `Shared "plans.txt" privately with @carol@kez.test, @dave@kez.test`) {
		t.Errorf("share to carol and dave:\n%s", r.stdout)
	}
	if own := ownFilesJSONOf(t, alice); len(own) != 1 || strings.Join(own[0].Recipients, " ") != "carol@kez.test dave@kez.test" {
		t.Errorf("shared: %+v", own)
	}
	if list := filesJSONOf(t, st.Env(du), "alice"); len(list) != 1 || list[0].Name != "plans.txt" || !list[0].Private {
		t.Errorf("dave's view of alice's files: %+v", list)
	}
}
