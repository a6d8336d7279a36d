package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
)

// newHome makes a fresh identity with "kez init --yes" and returns its
// KEZ_HOME and identity.
func newHome(t *testing.T) (string, *kez.Identity) {
	t.Helper()
	home := filepath.Join(t.TempDir(), "home")
	mustRun(t, nil, "", "init", "--yes", "--home", home)
	id, err := kez.LoadIdentity(home, nil)
	if err != nil {
		t.Fatal(err)
	}
	return home, id
}

func with(env map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func TestRegisterThenWhois(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	home, id := newHome(t)
	// Only the chat-server is given: the domain and the sig-server come
	// from its /v1/info.
	env := map[string]string{"KEZ_HOME": home, "KEZ_SERVER": st.ServerURL}
	r := mustRun(t, env, "", "register", "alice")
	for _, want := range []string{"Appended link #1 (eldest)", "Claimed @alice@kez.test at " + st.ServerURL, id.PublicKey().Fingerprint()} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("register output lacks %q:\n%s", want, r.stdout)
		}
	}
	if got := idJSONOf(t, map[string]string{"KEZ_HOME": home}, ""); got.Handle != "alice@kez.test" || got.Key != id.PublicKey().String() {
		t.Errorf("kez id after register: %+v", got)
	}
	if r := mustRun(t, map[string]string{"KEZ_HOME": home}, "", "id"); !strings.Contains(r.stdout, "@alice@kez.test") {
		t.Errorf("kez id does not show the handle:\n%s", r.stdout)
	}

	// Again: nothing changes (the chain keeps one link).
	r = mustRun(t, env, "", "register", "@alice@kez.test")
	if !strings.Contains(r.stdout, "already yours") || strings.Contains(r.stdout, "Appended") {
		t.Errorf("second register:\n%s", r.stdout)
	}
	chain, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(context.Background(), id.PublicKey(), nil)
	if err != nil || chain.Seqno() != 1 || chain.Handle() != "alice@kez.test" {
		t.Fatalf("alice's chain: %v %+v", err, chain)
	}

	// The profile remembers the servers: whois needs no environment.
	out := whoisJSONOf(t, map[string]string{"KEZ_HOME": home}, "alice")
	if out.Key != id.PublicKey().String() || out.Handle != "alice@kez.test" || out.Seqno != 1 ||
		out.EncryptionKey != base64.RawURLEncoding.EncodeToString(id.EncryptionKey(0).PublicKey().Bytes()) ||
		out.Fingerprint != id.PublicKey().Fingerprint() || out.PeerID != id.PublicKey().PeerID().String() ||
		out.Head != chain.Head().String() || !strings.HasPrefix(out.SigchainURL, st.SigServerURL) || len(out.Claims) != 0 || out.SharedFiles != nil {
		t.Errorf("whois --json: %+v", out)
	}

	// The registered identity logs in to NATS.
	nc, err := natsLogin(st.NATSURL, id)
	if err != nil {
		t.Fatalf("alice's NATS login after kez register: %v", err)
	}
	nc.Close()
}

func TestRegisterTakenChangesNothing(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	st.NewUser(t, "bob")
	home, id := newHome(t)
	env := with(st.Env(nil), "KEZ_HOME", home)
	for name, want := range map[string]string{
		"bob":   "bob@kez.test is taken; choose another name",
		"b.o.b": "b.o.b@kez.test looks too much like bob@kez.test, which someone else has registered; choose another name",
	} {
		r := kezCmd(t, env, "", "register", name)
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("register %s: exit %d\n%s", name, r.code, r.stderr)
		}
	}
	// "bob" is refused before anything is written; the look-alike only by
	// the claim, after which the chain gives the name up again.
	sc := &sigchain.Client{BaseURL: st.SigServerURL}
	chain, err := sc.FetchVerified(context.Background(), id.PublicKey(), nil)
	if err != nil || chain.Handle() != "" || chain.Seqno() != 2 {
		t.Fatalf("after the refused look-alike the chain must name no handle: %v %+v", err, chain)
	}
	if got := idJSONOf(t, env, ""); got.Handle != "" {
		t.Fatalf("a refused register saved a handle: %+v", got)
	}
	if r := mustRun(t, env, "", "register", "carol"); !strings.Contains(r.stdout, "link #3 (set_handle)") {
		t.Errorf("register carol on a chain without a handle:\n%s", r.stdout)
	}
	if got := idJSONOf(t, env, ""); got.Handle != "carol@kez.test" {
		t.Fatalf("after register carol: %+v", got)
	}
	// One handle per key.
	r := kezCmd(t, env, "", "register", "carl")
	if r.code != 1 || !strings.Contains(r.stderr, "already registered as @carol@kez.test") {
		t.Errorf("a second handle: exit %d\n%s", r.code, r.stderr)
	}
}

