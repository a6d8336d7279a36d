package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// kez serve --relay keeps a slot with a real kez relay and says so with
// its circuit address; bad --relay values are usage errors.
func TestServeRelay(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	relayAddr := loopbackRelay(t)

	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice := with(st.Env(au), "KEZ_P2P_LISTEN", loopback)
	bob := with(st.Env(bu), "KEZ_P2P_LISTEN", loopback)
	file := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(file, []byte("see you at noon"), 0o600)
	mustRun(t, alice, "", "share", file)

	for _, bad := range [][]string{
		{"--relay", "/ip4/127.0.0.1/tcp/1"},
		{"--relay", "none", "--relay", relayAddr},
		{"--relay", relayAddr + "/p2p-circuit"},
	} {
		if r := kezCmd(t, alice, "", append([]string{"serve"}, bad...)...); r.code != 2 || !strings.Contains(r.stderr, "--relay") {
			t.Errorf("serve %v: exit %d\n%s", bad, r.code, r.stderr)
		}
	}
	if r := kezCmd(t, with(alice, "KEZ_RELAYS", "nonsense"), "", "serve"); r.code != 2 || !strings.Contains(r.stderr, "KEZ_RELAYS nonsense is not a relay address") {
		t.Errorf("serve with a bad KEZ_RELAYS: exit %d\n%s", r.code, r.stderr)
	}

	want := "Reachable through the relay " + relayAddr + "/p2p-circuit."
	aout, aerr := newWatchWriter("Online as", want), newWatchWriter()
	stopAlice, served := background(t, alice, aout, aerr, "serve", "--relay", relayAddr)
	aout.await(t, want)

	out := filepath.Join(t.TempDir(), "notes.txt")
	res := mustRun(t, bob, "", "fetch", "alice", "notes.txt", "-o", out)
	if !strings.HasSuffix(res.stdout, "Fetched \"notes.txt\" (15 B) from alice@kez.test directly.\n") {
		t.Errorf("fetch output:\n%s", res.stdout)
	}
	stopAlice()
	if code := served(); code != 0 {
		t.Errorf("serve exited %d\n%s", code, aerr.String())
	}
}
