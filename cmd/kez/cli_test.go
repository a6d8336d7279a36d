package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/claims"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
)

// The conventions every command shares: usage lines, help, environment,
// flag errors, JSON. The tests that need a dev stack are in
// cli_stack_test.go.

// flagsOf returns the names of the flags a command defines.
func flagsOf(c *command) []string {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs, &env{getenv: func(string) string { return "" }})
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	return names
}

// mentionsFlag reports whether a usage text names the flag, as "--name"
// (or "-o" for a one-letter flag).
func mentionsFlag(text, name string) bool {
	dashes := "--"
	if len(name) == 1 {
		dashes = "-"
	}
	return regexp.MustCompile(`(^|[\s\[(])` + dashes + regexp.QuoteMeta(name) + `([\s\])=]|$)`).MatchString(text)
}

func commandNames() []string {
	var names []string
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// cliDoc returns docs/cli.md.
func cliDoc(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "cli.md"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docHeading returns the "### `kez NAME …`" heading of a command in
// docs/cli.md, without the backquotes.
func docHeading(t *testing.T, doc, name string) string {
	t.Helper()
	m := regexp.MustCompile("(?m)^### `(kez " + regexp.QuoteMeta(name) + `(?: [^` + "`" + `]*)?)` + "`").FindStringSubmatch(doc)
	if m == nil {
		t.Errorf("docs/cli.md has no heading for kez %s", name)
		return ""
	}
	return m[1]
}

// Every flag a command defines is in its usage line (what "kez help CMD"
// and a usage error print) and in its heading in docs/cli.md.
func TestUsageListsEveryFlag(t *testing.T) {
	doc := cliDoc(t)
	for _, name := range commandNames() {
		c := commands[name]
		usage := mustRun(t, nil, "", "help", name).stdout
		usage, _, _ = strings.Cut(usage, "\n")
		heading := docHeading(t, doc, name)
		for _, f := range flagsOf(c) {
			if !mentionsFlag(usage, f) {
				t.Errorf("the usage line of kez %s lacks --%s: %s", name, f, usage)
			}
			if heading != "" && !mentionsFlag(heading, f) {
				t.Errorf("the heading of kez %s in docs/cli.md lacks --%s: %s", name, f, heading)
			}
		}
	}
}

// Every environment variable a command reads is listed by "kez help" and
// in docs/cli.md.
func TestHelpListsEveryEnvironmentVariable(t *testing.T) {
	srcs, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	read := regexp.MustCompile(`(?:getenv\(|envOr\([^,()]*, )"([A-Z_]+)"`)
	vars := map[string]bool{}
	for _, p := range srcs {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range read.FindAllStringSubmatch(string(b), -1) {
			vars[m[1]] = true
		}
	}
	if len(vars) < 8 {
		t.Fatalf("found only %v: is the pattern right?", vars)
	}
	help := mustRun(t, nil, "", "help").stdout
	doc := cliDoc(t)
	for v := range vars {
		if !regexp.MustCompile(`(?m)^\s+` + v + `\s`).MatchString(help) {
			t.Errorf("kez help does not list %s:\n%s", v, help)
		}
		if !strings.Contains(doc, "| `"+v+"` |") {
			t.Errorf("docs/cli.md's environment table does not list %s", v)
		}
	}
}

// Bare "kez" is a usage error: exit 2, the usage on standard error.
func TestBareKezExits2(t *testing.T) {
	r := kezCmd(t, nil, "")
	if r.code != 2 || r.stdout != "" || !strings.Contains(r.stderr, "usage: kez COMMAND") || !strings.Contains(r.stderr, "whois") {
		t.Errorf("bare kez: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if r := kezCmd(t, nil, "", "nope"); r.code != 2 || !strings.Contains(r.stderr, `there is no command "nope"`) {
		t.Errorf("kez nope: exit %d\n%s", r.code, r.stderr)
	}
}

func TestVersion(t *testing.T) {
	r := mustRun(t, nil, "", "version")
	if v := version(); v == "" || !strings.HasPrefix(r.stdout, "kez "+v+" (go") {
		t.Errorf("kez version printed %q (version() = %q)", r.stdout, v)
	}
	if userAgent() != "kez/"+version() {
		t.Errorf("user agent %q", userAgent())
	}
	if r := kezCmd(t, nil, "", "version", "extra"); r.code != 2 {
		t.Errorf("kez version extra: exit %d", r.code)
	}
}

// Flag errors are sentences with the flag as it is typed, and the usage.
func TestFlagErrorsAreSentences(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"whois", "bob", "--bogus"}, "kez whois: there is no --bogus flag\nusage: kez whois HANDLE"},
		{[]string{"share", "x", "--json"}, "kez share: there is no --json flag"},
		{[]string{"fetch", "alice", "x", "-o"}, "kez fetch: -o needs a value"},
		{[]string{"send", "bob", "--timeout", "soon"}, `kez send: "soon" is not a valid value for --timeout`},
		{[]string{"inbox", "--follow=maybe"}, `kez inbox: --follow takes no value`},
	} {
		r := kezCmd(t, nil, "", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("kez %s: exit %d\n%s", strings.Join(tc.args, " "), r.code, r.stderr)
		}
	}
}

