package translog_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/translog"
	"golang.org/x/mod/sumdb/note"
)

// TestCheckpointTerminalText: checkpoints and log origins are printed to
// people (kez audit's evidence, split-view warnings), so a server cannot
// smuggle terminal control or bidi characters into them: a cosignature
// line by a key named with an escape sequence, and an origin with one,
// are refused.
func TestCheckpointTerminalText(t *testing.T) {
	_, vkey := tlogtest.NoteKey("k", origin)
	root := bytes.Repeat([]byte{7}, 32)
	good := signText(t, "k", origin, cpText(origin, 5, root))
	for _, name := range []string{"evil\x1b[2Jwitness", "evil\u202ewitness", "evil\u009bwitness"} {
		skey, _, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{1}, 32)), name)
		if err != nil {
			t.Logf("%+q: the note package refuses the name itself (%v)", name, err)
			continue
		}
		w, err := note.NewSigner(skey)
		if err != nil {
			t.Fatal(err)
		}
		n, err := note.Open(good, note.VerifierList(mustVerifier(t, vkey)))
		if err != nil {
			t.Fatal(err)
		}
		cosigned, err := note.Sign(n, w)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := translog.ParseCheckpoint(cosigned, vkey); !errors.Is(err, translog.ErrBadCheckpoint) {
			t.Errorf("a cosignature by %+q: %v, want ErrBadCheckpoint", name, err)
		}
	}
	evil := "sig.test/\x1b]0;owned\x07log"
	if _, evilKey, err := note.GenerateKey(bytes.NewReader(bytes.Repeat([]byte{2}, 32)), evil); err == nil {
		if err := (translog.LogInfo{Origin: evil, Key: evilKey}).Check(); !errors.Is(err, translog.ErrBadCheckpoint) {
			t.Errorf("origin %+q: %v, want ErrBadCheckpoint", evil, err)
		}
	}
	if err := (translog.LogInfo{Origin: origin, Key: vkey}).Check(); err != nil {
		t.Errorf("a good log: %v", err)
	}
	if _, err := translog.ParseCheckpoint(good, vkey); err != nil {
		t.Errorf("good: %v", err)
	}
}
