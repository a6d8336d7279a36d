package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
)

// The quickstart's steps, as "go run ./examples/quickstart" plays them,
// against a real NATS process: every step passes, the transcript tells
// the story, and nothing is left behind.
func TestQuickstart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a NATS process and the whole story")
	}
	root := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := play(ctx, &out, options{natsServer: natstest.ServerBinary(t), tempRoot: root}); err != nil {
		t.Fatalf("quickstart: %v\ntranscript:\n%s", err, out.String())
	}
	transcript := out.String()
	for _, want := range []string{
		"[1/", "paper backup",
		"@alice@kez.test registered", "@bob@kez.test registered",
		"alice pinned @bob@kez.test: fingerprint", "verified",
		"bob got it from @alice@kez.test", "alice got it from @bob@kez.test",
		"bob is back and reads", "alice sees bob's receipt: delivered at",
		"alice shares field-notes.bin publicly", "alice shares salaries.txt with bob only",
		"bob sees:", "carol sees:", "private, shared with bob",
		"bob fetched field-notes.bin from alice directly", "bob fetched salaries.txt from alice directly",
		"Done in",
	} {
		if !strings.Contains(transcript, want) {
			t.Errorf("the transcript lacks %q:\n%s", want, transcript)
		}
	}
	words := 0 // the paper backup is the only text indented by eight spaces
	for _, line := range strings.Split(transcript, "\n") {
		if rest, ok := strings.CutPrefix(line, "        "); ok {
			for _, w := range strings.Fields(rest) {
				if kez.IsWord(w) {
					words++
				}
			}
		}
	}
	if words != 24 {
		t.Errorf("the paper backup shows %d words, want 24:\n%s", words, transcript)
	}
	assertEmpty(t, root)
}

// A step that fails is named, and what was started is still cleaned up.
func TestQuickstartNamesTheFailingStep(t *testing.T) {
	root := t.TempDir()
	var out bytes.Buffer
	err := play(context.Background(), &out, options{natsServer: "/nonexistent/nats-server", tempRoot: root})
	if err == nil || !strings.Contains(err.Error(), "step 1/") || !strings.Contains(err.Error(), "Start the dev stack") {
		t.Fatalf("error %v, want one naming step 1", err)
	}
	assertEmpty(t, root)
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	left, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("left behind in %s: %v", dir, left)
	}
}