// jsonTemplate is the JSON docs/cli.md gives for a command's --json: the
// names of the fields of its (top-level) objects.
func jsonTemplate(t *testing.T, doc, name string) (fields, ownExtra []string) {
	t.Helper()
	start := strings.Index(doc, "### `kez "+name)
	if start < 0 {
		t.Fatalf("docs/cli.md has no section for kez %s", name)
	}
	section := doc[start+4:]
	if end := strings.Index(section, "\n### "); end >= 0 {
		section = section[:end]
	}
	m := regexp.MustCompile("(?s)`--json`[^`]*`(\\[?\\{[^`]*)`").FindStringSubmatch(section)
	if m == nil {
		t.Fatalf("docs/cli.md gives no --json template for kez %s", name)
	}
	depth := 0
	for i := 0; i < len(m[1]); i++ {
		switch m[1][i] {
		case '{':
			depth++
		case '}':
			depth--
		case '"':
			j := strings.IndexByte(m[1][i+1:], '"')
			if depth == 1 {
				fields = append(fields, m[1][i+1:i+1+j])
			}
			i += j + 1
		}
	}
	if x := regexp.MustCompile("plus `([^`]*)` for your own").FindStringSubmatch(section); x != nil {
		for _, q := range regexp.MustCompile(`"([a-z_]+)"`).FindAllStringSubmatch(x[1], -1) {
			ownExtra = append(ownExtra, q[1])
		}
	}
	return fields, ownExtra
}

// checkJSONFields fails unless every JSON value in out (one a line, an
// object or an array of objects) has every field.
func checkJSONFields(t *testing.T, what, out string, fields []string) {
	t.Helper()
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var objs []map[string]json.RawMessage
		if strings.HasPrefix(line, "[") {
			if err := json.Unmarshal([]byte(line), &objs); err != nil {
				t.Fatalf("%s: %v\n%s", what, err, out)
			}
		} else {
			var o map[string]json.RawMessage
			if err := json.Unmarshal([]byte(line), &o); err != nil {
				t.Fatalf("%s: %v\n%s", what, err, out)
			}
			objs = append(objs, o)
		}
		for _, o := range objs {
			n++
			for _, f := range fields {
				if _, ok := o[f]; !ok {
					t.Errorf("%s: the documented field %q is missing: %s", what, f, line)
				}
			}
		}
	}
	if n == 0 {
		t.Errorf("%s printed no object to check:\n%s", what, out)
	}
}

