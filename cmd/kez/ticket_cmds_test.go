package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

var ticketRE = regexp.MustCompile(`kez fetch (kezt1[a-z2-7]+)`)

// ticketOf returns the ticket a command printed.
func ticketOf(t *testing.T, out string) string {
	t.Helper()
	m := ticketRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ticket in:\n%s", out)
	}
	return m[1]
}

// Tickets end to end: kez share --ticket before the first kez serve says
// why there is none; kez ticket (text and --json) and kez share --ticket
// while serving print one; the real kez binary fetches with it under a
// KEZ_HOME that does not exist, and creates nothing there; a private
// file's ticket is refused to a stranger and works for its recipient.
func TestTicketCommands(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice := with(st.Env(au), "KEZ_P2P_LISTEN", loopback)
	bob := with(st.Env(bu), "KEZ_P2P_LISTEN", loopback, "KEZ_TICKET_LOCAL", "1")
	dir := t.TempDir()
	notes := filepath.Join(dir, "notes.txt")
	os.WriteFile(notes, bytes.Repeat([]byte("notes "), 100000), 0o600)

	r := kezCmd(t, alice, "", "share", "--ticket", notes)
	if r.code != 1 || !strings.Contains(r.stdout, `Shared "notes.txt" publicly`) || !strings.Contains(r.stderr, "has not served yet and knows no relay") {
		t.Fatalf("share --ticket before serving: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if r := kezCmd(t, alice, "", "ticket", "notes.txt", "--ttl", "9000h"); r.code != 2 {
		t.Errorf("--ttl over a year: exit %d\n%s", r.code, r.stderr)
	}

	aout, aerr := newWatchWriter("Online as @alice@kez.test"), newWatchWriter()
	stop, served := background(t, alice, aout, aerr, "serve")
	aout.await(t, "Online as @alice@kez.test")
	t.Cleanup(func() { stop(); served() })

	r = mustRun(t, alice, "", "ticket", "notes.txt")
	if !strings.Contains(r.stdout, `Ticket for "notes.txt", valid until`) || !strings.Contains(r.stdout, "anyone who has it") {
		t.Errorf("ticket output:\n%s", r.stdout)
	}
	ticket := ticketOf(t, r.stdout)
	r = mustRun(t, alice, "", "ticket", "notes.txt", "--json", "--ttl", "1h")
	var tj ticketJSON
	if err := json.Unmarshal([]byte(r.stdout), &tj); err != nil || tj.Name != "notes.txt" || tj.Private || len(tj.Addrs) == 0 ||
		!strings.HasPrefix(tj.Ticket, files.TicketPrefix) || tj.Device != au.Key.String() {
		t.Fatalf("ticket --json: %v\n%s", err, r.stdout)
	}
	if exp, _ := time.Parse(time.RFC3339, tj.Expires); time.Until(exp) > time.Hour {
		t.Errorf("--ttl 1h expires at %s", tj.Expires)
	}

	// The real binary, no kez init: nothing is made under KEZ_HOME.
	stranger := map[string]string{"KEZ_HOME": filepath.Join(t.TempDir(), "never-made"), "KEZ_P2P_LISTEN": loopback, "KEZ_TICKET_LOCAL": "1"}
	out := filepath.Join(t.TempDir(), "got.txt")
	r = kezBinRun(t, stranger, "", "fetch", ticket, "-o", out)
	if r.code != 0 || !strings.Contains(r.stdout, `Saved "notes.txt" (585.9 KiB, verified against its CID) to `+out) {
		t.Fatalf("kez fetch TICKET: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, bytes.Repeat([]byte("notes "), 100000)) {
		t.Fatal("the fetched file differs")
	}
	if _, err := os.Stat(stranger["KEZ_HOME"]); !os.IsNotExist(err) {
		t.Fatalf("KEZ_HOME was made by a ticket fetch: %v", err)
	}

	// Private: the ticket names no file; a stranger is refused, bob fetches.
	secret := filepath.Join(dir, "secret.txt")
	os.WriteFile(secret, []byte("for bob only"), 0o600)
	r = mustRun(t, alice, "", "share", secret, "--to", "bob", "--ticket", "--ticket-ttl", "2h")
	if !strings.Contains(r.stdout, "only the people you shared it with") {
		t.Errorf("share --to --ticket:\n%s", r.stdout)
	}
	private := ticketOf(t, r.stdout)
	r = kezCmd(t, stranger, "", "fetch", private, "-o", filepath.Join(t.TempDir(), "x"))
	if r.code != 1 || !strings.Contains(r.stderr, "shared privately, and not with the keys of this install") {
		t.Errorf("a stranger's private fetch: exit %d\n%s", r.code, r.stderr)
	}
	bobDir := t.TempDir()
	r = mustRun(t, bob, "", "fetch", private, "-o", bobDir)
	if got, _ := os.ReadFile(filepath.Join(bobDir, "secret.txt")); string(got) != "for bob only" || !strings.Contains(r.stdout, "verified and decrypted") {
		t.Fatalf("bob's private fetch: %q\n%s", got, r.stdout)
	}
}

// Refused tickets, each with its reason as a sentence: expired, changed
// after signing, not a ticket, a name with control characters (refused
// by the parser; the reason quotes it), and a name with bidi controls
// (valid, quoted wherever the CLI shows it).
func TestTicketRefusedCommands(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice := with(st.Env(au), "KEZ_P2P_LISTEN", loopback)
	stranger := map[string]string{"KEZ_HOME": filepath.Join(t.TempDir(), "none"), "KEZ_P2P_LISTEN": loopback, "KEZ_TICKET_LOCAL": "1"}
	dir := t.TempDir()
	src := filepath.Join(dir, "a.txt")
	os.WriteFile(src, []byte("hello"), 0o600)
	bidi := "\u202etxt.exe"
	mustRun(t, alice, "", "share", src, "--name", bidi)
	aout, aerr := newWatchWriter("Online as @alice@kez.test"), newWatchWriter()
	stop, served := background(t, alice, aout, aerr, "serve")
	aout.await(t, "Online as @alice@kez.test")
	t.Cleanup(func() { stop(); served() })

	r := mustRun(t, alice, "", "ticket", bidi)
	if strings.Contains(r.stdout, "\u202e") || !strings.Contains(r.stdout, `"\u202etxt.exe"`) {
		t.Errorf("the ticket output shows the name unquoted:\n%q", r.stdout)
	}
	ticket := ticketOf(t, r.stdout)
	out := t.TempDir()
	r = kezCmd(t, stranger, "", "fetch", ticket, "-o", out)
	if r.code != 0 || strings.Contains(r.stdout, "\u202e") || !strings.Contains(r.stdout, `Saved "\u202etxt.exe"`) {
		t.Fatalf("fetch of a bidi name: exit %d\n%q\n%s", r.code, r.stdout, r.stderr)
	}

	tk, err := files.ParseTicket(ticket, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	old := *tk
	old.Expires = time.Now().Add(-time.Hour).Truncate(time.Second)
	expired, err := files.SignTicket(au.Identity, &old)
	if err != nil {
		t.Fatal(err)
	}
	// A character of the signature changed.
	i := len(ticket) - 20
	c := byte('a')
	if ticket[i] == 'a' {
		c = 'b'
	}
	tampered := ticket[:i] + string(c) + ticket[i+1:]
	v := ticketVectorsFile(t)
	for _, tc := range []struct{ ticket, want string }{
		{expired, "this ticket expired on " + old.Expires.UTC().Format("2006-01-02 15:04")},
		{tampered, "this ticket was changed after its owner signed it"},
		{"kezt1!!!", "this is not a ticket this kez can read"},
		{strings.ToUpper(ticket), "this is not a ticket this kez can read"},
		{v["fail_name_control"], `this is not a ticket this kez can read (the file name "notes\x1b[2J.txt" has a control character)`},
		{v["fail_tampered_device"], "this ticket was changed after its owner signed it"},
		{v["fail_bad_address_peer"], "names a peer"},
	} {
		r := kezCmd(t, stranger, "", "fetch", tc.ticket, "-o", filepath.Join(t.TempDir(), "x"))
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "\x1b") {
			t.Errorf("fetch %.20s…: exit %d, want %q\n%s", tc.ticket, r.code, tc.want, r.stderr)
		}
	}
	if _, err := os.Stat(stranger["KEZ_HOME"]); !os.IsNotExist(err) {
		t.Fatalf("KEZ_HOME was made: %v", err)
	}
}

// ticketVectorsFile returns the tickets of files/testdata/ticket_vectors.json
// by name.
func ticketVectorsFile(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../../files/testdata/ticket_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		Vectors []struct{ Name, Ticket string }
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, x := range v.Vectors {
		out[x.Name] = x.Ticket
	}
	return out
}
