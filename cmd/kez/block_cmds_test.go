package main

import (
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// kez block and kez unblock: a stranger's requests are deleted and what
// they send next is dropped; a blocked contact cannot be written to;
// yourself cannot be blocked; the list names contacts.
func TestBlockCommands(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, cu := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol")
	alice, bob, carol := st.Env(au), st.Env(bu), st.Env(cu)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "contacts", "add", "alice")
	mustRun(t, carol, "", "contacts", "add", "alice")

	// carol is a stranger to alice: her message is a request, and the
	// list of requests says how to block her.
	mustRun(t, carol, "", "send", "alice", "buy my stuff")
	r := mustRun(t, alice, "", "inbox", "--requests")
	if !strings.Contains(r.stdout, "buy my stuff") || !strings.Contains(r.stderr, "kez block HANDLE") || !strings.Contains(r.stderr, "kez contacts add HANDLE") {
		t.Fatalf("inbox --requests:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
	r = mustRun(t, alice, "", "block", "carol")
	if !strings.Contains(r.stdout, "Blocked @carol@kez.test: what they send is dropped from now on, and their 1 message request(s) were deleted.") ||
		!strings.Contains(r.stdout, "kez unblock "+cu.Key.String()) {
		t.Errorf("block carol:\n%s", r.stdout)
	}
	if r = mustRun(t, alice, "", "block", cu.Key.String()); !strings.Contains(r.stdout, cu.Key.String()+" is already blocked.") {
		t.Errorf("block carol again:\n%s", r.stdout)
	}
	mustRun(t, carol, "", "send", "alice", "buy it now")
	if r = mustRun(t, alice, "", "inbox", "--requests"); !strings.Contains(r.stdout, "No message requests.") {
		t.Errorf("requests after the block:\n%s", r.stdout)
	}

	// A contact.
	r = mustRun(t, alice, "", "block", "bob")
	if !strings.Contains(r.stdout, "Blocked @bob@kez.test, a contact") {
		t.Errorf("block bob:\n%s", r.stdout)
	}
	r = kezCmd(t, alice, "", "send", "bob", "hi")
	if r.code != 1 || !strings.Contains(r.stderr, "you blocked bob@kez.test, so nothing was sent: kez unblock bob@kez.test first") {
		t.Errorf("send to a blocked contact: exit %d\n%s", r.code, r.stderr)
	}
	mustRun(t, bob, "", "send", "alice", "are you there?")
	if r = mustRun(t, alice, "", "inbox"); !strings.Contains(r.stdout, "No new messages.") {
		t.Errorf("inbox with bob blocked:\n%s", r.stdout)
	}
	r = mustRun(t, alice, "", "block", "--list")
	if want := bu.Key.String() + "  @bob@kez.test (a contact)"; !strings.Contains(r.stdout, cu.Key.String()+"\n") || !strings.Contains(r.stdout, want) {
		t.Errorf("block --list:\n%s", r.stdout)
	}

	// Yourself: refused, in words.
	r = kezCmd(t, alice, "", "block", au.Key.String())
	if r.code != 1 || !strings.Contains(r.stderr, "you cannot block yourself") {
		t.Errorf("block yourself: exit %d\n%s", r.code, r.stderr)
	}

	// Unblocking: the next message arrives, the dropped one does not.
	if r = mustRun(t, alice, "", "unblock", "bob"); !strings.Contains(r.stdout, "Unblocked @bob@kez.test") {
		t.Errorf("unblock bob:\n%s", r.stdout)
	}
	if r = mustRun(t, alice, "", "unblock", "bob"); !strings.Contains(r.stdout, "@bob@kez.test is not blocked.") {
		t.Errorf("unblock bob again:\n%s", r.stdout)
	}
	mustRun(t, bob, "", "send", "alice", "back again")
	r = mustRun(t, alice, "", "inbox")
	if !strings.Contains(r.stdout, "back again") || strings.Contains(r.stdout, "are you there?") {
		t.Errorf("inbox after unblocking:\n%s", r.stdout)
	}
	mustRun(t, alice, "", "send", "bob", "welcome back")
	if r = mustRun(t, alice, "", "block", "--list"); strings.Contains(r.stdout, bu.Key.String()) {
		t.Errorf("bob still listed:\n%s", r.stdout)
	}
}