// TestRegisterLookAlikes: with bob, alice and mallory registered, kez
// register refuses the look-alikes of issue 13 with a sentence naming the
// handle they imitate, and saves nothing.
func TestRegisterLookAlikes(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	for _, n := range []string{"bob", "alice", "mallory"} {
		st.NewUser(t, n)
	}
	for look, holder := range map[string]string{"b0b": "bob", "a1ice": "alice", "rnallory": "mallory"} {
		home, _ := newHome(t)
		env := with(st.Env(nil), "KEZ_HOME", home)
		r := kezCmd(t, env, "", "register", look)
		want := look + "@kez.test looks too much like " + holder + "@kez.test, which someone else has registered; choose another name"
		if r.code != 1 || !strings.Contains(r.stderr, want) {
			t.Errorf("register %s: exit %d\n%s", look, r.code, r.stderr)
		}
		if got := idJSONOf(t, env, ""); got.Handle != "" {
			t.Errorf("a refused look-alike saved a handle: %+v", got)
		}
	}
}

func TestRegisterErrors(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	home, _ := newHome(t)
	env := with(st.Env(nil), "KEZ_HOME", home)
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
		code int
	}{
		{map[string]string{"KEZ_HOME": home}, []string{"alice"}, "set KEZ_SERVER", 1},
		{env, []string{"admin"}, "reserved", 1},
		{env, []string{"Al ice"}, "not a valid handle", 1},
		{env, []string{"аlice"}, "not a valid handle", 1}, // Cyrillic а
		{env, []string{"alice@other.example"}, "registers @kez.test", 1},
		{env, nil, "one NAME", 2},
		{with(env, "KEZ_SERVER", "http://127.0.0.1:1"), []string{"alice"}, "cannot reach your chat-server at http://127.0.0.1:1 (connection refused)", 1},
		{with(env, "KEZ_HOME", t.TempDir()), []string{"alice"}, "kez init", 1},
	} {
		r := kezCmd(t, tc.env, "", append([]string{"register"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("register %q: exit %d, want %d and %q\n%s", tc.args, r.code, tc.code, tc.want, r.stderr)
		}
	}
}

// A stacktest user's KEZ_HOME is one the CLI reads: the profile format
// stacktest writes is the CLI's.
func TestStacktestHomeIsACLIHome(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.NewUser(t, "alice")
	got := idJSONOf(t, map[string]string{"KEZ_HOME": alice.Home}, "")
	if got.Handle != alice.Handle.String() || got.Key != alice.Key.String() {
		t.Fatalf("kez id in a stacktest home: %+v", got)
	}
	if out := whoisJSONOf(t, map[string]string{"KEZ_HOME": alice.Home}, "alice"); out.Key != alice.Key.String() {
		t.Fatalf("whois from a stacktest home: %+v", out)
	}
}

func TestWhoisShowsClaimsAndShares(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	bob := st.NewUser(t, "bob")
	sc := &sigchain.Client{BaseURL: st.SigServerURL}
	ctx := context.Background()
	now := time.Now()
	claim, err := sigchain.NewLink(bob.Identity, bob.Chain, sigchain.TypeAddClaim, sigchain.AddClaimBody("github", "bob", "https://gist.example/bob"), now)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := bob.Chain.Extend([]*sigchain.Link{claim})
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(t.TempDir(), "report.pdf")
	os.WriteFile(doc, []byte("%PDF-1.7 a report"), 0o600)
	tree, err := format.HashFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	var m format.Manifest
	if err := m.AddPublic(format.Entry{Name: "report.pdf", Size: 17, CID: tree.CID(), MediaType: "application/pdf", ModTime: now.Truncate(time.Second)}); err != nil {
		t.Fatal(err)
	}
	body, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	share, err := sigchain.NewLink(bob.Identity, s2, sigchain.TypeSetSharedFiles, body, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []*sigchain.Link{claim, share} {
		if err := sc.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	home, _ := newHome(t)
	env := with(st.Env(nil), "KEZ_HOME", home) // an unregistered viewer
	out := whoisJSONOf(t, env, "@bob@kez.test")
	if len(out.Claims) != 1 || out.Claims[0].Service != "github" || out.Claims[0].Identity != "bob" || out.Claims[0].ID != claim.ID().String() {
		t.Errorf("claims: %+v", out.Claims)
	}
	if sf := out.SharedFiles; sf == nil || sf.Seqno != 3 || out.Seqno != 3 || sf.Error != "" || sf.Private != 0 ||
		len(sf.Public) != 1 || sf.Public[0] != (whoisFile{Name: "report.pdf", Size: 17, CID: tree.CID().String()}) {
		t.Errorf("shared files: %+v (seqno %d)", out.SharedFiles, out.Seqno)
	}
	r := mustRun(t, env, "", "whois", "bob")
	for _, want := range []string{"@bob@kez.test", bob.Key.String(), bob.Key.Fingerprint(), "github bob  not checked: kez does not check github claims (its proof: https://gist.example/bob)", `1 public ("report.pdf"), 0 private (link #3)`, "3 link(s)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("whois text lacks %q:\n%s", want, r.stdout)
		}
	}
}

// A manifest that does not decode is shown as such, not as an error.
func TestWhoisUnreadableManifest(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	carol := st.NewUser(t, "carol")
	l, err := sigchain.NewLink(carol.Identity, carol.Chain, sigchain.TypeSetSharedFiles, []byte(`{"v":99}`), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := (&sigchain.Client{BaseURL: st.SigServerURL}).Append(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	out := whoisJSONOf(t, st.Env(carol), "carol")
	if out.SharedFiles == nil || out.SharedFiles.Error == "" || out.SharedFiles.Seqno != 2 {
		t.Fatalf("shared files: %+v", out.SharedFiles)
	}
	if r := mustRun(t, st.Env(carol), "", "whois", "carol"); !strings.Contains(r.stdout, "a manifest this kez cannot read (link #2)") {
		t.Errorf("whois text:\n%s", r.stdout)
	}
}

func TestWhoisErrors(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	env := st.Env(alice)
	if r := kezCmd(t, env, "", "whois", "nobody"); r.code != 1 || !strings.Contains(r.stderr, "no one is registered as nobody") {
		t.Errorf("unknown: %+v", r)
	}
	home, _ := newHome(t)
	if r := kezCmd(t, map[string]string{"KEZ_HOME": home}, "", "whois", "alice"); r.code != 1 || !strings.Contains(r.stderr, "no home domain is known") {
		t.Errorf("no domain: %+v", r)
	}
	if r := kezCmd(t, env, "", "whois"); r.code != 2 {
		t.Errorf("no argument: %+v", r)
	}

	// A lying chat-server: it answers alice's lookup with bob's key.
	target, _ := url.Parse(st.ServerURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(resp *http.Response) error {
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		b = bytes.ReplaceAll(b, []byte(alice.Key.String()), []byte(bob.Key.String()))
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	liar := httptest.NewServer(proxy)
	t.Cleanup(liar.Close)
	r := kezCmd(t, with(env, "KEZ_SERVER", liar.URL), "", "whois", "alice")
	if r.code != 1 || !strings.Contains(r.stderr, "DO NOT TRUST") || strings.Contains(r.stdout, bob.Key.String()) {
		t.Errorf("lying server: %+v", r)
	}
}

func whoisJSONOf(t *testing.T, env map[string]string, handle string) whoisJSON {
	t.Helper()
	r := mustRun(t, env, "", "whois", "--json", handle)
	var out whoisJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("whois --json: %v\n%s", err, r.stdout)
	}
	return out
}

// natsLogin logs in as id the way chat.Connect does.
func natsLogin(url string, id *kez.Identity) (*nats.Conn, error) {
	key := id.PublicKey().String()
	return nats.Connect(url, nats.Nkey(key, id.SignNATSNonce), nats.CustomInboxPrefix("_INBOX."+key),
		nats.Timeout(5*time.Second), nats.NoReconnect())
}
