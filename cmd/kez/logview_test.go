package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/translog/sqlitepins"
)

// TestSplitViewWarning: "kez whois" checks chains against the account's
// log pins (KEZ_HOME/log.db), and while chat.db records a split view
// (as the chat client does when a contact's log view contradicts its
// own) "kez inbox" and "kez whois" print the WARNING with both signed
// checkpoints on stderr, leaving --json output alone.
func TestSplitViewWarning(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.NewUser(t, "alice")
	st.NewUser(t, "bob")
	env := st.Env(alice)
	if r := mustRun(t, env, "", "whois", "bob"); strings.Contains(r.stderr, "WARNING") {
		t.Fatalf("a warning without a split view:\n%s", r.stderr)
	}
	pins, err := sqlitepins.Open(filepath.Join(alice.Home, sqlitepins.FileName))
	if err != nil {
		t.Fatal(err)
	}
	li, pinned, err := pins.LogOf(t.Context(), st.SigServerURL)
	pins.Close()
	if err != nil || !pinned || li.Key == "" {
		t.Fatalf("whois pinned no log: %+v %v %v", li, pinned, err)
	}
	if r := mustRun(t, env, "", "inbox"); strings.Contains(r.stderr, "WARNING") {
		t.Fatalf("a warning without a split view:\n%s", r.stderr)
	}

	// What the chat client records (chat.Client.recordSplitView).
	ours := "kez.test/sigchain-log\n3\nOURSq9bl8xfbdhdkM6SkNqQx/vT/gHU=\n\n\u2014 kez.test/sigchain-log AAAA\n"
	theirs := "kez.test/sigchain-log\n3\nTHEIRSbl8xfbdhdkM6SkNqQx/vT/gHU=\n\n\u2014 kez.test/sigchain-log BBBB\n"
	db, err := sqlitedb.Open(filepath.Join(alice.Home, chat.DBFileName), sqlitedb.Options{FileMode: 0o600})
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`INSERT INTO split_views (origin, ours, theirs, contact, handle, at, reason) VALUES (?,?,?,?,?,?,?)`,
		"kez.test/sigchain-log", []byte(ours), []byte(theirs), st.NewUser(t, "bob").Key.String(), "bob@"+st.Domain,
		time.Now().UnixMilli(), "two checkpoints of the same size with different roots")
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"inbox"}, {"whois", "bob"}, {"whois", "bob", "--json"}, {"inbox", "--json"}} {
		r := mustRun(t, env, "", args...)
		for _, want := range []string{"WARNING: a sig-server was caught showing different histories", "bob@" + st.Domain,
			"two checkpoints of the same size", "OURSq9bl8", "THEIRSbl8"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("kez %s: stderr lacks %q:\n%s", strings.Join(args, " "), want, r.stderr)
			}
		}
		if strings.Contains(r.stdout, "WARNING") {
			t.Errorf("kez %s: the warning is on stdout", strings.Join(args, " "))
		}
		if args[len(args)-1] == "--json" && args[0] == "whois" {
			var v map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
				t.Errorf("kez %s: stdout is not JSON: %v", strings.Join(args, " "), err)
			}
		}
	}
	// A fresh account, with no state folder yet, looks up without one.
	fresh := st.Env(nil)
	fresh["KEZ_HOME"] = filepath.Join(t.TempDir(), "none")
	if r := mustRun(t, fresh, "", "whois", "bob"); strings.Contains(r.stderr, "WARNING") {
		t.Fatalf("fresh account: %s", r.stderr)
	}
	if _, err := os.Stat(fresh["KEZ_HOME"]); err == nil {
		t.Fatal("whois made a state folder")
	}
}
