package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// TestFilesOnSeveralDevices: an install restored from the words shares
// and serves from its own device key; bob's linked laptop fetches from
// it, and its share and unshare are sentences that change nothing; once
// alice revokes the restored install, the laptop refuses to fetch from it.
func TestFilesOnSeveralDevices(t *testing.T) {
	fastLinkPoll(t)
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice := st.Env(au)
	restoredHome := filepath.Join(t.TempDir(), "restored")
	restored := with(st.Env(au), "KEZ_HOME", restoredHome, "KEZ_P2P_LISTEN", loopback)
	mustRun(t, restored, stacktest.Words("alice").Phrase()+"\n", "recover", "--name", "restored")
	bob := st.Env(bu)
	laptop := with(st.Env(bu), "KEZ_HOME", filepath.Join(t.TempDir(), "laptop"), "KEZ_P2P_LISTEN", loopback)
	code, lout, wait := startLink(t, laptop, "laptop")
	mustRun(t, bob, "", "devices", "add", code, "--no-history")
	if c := wait(); c != 0 {
		t.Fatalf("link: exit %d\n%s", c, lout.String())
	}

	dir := t.TempDir()
	report := filepath.Join(dir, "report.txt")
	data := bytes.Repeat([]byte("several devices\n"), 40000)
	os.WriteFile(report, data, 0o600)
	mustRun(t, restored, "", "share", report)

	dev, err := kez.ParsePublicKey(idJSONOf(t, restored, restoredHome).Device)
	if err != nil {
		t.Fatal(err)
	}
	aout := newWatchWriter("Online as @alice@kez.test")
	stop, served := background(t, restored, aout, newWatchWriter(), "serve")
	aout.await(t, "Online as @alice@kez.test")
	if !strings.Contains(aout.String(), "(PeerID "+dev.PeerID().String()+")") {
		t.Errorf("serve on the restored install does not show its device's PeerID %s:\n%s", dev.PeerID(), aout.String())
	}

	out := filepath.Join(dir, "got.txt")
	mustRun(t, laptop, "", "fetch", "alice", "report.txt", "-o", out)
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("the laptop fetched other bytes")
	}

	before := chainSeqno(t, st, bu.Key)
	for _, args := range [][]string{{"share", report}, {"unshare", "report.txt"}} {
		r := kezCmd(t, laptop, "", args...)
		if r.code != 1 || !strings.Contains(r.stderr, "sharing and unsharing need your primary key, which this linked device does not hold") {
			t.Errorf("kez %s on the linked laptop: exit %d\n%s", args[0], r.code, r.stderr)
		}
	}
	if after := chainSeqno(t, st, bu.Key); after != before {
		t.Errorf("the refused share changed bob's chain: seqno %d, then %d", before, after)
	}

	mustRun(t, alice, "", "devices", "revoke", "restored")
	r := kezCmd(t, laptop, "", "fetch", "alice", "report.txt", "-o", filepath.Join(dir, "again.txt"))
	if r.code != 1 || !strings.Contains(r.stderr, `that file is served by alice@kez.test's device "restored", which they revoked, so nothing was fetched`) {
		t.Errorf("fetching from a revoked device: exit %d\n%s", r.code, r.stderr)
	}
	stop()
	served()
}