// The partial file a fetch grows is the one docs/cli.md names.
func TestPartialFileNameIsDocumented(t *testing.T) {
	doc := cliDoc(t)
	for _, name := range []string{"PATH" + files.PartialSuffix} {
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("docs/cli.md does not name %s", name)
		}
		if !strings.Contains(commands["fetch"].help, strings.TrimPrefix(name, "PATH")) {
			t.Errorf("kez help fetch does not name %s", name)
		}
	}
}

func TestFlagSentenceOfEveryFlagError(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(new(strings.Builder))
	fs.Bool("json", false, "")
	fs.Duration("timeout", 0, "")
	fs.String("o", "", "")
	for args, want := range map[string]string{
		"--nope":         "there is no --nope flag",
		"-n":             "there is no -n flag",
		"--o":            "-o needs a value",
		"--timeout=x":    `"x" is not a valid value for --timeout (parse error)`,
		"--json=perhaps": `--json takes no value (or =true, =false), not "perhaps"`,
	} {
		_, err := interleaved(fs, []string{"a", args})
		if err == nil || flagSentence(err) != want {
			t.Errorf("%s: %v → %q, want %q", args, err, flagSentence(err), want)
		}
	}
	got, err := interleaved(fs, []string{"a", "--json", "b", "--", "--c", "-d"})
	if err != nil || strings.Join(got, " ") != "a b --c -d" {
		t.Errorf("after --: %q, %v", got, err)
	}
}

