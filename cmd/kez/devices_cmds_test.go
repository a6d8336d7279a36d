package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// fastLinkPoll makes "kez link" ask for its approval often.
func fastLinkPoll(t *testing.T) {
	old := linkPoll
	linkPoll = 20 * time.Millisecond
	t.Cleanup(func() { linkPoll = old })
}

var codeRE = regexp.MustCompile(`kez devices add ([0-9A-Z-]+)`)

// startLink runs "kez link" for a new install in the background and
// returns its code, its output and its exit status.
func startLink(t *testing.T, environ map[string]string, name string) (code string, out *watchWriter, wait func() int) {
	t.Helper()
	out = newWatchWriter("Waiting for the approval", "This install is now a device of")
	errw := newWatchWriter()
	_, wait = background(t, environ, out, errw, "link", "--name", name)
	out.await(t, "Waiting for the approval")
	m := codeRE.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no code in:\n%s", out.String())
	}
	return m[1], out, wait
}

// chainSeqno is the length of key's chain at the stack's sig-server.
func chainSeqno(t *testing.T, st *stacktest.Stack, key kez.PublicKey) uint64 {
	t.Helper()
	s, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(t.Context(), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s.Seqno()
}

// TestLinkDeviceWithHistory: a new install links with "kez link", the
// primary approves it with "kez devices add", and the new device has
// alice's contacts and history; devices, id and whois show it; revoking
// it shuts it out.
func TestLinkDeviceWithHistory(t *testing.T) {
	fastLinkPoll(t)
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	mustRun(t, alice, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "contacts", "add", "alice")
	mustRun(t, alice, "", "send", "bob", "before the laptop")
	mustRun(t, bob, "", "send", "alice", "hello alice")
	mustRun(t, alice, "", "inbox")

	laptopHome := filepath.Join(t.TempDir(), "laptop")
	laptop := with(st.Env(au), "KEZ_HOME", laptopHome)
	code, out, wait := startLink(t, laptop, "laptop")

	start := time.Now()
	r := mustRun(t, alice, "", "devices", "add", code, "--name", "laptop")
	for _, want := range []string{`Added "laptop"`, "as a device of @alice@kez.test", "Sent 1 contact and 2 messages"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("devices add says:\n%s\nwant %q", r.stdout, want)
		}
	}
	if code := wait(); code != 0 {
		t.Fatalf("link: exit %d\n%s", code, out.String())
	}
	t.Logf("linked with history in %s:\n%s", time.Since(start).Round(time.Millisecond), r.stdout)
	if !strings.Contains(out.String(), "This install is now a device of @alice@kez.test (fingerprint "+au.Key.Fingerprint()+")") {
		t.Errorf("link says:\n%s", out.String())
	}

	// The history followed.
	msgs := inboxLines(t, mustRun(t, laptop, "", "inbox", "--all", "--json").stdout)
	if len(msgs) != 1 || msgs[0].Text != "hello alice" {
		t.Errorf("the laptop's inbox: %+v", msgs)
	}
	if r := mustRun(t, laptop, "", "contacts", "list"); !strings.Contains(r.stdout, "bob@kez.test") {
		t.Errorf("the laptop's contacts:\n%s", r.stdout)
	}
	// So did alice's encryption key (before the history), checked against
	// her chain.
	if k, err := chat.ReadKeyring(t.Context(), laptopHome); err != nil || !k.EncryptionKey(0).Equal(au.Identity.EncryptionKey(0)) {
		t.Errorf("the laptop's keys: %v %v", k, err)
	}
	// Who is who.
	id := idJSONOf(t, laptop, laptopHome)
	if id.Key != au.Key.String() || id.Device == id.Key || id.Handle != "alice@kez.test" {
		t.Errorf("kez id on the laptop: %+v", id)
	}
	var devs []deviceJSON
	if err := json.Unmarshal([]byte(mustRun(t, laptop, "", "devices", "--json").stdout), &devs); err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 || !devs[0].Primary || devs[0].This || devs[1].Name != "laptop" || !devs[1].This || devs[1].Key != id.Device {
		t.Errorf("devices on the laptop: %+v", devs)
	}
	w := whoisJSONOf(t, bob, "alice")
	if len(w.Devices) != 2 || w.Devices[1].Name != "laptop" || w.Fingerprint != au.Key.Fingerprint() {
		t.Errorf("whois alice: %+v", w.Devices)
	}

	// A linked device holds no primary key: it cannot approve or revoke.
	for _, args := range [][]string{{"devices", "add", code}, {"devices", "revoke", "primary"}, {"register", "alice2"}} {
		if r := kezCmd(t, laptop, "", args...); r.code != 1 || !strings.Contains(r.stderr, "does not hold your primary key") {
			t.Errorf("kez %s on the laptop: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}

	// Revoked: for good, and it cannot log in any more.
	r = mustRun(t, alice, "", "devices", "revoke", "laptop")
	if !strings.Contains(r.stdout, `Revoked "laptop"`) || !strings.Contains(r.stdout, `Your encryption key is rotated to generation 1, which "laptop" never gets.`) {
		t.Errorf("revoke says:\n%s", r.stdout)
	}
	if s, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(t.Context(), au.Key, nil); err != nil || s.EncryptionGeneration() != 1 {
		t.Errorf("alice's chain after the revocation: %v", err)
	}
	if r := kezCmd(t, laptop, "", "inbox"); r.code != 1 || !strings.Contains(r.stderr, "this device was revoked by @alice@kez.test, so it can no longer log in") {
		t.Errorf("the revoked laptop's inbox: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := mustRun(t, alice, "", "devices", "revoke", "laptop"); !strings.Contains(r.stdout, "revoked already") {
		t.Errorf("revoking again: %s", r.stdout)
	}
	if r := kezCmd(t, alice, "", "devices", "revoke", "primary"); r.code != 1 || !strings.Contains(r.stderr, "last current device") {
		t.Errorf("revoking the last device: exit %d\n%s", r.code, r.stderr)
	}
}

// TestDevicesAddBadCodes: a mistyped, unknown, expired, reused or
// tampered code is a sentence, and changes nothing on the chain.
func TestDevicesAddBadCodes(t *testing.T) {
	fastLinkPoll(t)
	st := stacktest.Start(t, stacktest.Options{})
	au := st.NewUser(t, "alice")
	alice := st.Env(au)
	laptop := with(st.Env(au), "KEZ_HOME", filepath.Join(t.TempDir(), "laptop"))
	code, _, wait := startLink(t, laptop, "laptop")
	seqno := chainSeqno(t, st, au.Key)

	c, err := sigchain.ParseLinkCode(code)
	if err != nil {
		t.Fatal(err)
	}
	other := c
	other[0] ^= 1 // a valid code that names no request
	typo := []byte(code)
	typo[0] = map[bool]byte{true: 'B', false: 'A'}[typo[0] == 'A']

	// A sig-server that answers the code with another device's request.
	mallory := with(st.Env(nil), "KEZ_HOME", filepath.Join(t.TempDir(), "mallory"))
	mcode, _, _ := startLink(t, mallory, "mallory")
	real, _ := url.Parse(st.SigServerURL)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasPrefix(p, sigchain.LinksPath+"/") {
			p = sigchain.LinksPath + "/" + mcode
		}
		resp, err := http.Get(real.Scheme + "://" + real.Host + p + "?" + r.URL.RawQuery)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(proxy.Close)

	later := time.Now().Add(11 * time.Minute)
	for _, tc := range []struct {
		name  string
		env   map[string]string
		now   time.Time
		code  string
		want  string
		extra []string
	}{
		{"typo", alice, time.Time{}, string(typo), "is not a link code", nil},
		{"garbage", alice, time.Time{}, "hello", "is not a link code", nil},
		{"unknown", alice, time.Time{}, other.String(), "no device waits for the code", nil},
		{"expired", alice, later, code, "has expired", nil},
		{"other name", alice, time.Time{}, code, `calls itself "laptop", not "phone"`, []string{"--name", "phone"}},
		{"tampered answer", with(alice, "KEZ_SIG_SERVER", proxy.URL), time.Time{}, code, "not the one it names", nil},
	} {
		args := append([]string{"devices", "add", tc.code}, tc.extra...)
		r := kezCmdAt(t, tc.env, tc.now, args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "nothing was changed") {
			t.Errorf("%s: exit %d\n%s\nwant %q", tc.name, r.code, r.stderr, tc.want)
		}
		if got := chainSeqno(t, st, au.Key); got != seqno {
			t.Fatalf("%s: the chain grew to %d", tc.name, got)
		}
	}

	// The real code works once.
	mustRun(t, alice, "", "devices", "add", code, "--no-history")
	if code := wait(); code != 0 {
		t.Fatalf("link: exit %d", code)
	}
	seqno++
	r := kezCmd(t, alice, "", "devices", "add", code)
	if r.code != 1 || !strings.Contains(r.stderr, "a device of yours already") {
		t.Errorf("reused code: exit %d\n%s", r.code, r.stderr)
	}
	if got := chainSeqno(t, st, au.Key); got != seqno {
		t.Fatalf("a reused code changed the chain: %d", got)
	}
}

// kezCmdAt is kezCmd with the command's clock at now (zero: the real one).
func kezCmdAt(t *testing.T, environ map[string]string, now time.Time, args ...string) result {
	t.Helper()
	if now.IsZero() {
		return kezCmd(t, environ, "", args...)
	}
	var out, errb strings.Builder
	e := &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errb, getenv: func(k string) string { return environ[k] }, now: func() time.Time { return now }}
	code := run(t.Context(), e, args)
	return result{out.String(), errb.String(), code}
}

// TestRecoverMakesANewDevice: the words restored on a second install make
// it a device of its own, which never reads the primary's queue.
func TestRecoverMakesANewDevice(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	mustRun(t, alice, "", "contacts", "add", "bob")
	home := filepath.Join(t.TempDir(), "restored")
	restored := with(st.Env(au), "KEZ_HOME", home)
	r := mustRun(t, restored, stacktest.Words("alice").Phrase()+"\n", "recover", "--name", "restored")
	if !strings.Contains(r.stdout, `This install is a new device of yours, "restored"`) {
		t.Fatalf("recover says:\n%s", r.stdout)
	}
	id := idJSONOf(t, restored, home)
	if id.Key != au.Key.String() || id.Device == id.Key {
		t.Fatalf("kez id after recover: %+v", id)
	}
	mustRun(t, restored, "", "contacts", "add", "bob")
	mustRun(t, bob, "", "contacts", "add", "alice") // pins alice's chain with the new device
	mustRun(t, bob, "", "send", "alice", "to both")
	// Each install takes its own copy: neither takes the other's (and
	// what alice reads first shows as read on the other: --all).
	for _, env := range []map[string]string{alice, restored} {
		msgs := inboxLines(t, mustRun(t, env, "", "inbox", "--all", "--json").stdout)
		if len(msgs) != 1 || msgs[0].Text != "to both" {
			t.Errorf("inbox of %s: %+v", env["KEZ_HOME"], msgs)
		}
	}
}
