package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// linkPhone links a new install of u named name ("kez link", then "kez
// devices add --no-history" on u's primary install) and returns its
// environment.
func linkPhone(t *testing.T, st *stacktest.Stack, u *stacktest.User, name string) map[string]string {
	t.Helper()
	fastLinkPoll(t)
	phone := with(st.Env(u), "KEZ_HOME", filepath.Join(t.TempDir(), name))
	code, out, wait := startLink(t, phone, name)
	mustRun(t, st.Env(u), "", "devices", "add", code, "--no-history")
	if c := wait(); c != 0 {
		t.Fatalf("link: exit %d\n%s", c, out.String())
	}
	return phone
}

// contactsOnStack starts a stack where alice and bob are each other's
// contacts and alice fetched her inbox once.
func contactsOnStack(t *testing.T) (st *stacktest.Stack, bu *stacktest.User, alice, bob map[string]string) {
	t.Helper()
	st = stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	bu = st.NewUser(t, "bob")
	alice, bob = st.Env(au), st.Env(bu)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "contacts", "add", "alice")
	mustRun(t, alice, "", "inbox")
	return st, bu, alice, bob
}

// TestDevicesLastSeen: "kez devices" says when the chat-server last saw
// each device: this one now, another that fetched its messages a moment
// ago "just now", a revoked one "-"; --json has last_seen. With the
// broker down the list is still shown, the times "unknown", and why on
// stderr.
func TestDevicesLastSeen(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	bu := st.NewUser(t, "bob")
	bob := st.Env(bu)
	mustRun(t, bob, "", "inbox")
	phone := linkPhone(t, st, bu, "phone")
	mustRun(t, phone, "", "inbox") // fetches: seen

	r := mustRun(t, bob, "", "devices")
	lines := strings.Split(r.stdout, "\n")
	if len(lines) < 4 || !strings.Contains(lines[1], "LAST SEEN") ||
		!strings.HasPrefix(lines[2], "* primary") || !strings.Contains(lines[2], "now (this device)") ||
		!strings.HasPrefix(lines[3], "  phone") || !strings.Contains(lines[3], "just now") {
		t.Fatalf("kez devices:\n%s", r.stdout)
	}
	var devs []deviceJSON
	if err := json.Unmarshal([]byte(mustRun(t, phone, "", "devices", "--json").stdout), &devs); err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || devs[0].LastSeen == nil || devs[1].LastSeen == nil || !devs[1].This ||
		time.Since(*devs[0].LastSeen) > time.Minute || time.Since(*devs[1].LastSeen) > time.Minute {
		t.Fatalf("kez devices --json on the phone: %+v", devs)
	}

	// The broker is down: the chain's list, times unknown.
	r = mustRun(t, with(bob, "NATS_URL", "nats://127.0.0.1:1"), "", "devices")
	if !strings.Contains(r.stderr, "when your devices were last seen is unknown") || !strings.Contains(r.stdout, "unknown") || !strings.Contains(r.stdout, "* primary") {
		t.Errorf("kez devices without the broker:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}

	mustRun(t, bob, "", "devices", "revoke", "phone")
	r = mustRun(t, bob, "", "devices")
	if !strings.Contains(r.stdout, "  phone") || !strings.Contains(r.stdout, " -  ") || !strings.Contains(r.stdout, ", revoked ") {
		t.Errorf("kez devices after the revocation:\n%s", r.stdout)
	}
}

// TestContactDeviceNotices: when bob links a phone and writes from it,
// alice's "kez inbox" tells her, as a plain notice (no warning), and
// "kez contacts list" keeps it; when he revokes it, her "kez chat" tells
// her at once (it checks the contact).
func TestContactDeviceNotices(t *testing.T) {
	st, bu, alice, bob := contactsOnStack(t)
	if r := mustRun(t, bob, "", "inbox"); strings.Contains(r.stderr, "a device") {
		t.Fatalf("a notice with no device change:\n%s", r.stderr)
	}

	phone := linkPhone(t, st, bu, "phone")
	mustRun(t, phone, "", "contacts", "add", "alice")
	mustRun(t, phone, "", "send", "alice", "from my phone")
	r := mustRun(t, alice, "", "inbox")
	if !strings.Contains(r.stdout, "@bob@kez.test: from my phone") {
		t.Errorf("alice's inbox:\n%s", r.stdout)
	}
	notice := `@bob@kez.test added a device, "phone" (signed by their key).`
	if !strings.Contains(r.stderr, notice) || strings.Contains(strings.ToUpper(r.stderr), "WARNING") {
		t.Errorf("alice's inbox says on stderr:\n%s\nwant %q and no warning", r.stderr, notice)
	}
	if r := mustRun(t, alice, "", "inbox"); strings.Contains(r.stderr, "added a device") {
		t.Errorf("told again:\n%s", r.stderr)
	}
	if r := mustRun(t, alice, "", "contacts", "list"); !strings.Contains(r.stdout, notice) {
		t.Errorf("contacts list:\n%s", r.stdout)
	}
	var cs []contactJSON
	if err := json.Unmarshal([]byte(mustRun(t, alice, "", "contacts", "list", "--json").stdout), &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs) != 1 || len(cs[0].DeviceEvents) != 1 || cs[0].DeviceEvents[0].Name != "phone" || cs[0].DeviceEvents[0].Revoked {
		t.Fatalf("contacts list --json: %+v", cs)
	}

	mustRun(t, bob, "", "devices", "revoke", "phone")
	r = mustRun(t, alice, "", "chat", "bob") // no input: it checks bob, shows the talk, leaves
	if want := `@bob@kez.test revoked a device, "phone" (signed by their key).`; !strings.Contains(r.stderr, want) {
		t.Errorf("kez chat says on stderr:\n%s\nwant %q", r.stderr, want)
	}
	if err := json.Unmarshal([]byte(mustRun(t, alice, "", "contacts", "list", "--json").stdout), &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs[0].DeviceEvents) != 2 || !cs[0].DeviceEvents[1].Revoked || cs[0].Flag != "" {
		t.Fatalf("contacts list --json after the revocation: %+v", cs)
	}
}

// TestTerminalChatDeviceNotice: the built binary, in a real terminal:
// while alice talks with bob in "kez chat", bob writes from a phone he
// just linked; her screen shows the notice, then his message.
func TestTerminalChatDeviceNotice(t *testing.T) {
	st, bu, alice, _ := contactsOnStack(t)
	tm := startTerminal(t, alice, "chat", "bob")
	tm.waitFor("-- talking with @bob@kez.test")

	phone := linkPhone(t, st, bu, "phone")
	mustRun(t, phone, "", "contacts", "add", "alice")
	mustRun(t, phone, "", "send", "alice", "hello from the phone")
	tm.waitFor(`@bob@kez.test added a device, "phone" (signed by their key).`)
	tm.waitFor("@bob@kez.test: hello from the phone")
	tm.typeLine("/quit")
	tm.waitFor("[exit 0]")
}
