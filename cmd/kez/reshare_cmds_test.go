package main

import (
	"bytes"
	"encoding/json"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// kez fetch records a public fetch (not a private one); kez files
// --fetched lists it; kez serve with KEZ_RESHARE=1 re-serves it and says
// so; a KEZ_RESHARE that is no boolean is a usage error.
func TestServeReshare(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice := with(st.Env(au), "KEZ_P2P_LISTEN", loopback)
	bob := with(st.Env(bu), "KEZ_P2P_LISTEN", loopback)
	carol := with(st.Env(cu), "KEZ_P2P_LISTEN", loopback)
	dir := t.TempDir()
	report := filepath.Join(dir, "report.pdf")
	data := make([]byte, 2<<20+7)
	mrand.NewChaCha8([32]byte{5}).Read(data)
	os.WriteFile(report, data, 0o600)
	mustRun(t, alice, "", "share", report)
	secret := filepath.Join(dir, "secret.txt")
	os.WriteFile(secret, []byte("for bob only"), 0o600)
	mustRun(t, alice, "", "share", secret, "--to", "bob")
	aout := newWatchWriter("Online as @alice@kez.test")
	background(t, alice, aout, newWatchWriter(), "serve")
	aout.await(t, "Online as @alice@kez.test")

	if r := mustRun(t, bob, "", "files", "--fetched"); !strings.Contains(r.stdout, "You fetched no public files") {
		t.Errorf("files --fetched before any fetch:\n%s", r.stdout)
	}
	bobDir := t.TempDir()
	mustRun(t, bob, "", "fetch", "alice", "report.pdf", "-o", bobDir)
	mustRun(t, bob, "", "fetch", "alice", "secret.txt", "-o", bobDir)
	r := mustRun(t, bob, "", "files", "--fetched", "--json")
	var list []map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list) != 1 {
		t.Fatalf("files --fetched --json: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"name", "size", "cid", "path", "owner", "owner_key", "fetched_at", "mtime", "changed"} {
		if _, ok := list[0][k]; !ok {
			t.Errorf("files --fetched --json lacks %q: %s", k, r.stdout)
		}
	}
	if list[0]["name"] != "report.pdf" || list[0]["owner"] != "alice@kez.test" || list[0]["changed"] != false {
		t.Errorf("files --fetched --json: %s", r.stdout)
	}
	if r := mustRun(t, bob, "", "files", "--fetched"); !strings.Contains(r.stdout, "report.pdf") || !strings.Contains(r.stdout, "from @alice@kez.test") {
		t.Errorf("files --fetched:\n%s", r.stdout)
	}

	bout := newWatchWriter("Re-serving 1 public file(s) you fetched")
	background(t, with(bob, "KEZ_RESHARE", "1"), bout, newWatchWriter(), "serve")
	bout.await(t, "Re-serving 1 public file(s) you fetched")
	out := filepath.Join(t.TempDir(), "report.pdf")
	mustRun(t, carol, "", "fetch", "alice", "report.pdf", "-o", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("carol's copy differs")
	}

	if r := kezCmd(t, with(bob, "KEZ_RESHARE", "sometimes"), "", "serve"); r.code != 2 || !strings.Contains(r.stderr, "KEZ_RESHARE") {
		t.Errorf("a bad KEZ_RESHARE: exit %d\n%s", r.code, r.stderr)
	}
	if r := kezCmd(t, bob, "", "files", "--fetched", "alice"); r.code != 2 {
		t.Errorf("files --fetched HANDLE: exit %d\n%s", r.code, r.stderr)
	}
}
