package main

import (
	"bytes"
	"context"
	"encoding/json"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/multiformats/go-multibase"
)

// The conventions every command shares, run against a real dev stack.

// everyCommandStack is a stack where alice shares note.txt and serves it,
// and alice and bob are each other's contacts.
type everyCommandStack struct {
	st         *stacktest.Stack
	alice, bob map[string]string
	aliceHome  string
	note       string
}

func startEveryCommandStack(t *testing.T) *everyCommandStack {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	loopback := "/ip4/127.0.0.1/tcp/0"
	s := &everyCommandStack{
		st:        st,
		alice:     with(st.Env(au), "KEZ_P2P_LISTEN", loopback),
		bob:       with(st.Env(bu), "KEZ_P2P_LISTEN", loopback),
		aliceHome: au.Home,
		note:      filepath.Join(t.TempDir(), "note.txt"),
	}
	if err := os.WriteFile(s.note, []byte("a note from alice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRun(t, s.alice, "", "share", s.note)
	mustRun(t, s.alice, "", "contacts", "add", "bob")
	mustRun(t, s.bob, "", "contacts", "add", "alice")
	mustRun(t, s.alice, "", "send", "bob", "first message")
	aout, aerr := newWatchWriter("Online as"), newWatchWriter()
	background(t, s.alice, aout, aerr, "serve")
	aout.await(t, "Online as")
	return s
}

// Every command takes its flags before and after its arguments: both
// forms of each row do the same. One row a command (two for contacts);
// a new command without a row fails the test.
func TestEveryCommandTakesFlagsAnywhere(t *testing.T) {
	s := startEveryCommandStack(t)
	dir := t.TempDir()
	words := filepath.Join(dir, "words")
	os.WriteFile(words, []byte(stacktest.Words("carol").Phrase()+"\n"), 0o600)
	daveHome, _ := newHome(t)
	dave := map[string]string{"KEZ_HOME": daveHome} // no KEZ_SERVER: --server says it
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte("pw\n"), 0o600)
	out1, out2 := filepath.Join(dir, "fetched1.txt"), filepath.Join(dir, "fetched2.txt")
	zed := stacktest.Identity("zed").PublicKey().String() // a key to block

	type row struct {
		env           map[string]string
		stdin         string
		before, after []string
		prep          func()                    // before each form
		same          bool                      // both forms print the same
		check         func(string, result) bool // each form's result is right
	}
	ok := func(want string) func(string, result) bool {
		return func(_ string, r result) bool { return r.code == 0 && strings.Contains(r.stdout, want) }
	}
	rows := []row{
		{env: nil, before: []string{"init", "--yes", "--home", filepath.Join(dir, "i1")}, after: []string{"init", "--home", filepath.Join(dir, "i2"), "--yes"}, check: ok("Identity saved")},
		{env: nil, before: []string{"recover", "--words-file", words, "--home", filepath.Join(dir, "r1")}, after: []string{"recover", "--home", filepath.Join(dir, "r2"), "--words-file", words}, check: ok(stacktest.Identity("carol").PublicKey().String())},
		{env: nil, before: []string{"id", "--json", "--home", s.aliceHome}, after: []string{"id", "--home", s.aliceHome, "--json"}, same: true, check: ok(`"handle":"alice@kez.test"`)},
		{env: dave, before: []string{"register", "dave", "--server", s.st.ServerURL}, after: []string{"register", "--server", s.st.ServerURL, "dave"}, check: ok("@dave@kez.test")},
		{env: s.alice, before: []string{"whois", "bob", "--json"}, after: []string{"whois", "--json", "bob"}, same: true, check: ok(`"handle":"bob@kez.test"`)},
		{env: s.alice, before: []string{"contacts", "list", "--json"}, after: []string{"contacts", "--json", "list"}, same: true, check: ok(`"handle":"bob@kez.test"`)},
		{env: s.alice, before: []string{"contacts", "add", "bob", "--verbose"}, after: []string{"contacts", "--verbose", "add", "bob"}, same: true, check: ok("@bob@kez.test")},
		{env: s.alice, before: []string{"send", "bob", "a", "word", "--json"}, after: []string{"send", "--json", "bob", "a", "word"}, check: ok(`"to":"bob@kez.test"`)},
		{env: s.bob, before: []string{"inbox", "--all", "--json"}, after: []string{"inbox", "--json", "--all"}, same: true, check: ok(`"text":"a word"`)},
		{env: s.bob, stdin: "/quit\n", before: []string{"chat", "alice", "--nats", s.st.NATSURL}, after: []string{"chat", "--nats", s.st.NATSURL, "alice"}, same: true, check: ok("talking with @alice@kez.test")},
		{env: s.alice, before: []string{"share", s.note, "--name", "copy.txt"}, after: []string{"share", "--name", "copy.txt", s.note}, same: true, check: ok(`Shared "copy.txt" publicly`)},
		{env: s.alice, prep: func() { mustRun(t, s.alice, "", "share", s.note, "--name", "gone.txt") },
			before: []string{"unshare", "gone.txt", "--verbose"}, after: []string{"unshare", "--verbose", "gone.txt"}, same: true, check: ok(`Unshared "gone.txt"`)},
		{env: s.bob, before: []string{"files", "alice", "--json"}, after: []string{"files", "--json", "alice"}, same: true, check: ok(`"name":"note.txt"`)},
		{env: s.bob, before: []string{"fetch", "alice", "note.txt", "-o", out1}, after: []string{"fetch", "-o", out2, "alice", "note.txt"},
			check: func(form string, r result) bool {
				out := map[string]string{"before": out1, "after": out2}[form]
				got, _ := os.ReadFile(out)
				return r.code == 0 && string(got) == "a note from alice\n" && strings.Contains(r.stdout, "to "+out)
			}},
		{env: s.alice, before: []string{"ticket", "note.txt", "--json", "--ttl", "1h"}, after: []string{"ticket", "--ttl", "1h", "--json", "note.txt"}, check: ok(`"ticket":"kezt1`)},
		{env: nil, before: []string{"version"}, after: []string{"version"}, same: true, check: ok("kez ")},
		{env: s.alice, before: []string{"audit", "--json", "--server", s.st.SigServerURL}, after: []string{"audit", "--server", s.st.SigServerURL, "--json"}, check: ok(`"findings":[]`)},
		{env: s.alice, before: []string{"devices", "list", "--json"}, after: []string{"devices", "--json", "list"}, same: true, check: ok(`"name":"primary"`)},
		{env: s.alice, before: []string{"group", "list", "--json", "--verbose"}, after: []string{"group", "--verbose", "list", "--json"}, same: true, check: ok(`[`)},
		{env: s.alice, before: []string{"claim", "list", "--json"}, after: []string{"claim", "--json", "list"}, same: true, check: ok(`[`)},
		{env: s.alice, before: []string{"block", zed, "--verbose"}, after: []string{"block", "--verbose", zed}, check: ok(zed)},
		{env: s.alice, before: []string{"block", "--list", "--verbose"}, after: []string{"block", "--verbose", "--list"}, same: true, check: ok(zed)},
		{env: s.alice, prep: func() { mustRun(t, s.alice, "", "block", zed) },
			before: []string{"unblock", zed, "--verbose"}, after: []string{"unblock", "--verbose", zed}, same: true, check: ok("Unblocked " + zed)},
		// ui needs a terminal: both forms parse their flags, then say so
		// (ui_tmux_test.go runs it in one).
		{env: s.alice, before: []string{"ui", "--verbose", "--listen", "/ip4/127.0.0.1/tcp/0"}, after: []string{"ui", "--listen", "/ip4/127.0.0.1/tcp/0", "--verbose"}, same: true,
			check: func(_ string, r result) bool { return r.code == 2 && strings.Contains(r.stderr, "ui needs a terminal") }},
		{env: map[string]string{"KEZ_PASSPHRASE": "pw"}, before: []string{"passphrase", "set", "--new-passphrase-file", pass, "--home", daveHome},
			after: []string{"passphrase", "--home", daveHome, "--new-passphrase-file", pass, "set"}, same: true, check: ok("now encrypted")},
	}
	// serve: below, it runs until stopped; link waits for an approval
	// (devices_cmds_test.go runs it with its flag after the command).
	covered := map[string]bool{"serve": true, "link": true}
	for _, rw := range rows {
		covered[rw.before[0]] = true
		var got [2]result
		for i, args := range [][]string{rw.before, rw.after} {
			if rw.prep != nil {
				rw.prep()
			}
			got[i] = kezCmd(t, rw.env, rw.stdin, args...)
			if form := []string{"before", "after"}[i]; !rw.check(form, got[i]) {
				t.Errorf("kez %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got[i].code, got[i].stdout, got[i].stderr)
			}
		}
		// A device's last_seen is when a command last ran on it, so two
		// runs a second apart print different times: compare without them.
		if rw.same && lastSeen.ReplaceAllString(got[0].stdout, "") != lastSeen.ReplaceAllString(got[1].stdout, "") {
			t.Errorf("kez %s and kez %s print differently:\n%s\n---\n%s", strings.Join(rw.before, " "), strings.Join(rw.after, " "), got[0].stdout, got[1].stdout)
		}
	}
	for _, args := range [][]string{
		{"serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--nats", s.st.NATSURL},
		{"serve", "--nats", s.st.NATSURL, "--listen", "/ip4/127.0.0.1/tcp/0"},
	} {
		out, errw := newWatchWriter("Online as @bob@kez.test"), newWatchWriter()
		stop, wait := background(t, s.bob, out, errw, args...)
		out.await(t, "Online as @bob@kez.test")
		stop()
		if code := wait(); code != 0 {
			t.Errorf("kez %s: exit %d\n%s", strings.Join(args, " "), code, errw.String())
		}
	}
	for name := range commands {
		if !covered[name] {
			t.Errorf("kez %s has no row in this table", name)
		}
	}

	// After "--" a dash starts text, not a flag.
	mustRun(t, s.alice, "", "send", "bob", "--", "-5", "degrees")
	if got := inboxLines(t, mustRun(t, s.bob, "", "inbox", "--json").stdout); len(got) != 1 || got[0].Text != "-5 degrees" {
		t.Errorf("after --: %+v", got)
	}
}

// --json is honoured or refused (exit 2, naming --json), never ignored;
// what is honoured has every field docs/cli.md documents.
func TestEveryCommandHonoursOrRefusesJSON(t *testing.T) {
	s := startEveryCommandStack(t)
	doc := cliDoc(t)
	dir := t.TempDir()
	mustRun(t, s.alice, "", "group", "create", "crew")
	for _, tc := range []struct {
		env   map[string]string
		args  []string
		doc   string // the docs/cli.md section whose fields it has; "" if refused
		extra []string
	}{
		{nil, []string{"init", "--yes", "--home", filepath.Join(dir, "i"), "--json"}, "", nil},
		{nil, []string{"recover", "--home", filepath.Join(dir, "r"), "--json"}, "", nil},
		{s.alice, []string{"id", "--json"}, "id", nil},
		{s.alice, []string{"register", "alice", "--json"}, "", nil},
		{s.alice, []string{"whois", "bob", "--json"}, "whois", nil},
		{s.bob, []string{"contacts", "list", "--json"}, "contacts", nil},
		{s.alice, []string{"contacts", "add", "bob", "--json"}, "", nil},
		{s.alice, []string{"contacts", "verify", "bob", "--json"}, "contacts verify", nil},
		{s.alice, []string{"passphrase", "set", "--json"}, "", nil},
		{s.alice, []string{"send", "bob", "hello", "--json"}, "send", nil},
		{s.bob, []string{"inbox", "--all", "--json"}, "inbox", nil},
		{s.bob, []string{"chat", "alice", "--json"}, "", nil},
		{s.alice, []string{"share", s.note, "--json"}, "", nil},
		{s.alice, []string{"unshare", "note.txt", "--json"}, "", nil},
		{s.bob, []string{"files", "alice", "--json"}, "files", nil},
		{s.alice, []string{"files", "--json"}, "files", []string{"path", "recipients"}},
		{s.bob, []string{"fetch", "alice", "note.txt", "-o", filepath.Join(dir, "f"), "--json"}, "fetch", nil},
		{s.bob, []string{"serve", "--json"}, "", nil},
		{nil, []string{"version", "--json"}, "", nil},
		{s.bob, []string{"audit", "--json"}, "audit", nil},
		{s.alice, []string{"devices", "--json"}, "devices", nil},
		{s.alice, []string{"devices", "add", "7KQ2-M9XD-4HTA-PW3R-K", "--json"}, "", nil},
		{nil, []string{"link", "--json"}, "", nil},
		{s.alice, []string{"group", "list", "--json"}, "group", nil},
		{s.alice, []string{"group", "create", "crew2", "--json"}, "", nil},
		{s.alice, []string{"claim", "dns", "alice.example", "--json"}, "", nil},
		{s.alice, []string{"block", "--list", "--json"}, "", nil},
		{s.alice, []string{"unblock", "bob", "--json"}, "", nil},
	} {
		cmdline := "kez " + strings.Join(tc.args, " ")
		r := kezCmd(t, tc.env, "", tc.args...)
		if tc.doc == "" {
			if r.code != 2 || !strings.Contains(r.stderr, "--json") || r.stdout != "" {
				t.Errorf("%s: exit %d, want it refused (2)\nstdout:\n%s\nstderr:\n%s", cmdline, r.code, r.stdout, r.stderr)
			}
			continue
		}
		if r.code != 0 {
			t.Errorf("%s: exit %d\n%s", cmdline, r.code, r.stderr)
			continue
		}
		fields, ownExtra := jsonTemplate(t, doc, tc.doc)
		if tc.extra != nil {
			if strings.Join(ownExtra, ",") != strings.Join(tc.extra, ",") {
				t.Errorf("docs/cli.md gives %v for your own files, want %v", ownExtra, tc.extra)
			}
			fields = append(fields, ownExtra...)
		}
		checkJSONFields(t, cmdline, r.stdout, fields)
	}
}

// closedURL returns scheme://127.0.0.1:PORT where nothing listens.
func closedURL(t *testing.T, scheme string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return scheme + "://" + addr
}

// Errors are one sentence that says what to do, not a chain of package
// prefixes; each case on a real stack.
func TestErrorsAreSentences(t *testing.T) {
	s := startEveryCommandStack(t)
	deadChat, deadSig, deadNATS := closedURL(t, "http"), closedURL(t, "http"), closedURL(t, "nats")
	existing := filepath.Join(t.TempDir(), "there.txt")
	os.WriteFile(existing, []byte("mine"), 0o600)
	carol := s.st.Env(s.st.NewUser(t, "carol"))

	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
		not  string // what the sentence must not say
	}{
		// Unknown handles.
		{s.alice, []string{"whois", "zed"}, "kez whois: no one is registered as zed@kez.test\n", ""},
		{s.alice, []string{"contacts", "add", "zed"}, "kez contacts: no one is registered as zed@kez.test\n", ""},
		{s.alice, []string{"files", "zed"}, "kez files: no one is registered as zed@kez.test\n", ""},
		{s.bob, []string{"fetch", "zed", "x.txt"}, "kez fetch: no one is registered as zed@kez.test\n", ""},
		// Sending to a handle that is not a contact: add it if it exists.
		{s.alice, []string{"send", "zed", "hi"}, "kez send: no one is registered as zed@kez.test, so nothing was sent\n", "contacts add"},
		{s.alice, []string{"send", "carol", "hi"}, "kez send: carol@kez.test is not a contact yet: run kez contacts add carol@kez.test\n", ""},
		{s.alice, []string{"chat", "zed"}, "kez chat: no one is registered as zed@kez.test", "contacts add"},
		// Unreachable servers.
		{with(s.alice, "KEZ_SERVER", deadChat), []string{"whois", "bob"},
			"kez whois: cannot reach your chat-server at " + deadChat + " (connection refused): check that it is running and that KEZ_SERVER (or --server) names it\n", ""},
		{with(s.alice, "KEZ_SIG_SERVER", deadSig), []string{"share", s.note, "--name", "n2.txt"},
			"kez share: cannot reach your sig-server at " + deadSig + " (connection refused): check that it is running and that KEZ_SIG_SERVER (or --sig-server) names it\n", ""},
		{with(s.alice, "NATS_URL", deadNATS), []string{"inbox"},
			"kez inbox: cannot reach NATS at " + deadNATS + ": check that it is running and that NATS_URL (or --nats) names it\n", ""},
		// An existing output file.
		{s.bob, []string{"fetch", "alice", "note.txt", "-o", existing},
			"kez fetch: " + existing + " already exists: name another path with -o, or add --force to replace it\n", ""},
		// Not shared, offline.
		{s.bob, []string{"fetch", "alice", "nope.txt"}, `kez fetch: alice@kez.test shares no file named "nope.txt" (nor with that CID) that you may see: kez files alice@kez.test lists them` + "\n", ""},
	} {
		r := kezCmd(t, tc.env, "", tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || (tc.not != "" && strings.Contains(r.stderr, tc.not)) {
			t.Errorf("kez %s: exit %d\ngot:  %q\nwant: %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
		sentence := strings.TrimPrefix(r.stderr, "kez "+tc.args[0]+": ")
		for _, prefix := range []string{"handles:", "files:", "chat:", "sigchain:", "natsconn:", "kez:"} {
			if strings.Contains(sentence, prefix) {
				t.Errorf("kez %s: a package prefix in the sentence: %q", strings.Join(tc.args, " "), r.stderr)
			}
		}
	}
	// An offline owner: carol shares a file but does not serve.
	mustRun(t, carol, "", "share", s.note)
	if r := kezCmd(t, s.bob, "", "fetch", "carol", "note.txt", "-o", t.TempDir()); r.code != 1 ||
		r.stderr != "kez fetch: carol@kez.test is offline: ask them to run kez serve, or add --wait to wait until they do\n" {
		t.Errorf("fetch from an offline owner: exit %d\n%q", r.code, r.stderr)
	}
}

// cancelWriter cancels at its second write: the progress line of a fetch
// after the first chunk.
type cancelWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	writes int
	cancel context.CancelFunc
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.writes++; w.writes == 2 {
		w.cancel()
	}
	return w.buf.Write(p)
}

func (w *cancelWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// An interrupted fetch says how much it kept and that running it again
// resumes; it does, into the partial file docs/cli.md names. CIDs are
// compared as CIDs: every text form format.ParseCID accepts fetches.
func TestFetchInterruptedAndByCIDForms(t *testing.T) {
	s := startEveryCommandStack(t)
	big := filepath.Join(t.TempDir(), "big.bin")
	data := make([]byte, 40*format.ChunkSize+3)
	mrand.NewChaCha8([32]byte{7}).Read(data)
	os.WriteFile(big, data, 0o600)
	mustRun(t, s.alice, "", "share", big)

	out := filepath.Join(t.TempDir(), "big.bin")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := &cancelWriter{cancel: cancel}
	var stdout bytes.Buffer
	// A clock a second on at each reading draws every progress update.
	clock := time.Unix(1e9, 0)
	tick := func() time.Time { clock = clock.Add(time.Second); return clock }
	e := &env{stdin: strings.NewReader(""), stdout: &stdout, stderr: progress, isTerminal: true, now: tick, getenv: func(k string) string { return s.bob[k] }}
	if code := run(ctx, e, []string{"fetch", "alice", "big.bin", "-o", out}); code != 1 {
		t.Fatalf("interrupted fetch: exit %d\n%s", code, progress.String())
	}
	if !strings.Contains(progress.String(), "\nkez fetch: the fetch was interrupted with 256.0 KiB of 10.0 MiB verified, which is kept: run the same command to resume\n") {
		t.Errorf("interrupted fetch said:\n%s", progress.String())
	}
	if _, err := os.Stat(out + files.PartialSuffix); err != nil {
		t.Errorf("no partial file: %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("the file appeared before it was verified")
	}
	if r := mustRun(t, s.bob, "", "fetch", "alice", "big.bin", "-o", out); !strings.Contains(r.stdout, "Saved") {
		t.Errorf("resumed fetch:\n%s", r.stdout)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("the resumed file differs")
	}

	var list []fileJSON
	json.Unmarshal([]byte(mustRun(t, s.bob, "", "files", "alice", "--json").stdout), &list)
	var c string
	for _, f := range list {
		if f.Name == "note.txt" {
			c = f.CID
		}
	}
	parsed, err := format.ParseCID(c)
	if err != nil {
		t.Fatalf("the listed CID %q: %v", c, err)
	}
	b58, err := parsed.StringOfBase(multibase.Base58BTC)
	if err != nil {
		t.Fatal(err)
	}
	for _, form := range []string{c, strings.ToUpper(c), b58} {
		dst := filepath.Join(t.TempDir(), "by-cid.txt")
		r := kezCmd(t, s.bob, "", "fetch", "alice", form, "-o", dst)
		if got, _ := os.ReadFile(dst); r.code != 0 || string(got) != "a note from alice\n" {
			t.Errorf("fetch by CID %s: exit %d\n%s", form, r.code, r.stderr)
		}
	}
	// Unshare takes any form too.
	mustRun(t, s.alice, "", "share", s.note, "--name", "other.txt")
	if r := mustRun(t, s.alice, "", "unshare", strings.ToUpper(c)); strings.Count(r.stdout, "Unshared") != 2 {
		t.Errorf("unshare by an upper-case CID:\n%s", r.stdout)
	}
}

// No log lines on the terminal by default; --verbose shows them.
// "contacts list" reads this machine only, so dead servers do not matter.
func TestNoLogLinesUnlessVerbose(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, _ := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice := st.Env(au)
	// The sig-server alice's client fetches her own chain from is dead,
	// which the SDK logs as a warning.
	deadSig := with(alice, "KEZ_SIG_SERVER", closedURL(t, "http"))
	r := mustRun(t, deadSig, "", "contacts", "add", "bob")
	if r.stderr != "" {
		t.Errorf("contacts add printed log lines:\n%s", r.stderr)
	}
	r = mustRun(t, deadSig, "", "contacts", "add", "bob", "--verbose")
	if !strings.Contains(r.stderr, "level=WARN") || !strings.Contains(r.stderr, "own sigchain") {
		t.Errorf("contacts add --verbose printed no log lines:\n%s", r.stderr)
	}
	dead := with(alice, "KEZ_SERVER", closedURL(t, "http"), "KEZ_SIG_SERVER", closedURL(t, "http"), "NATS_URL", closedURL(t, "nats"))
	if r := mustRun(t, dead, "", "contacts", "list"); r.stderr != "" || !strings.Contains(r.stdout, "@bob@kez.test") {
		t.Errorf("contacts list with every server down:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
	}
}

// kez serve says in a sentence when it lost NATS and when it is back, and
// Ctrl-C returns promptly while NATS is down.
func TestServeSaysWhenNATSIsLostAndBack(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := with(st.Env(st.NewUser(t, "alice")), "KEZ_P2P_LISTEN", "/ip4/127.0.0.1/tcp/0")
	lost, back := "Lost the connection to NATS at "+st.NATSURL, "Connected to NATS again"
	out, errw := newWatchWriter("Online as"), newWatchWriter(lost, back)
	stop, wait := background(t, alice, out, errw, "serve")
	out.await(t, "Online as")

	st.NATS().Shutdown()
	errw.await(t, lost)
	st.NATS().Restart()
	errw.await(t, back)
	if strings.Contains(errw.String(), "level=") {
		t.Errorf("serve printed log lines:\n%s", errw.String())
	}

	st.NATS().Shutdown()
	started := time.Now()
	stop()
	code := wait()
	took := time.Since(started)
	t.Logf("kez serve stopped %s after Ctrl-C with NATS down", took)
	if code != 0 || took > 3*time.Second {
		t.Errorf("Ctrl-C with NATS down: exit %d after %s\n%s", code, took, errw.String())
	}
	if !strings.Contains(out.String(), "Offline.") {
		t.Errorf("serve output:\n%s", out.String())
	}
}

// URLs from the environment win over the profile's: after a dev stack
// restarts on other ports, ". DIR/env" is all a client needs.
func TestEnvironmentWinsOverProfile(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, _ := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	stale := &profile{Key: au.Key.String(), Handle: "alice@kez.test", Domain: "kez.test", Server: closedURL(t, "http"), SigServer: closedURL(t, "http")}
	if err := saveProfile(au.Home, stale); err != nil {
		t.Fatal(err)
	}
	alice := st.Env(au)
	mustRun(t, alice, "", "whois", "bob")
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, alice, "", "send", "bob", "hello")
	// Without the environment the stale profile is used, and the error
	// says where the address comes from.
	r := kezCmd(t, map[string]string{"KEZ_HOME": au.Home}, "", "whois", "bob")
	if r.code != 1 || !strings.Contains(r.stderr, "cannot reach your chat-server at "+stale.Server) || !strings.Contains(r.stderr, "KEZ_SERVER") {
		t.Errorf("whois with a stale profile: exit %d\n%s", r.code, r.stderr)
	}
}

// kez tells its libp2p peers who it is: agent "kez/VERSION".
func TestLibp2pUserAgent(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.Env(st.NewUser(t, "alice"))
	ctx := context.Background()
	e := &env{stdin: strings.NewReader(""), stdout: new(bytes.Buffer), stderr: new(bytes.Buffer), getenv: func(k string) string { return alice[k] }}
	s, _, err := e.openSharing(ctx, chatFlags{}, true, nil, "/ip4/127.0.0.1/tcp/0")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	node, err := s.Node()
	if err != nil {
		t.Fatal(err)
	}
	peer, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	sub, err := peer.EventBus().Subscribe(new(event.EvtPeerIdentificationCompleted))
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := peer.Connect(ctx, node.AddrInfo()); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case ev := <-sub.Out():
			if ev.(event.EvtPeerIdentificationCompleted).Peer != node.ID() {
				continue
			}
			if av, err := peer.Peerstore().Get(node.ID(), "AgentVersion"); err != nil || av != userAgent() {
				t.Errorf("agent version %v (%v), want %q", av, err, userAgent())
			}
			return
		case <-time.After(20 * time.Second):
			t.Fatal("the peers never identified each other")
		}
	}
}

// lastSeen matches the last_seen field of devices list --json.
var lastSeen = regexp.MustCompile(`"last_seen":("[^"]*"|null)`)