// The sentences of typed errors a dev stack does not easily produce; each
// found through wrapping, as the libraries return them.
func TestSentenceOfTypedErrors(t *testing.T) {
	alice, bob := stacktestKey("alice"), stacktestKey("bob")
	wrap := func(err error) error { return fmt.Errorf("outer: %w", err) }
	e := &env{srv: servers{domain: "kez.test"}}
	for _, tc := range []struct {
		err  error
		want string
	}{
		{aboutHandle("alice", wrap(files.ErrForbidden)), "alice@kez.test shares that file privately with others, not with you"},
		{aboutHandle("alice", fmt.Errorf("%w: %w: x", files.ErrForbidden, files.ErrNoKey)), "alice@kez.test shares that file privately, and this linked device holds none of your encryption keys that open it yet: run kez inbox here"},
		{aboutHandle("alice", wrap(files.ErrBusy)), "alice@kez.test is busy with other transfers: run the same command again in a moment"},
		{aboutHandle("alice", wrap(&files.CorruptError{Index: 3})), "alice@kez.test sent data that does not match the file's CID"},
		{aboutHandle("alice", wrap(&files.UnsafePartialError{Path: "/dl/x.kez-partial", Problem: files.PartialLink})), "/dl/x.kez-partial was not left by a fetch of yours (it is a symbolic link), so nothing was fetched: someone who can write in that folder may have put it there; remove it, or fetch to another path with -o"},
		{wrap(&files.RecipientKeyError{Handle: "bob@kez.test"}), "nothing was shared: bob@kez.test names another key than the one pinned for them, since a moment ago: run the same command again"},
		{wrap(files.ErrNotFound), "the owner no longer has that file (it may have been unshared): kez files HANDLE lists"},
		{wrap(&files.ChangedError{Name: "a.txt", Path: "/x/a.txt"}), `"a.txt" changed on disk since you shared it, so it is not sent: run kez share /x/a.txt again`},
		{wrap(&files.ChangedError{Name: "a.txt", Path: "/x/a.txt", Gone: true}), `"a.txt" is gone from /x/a.txt`},
		{wrap(&files.OfflineError{Owner: "bob@kez.test", Waited: 90 * time.Second}), "bob@kez.test did not come online within 1m30s: ask them to run kez serve"},
		{wrap(natsconn.ErrNotRegistered), "the NATS server refused your key: register a handle first (kez register NAME)"},
		{wrap(&chat.KeyChangedError{Handle: "bob@kez.test", Pinned: alice, Current: bob}), "WARNING: the key of bob@kez.test changed: it was " + alice.String() + " (fingerprint " + alice.Fingerprint() + ") and is now " + bob.String()},
		{wrap(&chat.ChainRewrittenError{Handle: "bob@kez.test", Key: bob, Pinned: sigchain.Pin{Seqno: 4}, Err: sigchain.ErrFork}), "WARNING: the sigchain of bob@kez.test (" + bob.String() + ") no longer contains the link 4"},
		{aboutHandle("bob", wrap(chat.ErrFingerprintMismatch)), "that is not the safety number (or fingerprint) of the key pinned here for bob@kez.test"},
		{wrap(chat.ErrFingerprintMismatch), "that is not the safety number (or fingerprint) of the key pinned here for this contact"},
		{aboutHandle("bob", wrap(handles.ErrMismatch)), "DO NOT TRUST bob@kez.test"},
		{wrap(&handles.HandleError{Input: "b\u200bob", Reason: handles.ReasonInvisible, Detail: "an invisible character"}), `"b\u200bob" is not a valid handle: an invisible character`},
		{wrap(&kez.WordError{Position: 5, Word: "abandn", Suggestions: []string{"abandon", "baron"}}), `word 5 ("abandn") is not a backup word; did you mean "abandon" or "baron"?`},
		{wrap(files.ErrNoSigServer), "that needs the sig-server that holds your sigchain: set KEZ_SIG_SERVER"},
		{wrap(files.ErrNotPrimary), "sharing and unsharing need your primary key, which this linked device does not hold: run the command on the install made by \"kez init\" or \"kez recover\""},
		{wrap(&files.DeviceError{Owner: "alice@kez.test", Device: bob, Name: "old laptop", Revoked: true}), `that file is served by alice@kez.test's device "old laptop", which they revoked, so nothing was fetched`},
		{wrap(&files.RotationError{Handle: "bob@kez.test"}), "nothing was shared: bob@kez.test revoked one of their devices and their encryption key was not rotated after it"},
		{wrap(&files.DeviceError{Owner: "alice@kez.test", Device: bob}), "the device named to serve that file (" + bob.String() + ") is not one of alice@kez.test's devices, so nothing was fetched from it"},
		{fmt.Errorf("files: you have no sigchain at http://sig: %w", sigchain.ErrNotFound), "you have no sigchain at your sig-server yet: register first (kez register NAME)"},
		{fmt.Errorf("chat: opening the database: %w", syscall.EROFS), "chat: opening the database: read-only file system: set KEZ_HOME (or pass --home) to a writable folder"},
		{&exitError{code: 3, err: worded(nil, "kept as it is")}, "kept as it is"},
		{wrap(claims.ErrNotFound), "the statement of the claim is not where its proof should be"},
		{wrap(claims.ErrWrongKey), "the statement of the claim names another KEZ key"},
		{wrap(claims.ErrStale), "the statement of the claim was made for another place in the sigchain"},
		{wrap(claims.ErrBadSignature), "the proof of the claim is not signed by the key it names"},
		{wrap(claims.ErrBadStatement), "the proof of the claim is not a kez claim statement"},
		{wrap(claims.ErrUnsupported), "kez does not check claims of that service"},
		{wrap(claims.ErrBadIdentity), "that is not a name of the claim's service"},
		{wrap(claims.ErrForbidden), "kez does not contact that host for a claim, because it is not at a public address"},
		{wrap(claims.ErrUnavailable), "the place of the claim's proof could not be read"},
	} {
		if got := e.sentence(tc.err); !strings.HasPrefix(got, tc.want) {
			t.Errorf("%v\ngot:  %s\nwant: %s…", tc.err, got, tc.want)
		}
	}
	// Without a handle, ErrNotFound keeps its own words: it may be about
	// a server, not a person.
	if got := e.sentence(wrap(handles.ErrNotFound)); strings.Contains(got, "no one is registered") {
		t.Errorf("ErrNotFound without a handle: %s", got)
	}
}

func stacktestKey(name string) kez.PublicKey { return stacktest.Identity(name).PublicKey() }
