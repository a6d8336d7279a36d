package main

import (
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/sigchain"
)

// TestOwnChainRolledBack: alice's sig-server, after she revoked her
// laptop, serves her chain as it was before (the laptop current again).
// Her install pinned the chain with the revocation: the devices commands
// refuse with a sentence and append nothing, and any online command warns
// once (docs/spec/chat.md §8.7).
func TestOwnChainRolledBack(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	alice := st.Env(au)
	st.AddDevice(t, au, "laptop")
	mustRun(t, alice, "", "devices")
	mustRun(t, alice, "", "devices", "revoke", "laptop")
	links, err := (&sigchain.Client{BaseURL: st.SigServerURL}).Fetch(t.Context(), au.Key, 0)
	if err != nil {
		t.Fatal(err)
	}
	served := links[:len(links)-2] // before the revocation and its rotation
	st.RewriteChain(t, au.Key, served)

	const warning = "WARNING: your sig-server served an older history of your own sigchain than this install verified (up to link"
	for _, args := range [][]string{{"devices", "revoke", "laptop"}, {"devices", "revoke", "primary"}, {"devices", "sync", "laptop"}} {
		r := kezCmd(t, alice, "", args...)
		if r.code != 1 || strings.Count(r.stderr, warning) != 1 || !strings.Contains(r.stderr, "nothing was changed") {
			t.Errorf("kez %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	r := kezCmd(t, alice, "", "inbox")
	if n := strings.Count(r.stderr, warning); n != 1 {
		t.Errorf("kez inbox warned %d times:\n%s%s", n, r.stdout, r.stderr)
	}
	if n := chainSeqno(t, st, au.Key); n != uint64(len(served)) {
		t.Errorf("alice's chain at the sig-server has %d links, %d were served", n, len(served))
	}
}

// The warning says "different" for a fork.
func TestOwnChainSentenceFork(t *testing.T) {
	s := ownChainSentence(&chat.OwnChainRewrittenError{Pinned: sigchain.Pin{Seqno: 7}, Err: sigchain.ErrFork})
	if !strings.HasPrefix(s, "WARNING: your sig-server served a different history of your own sigchain than this install verified (up to link 7") {
		t.Errorf("the fork's sentence: %s", s)
	}
}
