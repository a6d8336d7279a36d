package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
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

// inboxLastSeq is the sequence of the last message the inbox stream ever
// stored: it does not move unless something was sent.
func inboxLastSeq(t *testing.T, st *stacktest.Stack) uint64 {
	t.Helper()
	jsz, err := st.NATS().Server().Jsz(&server.JSzOptions{Account: callout.DefaultChatAccount, Streams: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range jsz.AccountDetails {
		for _, sd := range a.Streams {
			if sd.Name == callout.DefaultStream {
				return sd.State.LastSeq
			}
		}
	}
	t.Fatal("no inbox stream")
	return 0
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
	for _, want := range []string{`Sending your contacts and history to "restored", end-to-end encrypted`, "Sent 1 contact and 2 messages in 1 chunk"} {
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
	for _, h := range []string{"twin1", "twin2"} {
		mustRun(t, with(st.Env(au), "KEZ_HOME", filepath.Join(t.TempDir(), h)), stacktest.Words("alice").Phrase()+"\n", "recover", "--name", "twin")
	}
	mustRun(t, bob, "", "inbox")
	seq := inboxLastSeq(t, st)
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
		if got := inboxLastSeq(t, st); got != seq {
			t.Fatalf("%s: the inbox stream stored %d messages", tc.name, got-seq)
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
	for _, args := range [][]string{{"devices", "sync"}, {"devices", "sync", "a", "b"}, {"devices", "sync", "restored", "--json"}, {"devices", "sync", "restored", "--no-history"}} {
		if r := kezCmd(t, alice, "", args...); r.code != 2 {
			t.Errorf("kez %s: exit %d, want 2 (usage)\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}
