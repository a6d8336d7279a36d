package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// kezBinRun runs the built kez binary with only environ (and PATH) as its
// environment and stdin on its standard input, as a script would.
func kezBinRun(t *testing.T, environ map[string]string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(builtKez(t), args...)
	keys := make([]string, 0, len(environ))
	for k := range environ {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for _, k := range keys {
		cmd.Env = append(cmd.Env, k+"="+environ[k])
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("kez %s: %v", strings.Join(args, " "), err)
	}
	return result{out.String(), errb.String(), code}
}

// mustRunBin is kezBinRun that fails the test unless the exit status is 0.
func mustRunBin(t *testing.T, environ map[string]string, stdin string, args ...string) result {
	t.Helper()
	r := kezBinRun(t, environ, stdin, args...)
	if r.code != 0 {
		t.Fatalf("kez %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// inboxFrom counts the messages the inbox stream holds from each of the
// sending keys: what a refused sync from one of them would have stored.
// (Not the stream's last sequence: the installs that hold the words send
// each other the encryption keys in the background, which is no refused
// sync's doing.)
func inboxFrom(t *testing.T, js jetstream.JetStream, senders ...kez.PublicKey) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n uint64
	for _, k := range senders {
		str, err := js.Stream(ctx, callout.DefaultStream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := str.Info(ctx, jetstream.WithSubjectFilter("kez.v1.inbox.*."+k.String()))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range info.State.Subjects {
			n += c
		}
	}
	return n
}

// TestDevicesSyncToRecoveredInstall, with the built binary on a real
// stack: a recovered install has no history and says how to get it; "kez
// devices sync" on the primary sends it, and the recovered install has
// alice's contacts and messages. Syncing to this device, an unknown name,
// a name two devices have, another person's device or a revoked one is a
// sentence, exit 1, and stores nothing in the inbox stream.
func TestDevicesSyncToRecoveredInstall(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "contacts", "add", "alice")
	mustRun(t, alice, "", "send", "bob", "before the restore")
	mustRun(t, bob, "", "send", "alice", "hello alice")
	mustRun(t, alice, "", "inbox")

	home := filepath.Join(t.TempDir(), "restored")
	restored := with(st.Env(au), "KEZ_HOME", home)
	r := mustRunBin(t, restored, stacktest.Words("alice").Phrase()+"\n", "recover", "--name", "restored")
	if !strings.Contains(r.stdout, `run "kez devices sync restored" on your other device`) {
		t.Fatalf("recover does not say how to get the history:\n%s", r.stdout)
	}
	// Logged in once (its prekey is published); nothing there yet.
	if msgs := inboxLines(t, mustRunBin(t, restored, "", "inbox", "--all", "--json").stdout); len(msgs) != 0 {
		t.Fatalf("the restored install has messages before the sync: %+v", msgs)
	}

	r = mustRunBin(t, alice, "", "devices", "sync", "restored")
	for _, want := range []string{`Sending your contacts and history to "restored", end-to-end encrypted`, "Sent your encryption keys (generation 0)", "Sent 1 contact and 2 messages in 1 chunk"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("devices sync says:\n%s\nwant %q", r.stdout, want)
		}
	}
	t.Logf("kez devices sync restored:\n%s", r.stdout)
	msgs := inboxLines(t, mustRunBin(t, restored, "", "inbox", "--all", "--json").stdout)
	var texts []string
	for _, m := range msgs {
		texts = append(texts, m.Text)
	}
	if len(msgs) != 1 || msgs[0].Text != "hello alice" {
		t.Errorf("the restored install's inbox after the sync: %q", texts)
	}
	if r := mustRunBin(t, restored, "", "contacts", "list"); !strings.Contains(r.stdout, "bob@kez.test") {
		t.Errorf("the restored install's contacts:\n%s", r.stdout)
	}
	// Again: harmless, nothing doubles.
	mustRunBin(t, alice, "", "devices", "sync", "restored")
	if msgs := inboxLines(t, mustRunBin(t, restored, "", "inbox", "--all", "--json").stdout); len(msgs) != 1 {
		t.Errorf("a second sync doubled the history: %+v", msgs)
	}

	// Refusals: each a sentence, exit 1, nothing stored in any inbox.
	mustRun(t, alice, "", "devices", "revoke", "restored")
	var twinEnv map[string]string
	for _, h := range []string{"twin1", "twin2"} {
		twinEnv = with(st.Env(au), "KEZ_HOME", filepath.Join(t.TempDir(), h))
		mustRun(t, twinEnv, stacktest.Words("alice").Phrase()+"\n", "recover", "--name", "twin")
	}
	mustRun(t, bob, "", "inbox")
	js := st.JetStream(t)
	held := inboxFrom(t, js, au.Key, bu.Key)
	for _, tc := range []struct {
		name string
		env  map[string]string
		arg  string
		want string
	}{
		{"revoked", alice, "restored", `"restored" was revoked: a revoked device gets nothing`},
		{"this device", alice, "primary", `"primary" is this device`},
		{"unknown", alice, "tablet", `no current device of yours is named "tablet"`},
		{"two of that name", alice, "twin", `2 devices are named "twin": give the key of the one to send to`},
		{"another person's device", alice, bu.Key.String(), bu.Key.String() + " is not a device of yours"},
		{"another person's device by name", bob, "restored", `no current device of yours is named "restored"`},
	} {
		r := kezBinRun(t, tc.env, "", "devices", "sync", tc.arg)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "nothing was sent") || strings.Contains(r.stdout, "Sending") {
			t.Errorf("%s: exit %d\nstdout:\n%s\nstderr:\n%s\nwant %q", tc.name, r.code, r.stdout, r.stderr, tc.want)
		}
		// More is a refused sync's doing; fewer is read mail the gate
		// removed meanwhile.
		if got := inboxFrom(t, js, au.Key, bu.Key); got > held {
			t.Fatalf("%s: the inbox stream holds %d messages from alice and bob, %d before", tc.name, got, held)
		}
	}
	if r := mustRun(t, bob, "", "inbox", "--json"); strings.TrimSpace(r.stdout) != "" {
		t.Errorf("bob got something from the refused syncs:\n%s", r.stdout)
	}
	// The revoked install holds the words: it is told so, and recover
	// --force makes it a new device that logs in again.
	if r := kezCmd(t, restored, "", "inbox"); r.code != 1 || !strings.Contains(r.stderr, `this device was revoked by @alice@kez.test`) ||
		!strings.Contains(r.stderr, `"kez recover --force" here makes it a new device`) {
		t.Errorf("the revoked restored install's inbox: exit %d\n%s", r.code, r.stderr)
	}
	mustRun(t, restored, stacktest.Words("alice").Phrase()+"\n", "recover", "--force", "--name", "restored-again")
	mustRun(t, restored, "", "inbox")
	// Of the two named "twin", one by its key: 7 characters are no name,
	// 8 are enough. The primary sends both generations (1 since the
	// revocation) first.
	twin := idJSONOf(t, twinEnv, twinEnv["KEZ_HOME"]).Device
	mustRun(t, twinEnv, "", "inbox") // its prekey is published
	if r := kezBinRun(t, alice, "", "devices", "sync", twin[:7]); r.code != 1 || !strings.Contains(r.stderr, "no current device of yours is named") {
		t.Errorf("sync to a 7-character key prefix: exit %d\n%s", r.code, r.stderr)
	}
	r = mustRunBin(t, alice, "", "devices", "sync", twin[:8])
	if !strings.Contains(r.stdout, `Sending your contacts and history to "twin"`) ||
		!strings.Contains(r.stdout, "Sent your encryption keys (generations 0–1), so that it opens the private files shared with you.") {
		t.Errorf("sync after a rotation says:\n%s", r.stdout)
	}
	for _, args := range [][]string{{"devices", "sync"}, {"devices", "sync", "a", "b"}, {"devices", "sync", "restored", "--json"}, {"devices", "sync", "restored", "--no-history"}} {
		if r := kezCmd(t, alice, "", args...); r.code != 2 {
			t.Errorf("kez %s: exit %d, want 2 (usage)\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}
