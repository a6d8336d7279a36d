package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// groupsOf is "kez group list --json" of environ.
func groupsOf(t *testing.T, environ map[string]string) []groupJSON {
	t.Helper()
	var gs []groupJSON
	if err := json.Unmarshal([]byte(mustRun(t, environ, "", "group", "list", "--json").stdout), &gs); err != nil {
		t.Fatal(err)
	}
	return gs
}

// groupShowJSON is "kez group show --json" as a test reads it.
type groupShowJSON struct {
	Name    string            `json:"name"`
	Title   string            `json:"title"`
	Role    string            `json:"role"`
	Epoch   uint64            `json:"epoch"`
	Seqno   uint64            `json:"seqno"`
	Head    string            `json:"head"`
	Members []groupMemberJSON `json:"members"`
}

// groupTexts returns the texts of the lines of "kez inbox --json" output
// that are messages of group g.
func groupTexts(t *testing.T, out, g string) []string {
	t.Helper()
	var texts []string
	for _, m := range inboxLines(t, out) {
		if m.Group == g {
			texts = append(texts, m.Text)
		}
	}
	return texts
}

// The group commands end to end on a real stack: create, add, list, show,
// send --group and inbox, a removal that locks the removed member out, the
// refusals worded as sentences, and a file shared to the group.
func TestGroupCommands(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu, cu, du := st.NewUser(t, "alice"), st.NewUser(t, "bob"), st.NewUser(t, "carol"), st.NewUser(t, "dave")
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice, bob := with(st.Env(au), "KEZ_P2P_LISTEN", loopback), with(st.Env(bu), "KEZ_P2P_LISTEN", loopback)
	carol, dave := with(st.Env(cu), "KEZ_P2P_LISTEN", loopback), with(st.Env(du), "KEZ_P2P_LISTEN", loopback)
	// Each has run kez once (it publishes the prekeys that group news and
	// keys are sealed with).
	for _, u := range []map[string]string{bob, carol, dave} {
		mustRun(t, u, "", "inbox")
	}

	r := mustRun(t, alice, "", "group", "create", "team", "--title", "The team")
	if !strings.Contains(r.stdout, "Created the group team@kez.test; you are its owner.") {
		t.Errorf("group create:\n%s", r.stdout)
	}
	r = mustRun(t, alice, "", "group", "add", "team", "bob", "carol")
	if !strings.Contains(r.stdout, "Added @bob@kez.test, @carol@kez.test to team@kez.test (3 members).") {
		t.Errorf("group add:\n%s", r.stdout)
	}
	if gs := groupsOf(t, alice); len(gs) != 1 || gs[0].Name != "team@kez.test" || gs[0].Title != "The team" || gs[0].Role != "owner" || gs[0].Members != float64(3) {
		t.Fatalf("alice's group list: %+v", gs)
	}
	var show groupShowJSON
	if err := json.Unmarshal([]byte(mustRun(t, alice, "", "group", "show", "team", "--json").stdout), &show); err != nil {
		t.Fatal(err)
	}
	if show.Name != "team@kez.test" || show.Seqno != 2 || show.Epoch != 2 || show.Head == "" || len(show.Members) != 3 ||
		show.Members[0].Handle != "alice@kez.test" || show.Members[0].Role != "owner" || show.Members[1].Role != "member" ||
		show.Members[0].Key != au.Key.String() || len(show.Members[1].Devices) != 1 {
		t.Fatalf("group show --json: %+v", show)
	}
	if r := mustRun(t, alice, "", "group", "show", "team"); !strings.Contains(r.stdout, "@bob@kez.test") || !strings.Contains(r.stdout, "epoch 2") {
		t.Errorf("group show:\n%s", r.stdout)
	}

	// A message to the group reaches both members; bob learns of the
	// group from the news of the change.
	if r := mustRun(t, alice, "", "send", "--group", "team", "hello", "team"); !strings.Contains(r.stdout, "Sent to the group team@kez.test") {
		t.Errorf("send --group:\n%s", r.stdout)
	}
	r = mustRun(t, bob, "", "inbox", "--json")
	if got := groupTexts(t, r.stdout, "team@kez.test"); len(got) != 1 || got[0] != "hello team" {
		t.Fatalf("bob's inbox: %v\n%s", got, r.stdout)
	}
	if gs := groupsOf(t, bob); len(gs) != 1 || gs[0].Role != "member" {
		t.Fatalf("bob's group list: %+v", gs)
	}
	if r := mustRun(t, carol, "", "inbox"); !strings.Contains(r.stdout, "@alice@kez.test in team@kez.test: hello team") {
		t.Errorf("carol's inbox:\n%s", r.stdout)
	}
	// Bob and carol read it: alice's copy says so.
	var readBy []string
	for _, m := range inboxLines(t, mustRun(t, alice, "", "inbox", "--group", "team", "--json").stdout) {
		if m.Text == "hello team" && m.Group == "team@kez.test" && m.ReadBy != nil {
			readBy = *m.ReadBy
		}
	}
	if !slices.Contains(readBy, bu.Key.String()) || !slices.Contains(readBy, cu.Key.String()) {
		t.Errorf("alice's message was read by %v, want bob and carol", readBy)
	}
	if r := mustRun(t, alice, "", "inbox", "--group", "team"); !strings.Contains(r.stdout, "you: hello team (read by 2)") {
		t.Errorf("inbox --group:\n%s", r.stdout)
	}
	var sent sendGroupJSON
	if err := json.Unmarshal([]byte(mustRun(t, bob, "", "send", "--group", "team", "--json", "hi all").stdout), &sent); err != nil || sent.Group != "team@kez.test" || sent.ID == "" {
		t.Fatalf("send --group --json: %+v, %v", sent, err)
	}

	// Refusals: sentences, nothing changed.
	dir := t.TempDir()
	plan := filepath.Join(dir, "plan.txt")
	os.WriteFile(plan, []byte("the team's plan"), 0o600)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{bob, []string{"group", "add", "team", "dave"}, "your role in team@kez.test does not allow that"},
		{alice, []string{"group", "leave", "team"}, "you own team@kez.test, and its owner cannot leave it"},
		{alice, []string{"send", "--group", "nosuch", "hi"}, "you are in no group named nosuch@kez.test"},
		{dave, []string{"send", "--group", "team@kez.test", "hi"}, "you are in no group named team@kez.test"},
		{alice, []string{"group", "remove", "team", "dave"}, "@dave@kez.test: not a member of team@kez.test"},
		{alice, []string{"group", "add", "team", "bob"}, "@bob@kez.test: already a member (or already in that role) of team@kez.test"},
		{alice, []string{"group", "add", "team", "zed", "dave"}, "no one is registered as zed@kez.test, so nothing was changed"},
		{alice, []string{"group", "create", "Bad Name"}, `"Bad Name" is not a valid group name`},
		{alice, []string{"group", "create", "../etc"}, `"../etc" is not a valid group name`},
		{alice, []string{"group", "create", "crew", "--title", "a\x01b"}, "that is not a valid change of crew@kez.test"},
		{dave, []string{"group", "create", "team"}, "the name team@kez.test is taken on its sig-server: choose another name"},
		{dave, []string{"group", "show", "team@kez.test"}, "you are in no group named team@kez.test"},
		{dave, []string{"chat", "--group", "team@kez.test"}, "you are in no group named team@kez.test"},
		{dave, []string{"share", plan, "--group", "team@kez.test"}, "you are in no group named team@kez.test"},
	} {
		r := kezCmd(t, tc.env, "", tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("kez %s: exit %d\n%s", strings.Join(tc.args, " "), r.code, r.stderr)
		}
		for _, prefix := range []string{"group:", "chat:", "files:"} {
			if strings.Contains(strings.TrimPrefix(r.stderr, "kez "+tc.args[0]+": "), prefix) {
				t.Errorf("kez %s: a package prefix in the sentence: %q", strings.Join(tc.args, " "), r.stderr)
			}
		}
	}

	// A file shared to the group: its key goes to bob and carol in the
	// group; they list it, see it in their inbox and fetch it.
	r = mustRun(t, alice, "", "share", plan, "--group", "team")
	if !strings.Contains(r.stdout, `Shared "plan.txt" privately with the 3 members of team@kez.test`) ||
		!strings.Contains(r.stdout, `kez fetch --group team@kez.test "plan.txt"`) {
		t.Errorf("share --group:\n%s", r.stdout)
	}
	if r := kezCmd(t, alice, "", "share", plan, "--group", "team", "--to", "bob"); r.code != 2 {
		t.Errorf("share --group --to: exit %d\n%s", r.code, r.stderr)
	}
	var own []ownFileJSON
	if err := json.Unmarshal([]byte(mustRun(t, alice, "", "files", "--json").stdout), &own); err != nil || len(own) != 1 || own[0].Group != "team@kez.test" || !own[0].Private {
		t.Fatalf("alice's files: %+v, %v", own, err)
	}
	var offered []groupFileJSON
	if err := json.Unmarshal([]byte(mustRun(t, carol, "", "files", "--group", "team", "--json").stdout), &offered); err != nil ||
		len(offered) != 1 || offered[0].Name != "plan.txt" || offered[0].Size != int64(len("the team's plan")) || offered[0].From != "alice@kez.test" ||
		offered[0].FromKey != au.Key.String() || offered[0].CID == "" || offered[0].ID == "" {
		t.Fatalf("carol's files --group: %+v, %v", offered, err)
	}
	if r := mustRun(t, carol, "", "files", "--group", "team"); !strings.Contains(r.stdout, "1 file(s) were shared with team@kez.test:") || !strings.Contains(r.stdout, "from @alice@kez.test") {
		t.Errorf("files --group:\n%s", r.stdout)
	}
	r = mustRun(t, bob, "", "inbox", "--json")
	var fileLine *inboxJSON
	for _, m := range inboxLines(t, r.stdout) {
		if m.Kind == "group-file" {
			fileLine = &m
		}
	}
	if fileLine == nil || fileLine.Group != "team@kez.test" || fileLine.File == nil || fileLine.File.Name != "plan.txt" || fileLine.File.CID != offered[0].CID ||
		fileLine.FromKey != au.Key.String() || strings.Contains(r.stdout, `"key"`) {
		t.Fatalf("bob's inbox --json: %+v\n%s", fileLine, r.stdout)
	}
	if r := mustRun(t, carol, "", "inbox", "--group", "team"); !strings.Contains(r.stdout, `@alice@kez.test: shared the file "plan.txt" (15 B): kez fetch --group team@kez.test "plan.txt"`) {
		t.Errorf("carol's inbox --group:\n%s", r.stdout)
	}
	aout, aerr := newWatchWriter("Online as"), newWatchWriter()
	background(t, alice, aout, aerr, "serve")
	aout.await(t, "Online as")
	bobDir := t.TempDir()
	if r := mustRun(t, bob, "", "fetch", "--group", "team", "plan.txt", "-o", bobDir); !strings.Contains(r.stdout, `Saved "plan.txt"`) {
		t.Errorf("fetch --group:\n%s", r.stdout)
	}
	if got, _ := os.ReadFile(filepath.Join(bobDir, "plan.txt")); string(got) != "the team's plan" {
		t.Fatalf("bob fetched %q", got)
	}
	carolDir := t.TempDir()
	mustRun(t, carol, "", "fetch", "--group", "team@kez.test", offered[0].CID, "-o", carolDir)
	if got, _ := os.ReadFile(filepath.Join(carolDir, "plan.txt")); string(got) != "the team's plan" {
		t.Fatalf("carol fetched %q", got)
	}
	// Without the offer: the name is nowhere, the CID is the group's.
	if r := kezCmd(t, bob, "", "fetch", "alice", offered[0].CID, "-o", t.TempDir()); r.code != 1 || !strings.Contains(r.stderr, "shares that file with a group") {
		t.Errorf("bob fetches the CID without --group: exit %d\n%s", r.code, r.stderr)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"fetch", "--group", "team", "nosuch.txt"}, `no file named "nosuch.txt" (nor with that CID) was offered in team@kez.test to you`},
		{[]string{"fetch", "--group", "team", "alice", "plan.txt"}, "fetch --group takes one NAME or CID"},
		{[]string{"files", "--group", "team", "alice"}, "files --group takes no HANDLE"},
	} {
		if r := kezCmd(t, bob, "", tc.args...); r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("kez %s: exit %d\n%s", strings.Join(tc.args, " "), r.code, r.stderr)
		}
	}

	// Carol is removed: she hears of it, reads nothing sent after, and
	// cannot send; dave, added later, does not see the file.
	r = mustRun(t, alice, "", "group", "remove", "team", "carol")
	if !strings.Contains(r.stdout, "Removed @carol@kez.test from team@kez.test (2 members): nothing sent to the group from now on reaches them.") {
		t.Errorf("group remove:\n%s", r.stdout)
	}
	mustRun(t, alice, "", "send", "--group", "team", "after carol")
	if got := groupTexts(t, mustRun(t, bob, "", "inbox", "--json").stdout, "team@kez.test"); len(got) != 1 || got[0] != "after carol" {
		t.Errorf("bob after the removal: %v", got)
	}
	if got := groupTexts(t, mustRun(t, carol, "", "inbox", "--json").stdout, "team@kez.test"); strings.Contains(strings.Join(got, "|"), "after carol") {
		t.Errorf("carol, removed, reads: %v", got)
	}
	if gs := groupsOf(t, carol); len(gs) != 1 || !gs[0].Left || gs[0].Role != "" {
		t.Errorf("carol's group list: %+v", gs)
	}
	if r := kezCmd(t, carol, "", "send", "--group", "team@kez.test", "still here?"); r.code != 1 || !strings.Contains(r.stderr, "you are not a member of team@kez.test (any more)") {
		t.Errorf("carol sends after her removal: exit %d\n%s", r.code, r.stderr)
	}
	mustRun(t, alice, "", "group", "add", "team", "dave")
	mustRun(t, dave, "", "inbox")
	if r := kezCmd(t, dave, "", "fetch", "alice", "plan.txt", "-o", t.TempDir()); r.code != 1 || !strings.Contains(r.stderr, `shares no file named "plan.txt"`) {
		t.Errorf("dave, added after the share, fetches: exit %d\n%s", r.code, r.stderr)
	}
	if r := kezCmd(t, dave, "", "fetch", "--group", "team", "plan.txt", "-o", t.TempDir()); r.code != 1 || !strings.Contains(r.stderr, `no file named "plan.txt" (nor with that CID) was offered in team@kez.test to you`) {
		t.Errorf("dave, added after the share, fetches --group: exit %d\n%s", r.code, r.stderr)
	}
	if r := mustRun(t, dave, "", "files", "--group", "team"); !strings.Contains(r.stdout, "No file was shared with team@kez.test since you joined it") {
		t.Errorf("dave's files --group:\n%s", r.stdout)
	}

	// Roles: bob made admin may add; the owner hands the group over.
	if r := mustRun(t, alice, "", "group", "role", "team", "bob", "admin"); !strings.Contains(r.stdout, "@bob@kez.test is now an admin of team@kez.test.") {
		t.Errorf("group role:\n%s", r.stdout)
	}
	mustRun(t, bob, "", "inbox")
	mustRun(t, bob, "", "group", "add", "team", "carol")
	mustRun(t, alice, "", "group", "role", "team", "bob", "owner")
	if r := mustRun(t, alice, "", "group", "leave", "team"); !strings.Contains(r.stdout, "You left team@kez.test") {
		t.Errorf("group leave:\n%s", r.stdout)
	}
}

func TestGroupCommandsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"group"}, {"group", "nope"}, {"group", "create"}, {"group", "create", "a", "b"}, {"group", "add", "team"},
		{"group", "remove", "team"}, {"group", "role", "team", "bob"}, {"group", "role", "team", "bob", "boss"},
		{"group", "leave"}, {"group", "list", "x"}, {"group", "show"}, {"group", "add", "team", "bob", "--json"},
		{"group", "list", "--title", "x"}, {"send", "--group", "team", "--wait", "hi"}, {"chat", "bob", "--group", "team"},
		{"inbox", "--group", "team", "--all"}, {"inbox", "--group", "team", "--requests"},
	} {
		if r := kezCmd(t, nil, "", args...); r.code != 2 || !strings.Contains(r.stderr, "usage: kez "+args[0]) {
			t.Errorf("kez %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// kez chat --group in a real terminal: the history, a member's message
// as it arrives, a line typed that reaches the others, /quit.
func TestTerminalGroupChat(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	mustRun(t, bob, "", "inbox")
	mustRun(t, alice, "", "group", "create", "team")
	mustRun(t, alice, "", "group", "add", "team", "bob")
	mustRun(t, alice, "", "send", "--group", "team", "before you came in")
	mustRun(t, bob, "", "inbox")

	tm := startTerminal(t, bob, "chat", "--group", "team@kez.test")
	tm.waitFor("before you came in")
	tm.waitFor("-- talking in team@kez.test (2 members); /quit leaves --")
	mustRun(t, alice, "", "send", "--group", "team", "are you there?")
	tm.waitFor("@alice@kez.test: are you there?")
	tm.typeLine("yes, here")
	tm.typeLine("/quit")
	tm.waitFor("[exit 0]")
	if got := groupTexts(t, mustRun(t, alice, "", "inbox", "--json").stdout, "team@kez.test"); len(got) != 1 || got[0] != "yes, here" {
		t.Errorf("alice's inbox after bob's chat: %v", got)
	}
}
