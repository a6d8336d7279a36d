package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/claims"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/miekg/dns"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
)

// txtServer is a real DNS server (miekg/dns, UDP on loopback) answering
// TXT queries from a map the test changes.
type txtServer struct {
	addr    string
	mu      sync.Mutex
	txt     map[string][]string // fully qualified name → the strings of one record
	onQuery func()              // if set, called (once) before the next answer
}

func startTXTServer(t *testing.T) *txtServer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &txtServer{addr: pc.LocalAddr().String(), txt: map[string][]string{}}
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) }, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		s.mu.Lock()
		hook := s.onQuery
		s.onQuery = nil
		s.mu.Unlock()
		if hook != nil {
			hook()
		}
		if len(q.Question) == 1 && q.Question[0].Qtype == dns.TypeTXT {
			name := strings.ToLower(q.Question[0].Name)
			s.mu.Lock()
			if txt, ok := s.txt[name]; ok {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: txt})
			} else {
				m.Rcode = dns.RcodeNameError
			}
			s.mu.Unlock()
		}
		w.WriteMsg(m)
	})}
	served := make(chan error, 1)
	go func() { served <- srv.ActivateAndServe() }()
	select {
	case <-started:
	case err := <-served:
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		<-served
	})
	return s
}

// set makes name's TXT record hold text (split into strings of at most
// 255 bytes, as a zone would); "" removes it.
func (s *txtServer) set(name, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if text == "" {
		delete(s.txt, dns.Fqdn(name))
		return
	}
	var parts []string
	for len(text) > 255 {
		parts, text = append(parts, text[:255]), text[255:]
	}
	s.txt[dns.Fqdn(name)] = append(parts, text)
}

// claimSite is a real TLS server whose /.well-known/kez-claim the test
// changes; its certificate authority is in caFile, for SSL_CERT_FILE.
type claimSite struct {
	host   string // 127.0.0.1:PORT
	caFile string
	mu     sync.Mutex
	body   string
	broken bool // answer 500
}

func startClaimSite(t *testing.T) *claimSite {
	t.Helper()
	s := &claimSite{}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/kez-claim":
			s.mu.Lock()
			body, broken := s.body, s.broken
			s.mu.Unlock()
			if broken {
				http.Error(w, "down", http.StatusInternalServerError)
				return
			}
			if body == "" {
				http.NotFound(w, r)
				return
			}
			w.Write([]byte(body))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	s.host = strings.TrimPrefix(srv.URL, "https://")
	s.caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(s.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *claimSite) serve(body string) {
	s.mu.Lock()
	s.body = body
	s.mu.Unlock()
}

// statementRE finds the statement a "kez claim" prints.
var statementRE = regexp.MustCompile(`(?m)^kez-claim=v1 \S+ \d+ \S+ \S+$`)

// printedStatement returns the statement r printed, checked: it parses
// for service and identity and verifies, it names key.
func printedStatement(t *testing.T, r result, key kez.PublicKey, service, identity string) claims.Statement {
	t.Helper()
	text := statementRE.FindString(r.stdout)
	if text == "" {
		t.Fatalf("no statement printed:\n%s", r.stdout)
	}
	s, err := claims.ParseStatement(text, service, identity)
	if err != nil {
		t.Fatalf("the printed statement %q: %v", text, err)
	}
	if err := s.Verify(); err != nil || s.Key != key {
		t.Fatalf("the printed statement %q: key %s, %v", text, s.Key, err)
	}
	return s
}

// whoisClaims returns the claims "kez whois --json" shows of handle.
func whoisClaims(t *testing.T, environ map[string]string, handle string) []whoisClaim {
	t.Helper()
	var out whoisJSON
	if err := json.Unmarshal([]byte(mustRunBin(t, environ, "", "whois", handle, "--json").stdout), &out); err != nil {
		t.Fatal(err)
	}
	return out.Claims
}

// claimOf returns the claim of service and identity among cs.
func claimOf(cs []whoisClaim, service, identity string) (whoisClaim, bool) {
	for _, c := range cs {
		if c.Service == service && c.Identity == identity {
			return c, true
		}
	}
	return whoisClaim{}, false
}

// appendRawClaim appends an add_claim link with any proof to u's chain,
// as a faulty or hostile client could, and returns its seqno.
func appendRawClaim(t *testing.T, st *stacktest.Stack, u *stacktest.User, service, identity, proof string) uint64 {
	t.Helper()
	return st.AppendLink(t, u, sigchain.TypeAddClaim, sigchain.AddClaimBody(service, identity, proof)).Seqno()
}

// chainHead returns the seqno and head ID of key's chain.
func chainHead(t *testing.T, st *stacktest.Stack, key kez.PublicKey) (uint64, string) {
	t.Helper()
	s, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(t.Context(), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s.Seqno(), s.Head().String()
}

// The dns and https claims end to end through the kez binary, against a
// real DNS server and a real TLS server: printed, published, appended,
// verified by another user's whois; then forged, copied and revoked.
func TestClaimDNSAndHTTPS(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	ns, site := startTXTServer(t), startClaimSite(t)
	extra := []string{"KEZ_DNS_SERVER", ns.addr, "SSL_CERT_FILE", site.caFile, "KEZ_LOCAL_DOMAINS", site.host}
	alice, bob := with(st.Env(au), extra...), with(st.Env(bu), extra...)
	const domain = "alice.example"

	// No record yet: the statement to publish, exit 1, nothing appended.
	seq0, head0 := chainHead(t, st, au.Key)
	r := kezBinRun(t, alice, "", "claim", "dns", domain)
	if r.code != 1 || !strings.Contains(r.stdout, "Publish this TXT record at _kez."+domain+", then run \"kez claim dns "+domain+"\" again") ||
		!strings.Contains(r.stderr, "the TXT record at _kez."+domain+" does not hold the statement of this claim yet; nothing was changed") {
		t.Fatalf("claim without the record: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	stmt := printedStatement(t, r, au.Key, "dns", domain)
	if stmt.Seqno != seq0+1 || stmt.Prev != head0 {
		t.Errorf("the statement binds seqno %d prev %s, want the next position %d after %s", stmt.Seqno, stmt.Prev, seq0+1, head0)
	}
	if n, _ := chainHead(t, st, au.Key); n != seq0 {
		t.Fatalf("a claim without its record appended a link (seqno %d → %d)", seq0, n)
	}
	// The same command prints the same statement (one to publish, not a new one each run).
	if again := printedStatement(t, kezBinRun(t, alice, "", "claim", "dns", domain), au.Key, "dns", domain); again.Text() != stmt.Text() {
		t.Errorf("a second run printed another statement:\n%s\n%s", again.Text(), stmt.Text())
	}
	// Another key's statement for the domain does not prove alice's claim.
	ns.set("_kez."+domain, claims.NewStatement(bu.Identity, "dns", domain, seq0+1, head0).Text())
	if r := kezBinRun(t, alice, "", "claim", "dns", domain); r.code != 1 || !strings.Contains(r.stdout, "Publish this TXT record") {
		t.Errorf("claim with bob's statement in the record: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	ns.set("_kez."+domain, stmt.Text())
	r = mustRunBin(t, alice, "", "claim", "dns", domain)
	if !strings.Contains(r.stdout, "Claimed dns "+domain+": link #"+strconv.FormatUint(seq0+1, 10)+" of your sigchain says so") {
		t.Errorf("claim with the record:\n%s", r.stdout)
	}
	if r := kezBinRun(t, alice, "", "claim", "dns", domain); r.code != 1 || !strings.Contains(r.stderr, "you claim dns "+domain+" already") {
		t.Errorf("claiming twice: exit %d\n%s", r.code, r.stderr)
	}

	// https: the statement served as a line of the well-known file. A
	// site that fails still gets the statement to publish.
	site.mu.Lock()
	site.broken = true
	site.mu.Unlock()
	r = kezBinRun(t, alice, "", "claim", "https", "https://"+site.host)
	if r.code != 1 || statementRE.FindString(r.stdout) == "" || !strings.Contains(r.stderr, "https://"+site.host+"/.well-known/kez-claim could not be read (an error answer, a redirect or a file too large); it may work later; nothing was changed") {
		t.Errorf("https claim at a failing site: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	site.mu.Lock()
	site.broken = false
	site.mu.Unlock()
	r = kezBinRun(t, alice, "", "claim", "https", "https://"+site.host)
	if r.code != 1 || !strings.Contains(r.stdout, "Serve this line in the file https://"+site.host+"/.well-known/kez-claim") {
		t.Fatalf("https claim without the file: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	web := printedStatement(t, r, au.Key, "https", site.host)
	site.serve("# kez\n" + web.Text() + "\n")
	mustRunBin(t, alice, "", "claim", "https", "https://"+site.host+"/")

	// Bob sees both verified.
	cs := whoisClaims(t, bob, "alice")
	for _, want := range [][2]string{{"dns", domain}, {"https", site.host}} {
		c, ok := claimOf(cs, want[0], want[1])
		if !ok || c.Status != "verified" || c.Reason != "" || c.CheckedAt == nil || time.Since(*c.CheckedAt) > time.Hour {
			t.Errorf("whois: claim %s %s: %+v (all: %+v)", want[0], want[1], c, cs)
		}
	}
	text := mustRunBin(t, bob, "", "whois", "alice").stdout
	for _, want := range []string{"dns " + domain + "  verified", "https " + site.host + "  verified"} {
		if !strings.Contains(text, want) {
			t.Errorf("whois text lacks %q:\n%s", want, text)
		}
	}

	// The record changed to a forged statement (alice's text, another
	// signature) and the site to bob's statement: both fail, with why.
	forged := stmt.Text()[:len(stmt.Text())-4] + "AAAA"
	ns.set("_kez."+domain, forged)
	site.serve(claims.NewStatement(bu.Identity, "https", site.host, web.Seqno, web.Prev).Text() + "\n")
	cs = whoisClaims(t, bob, "alice")
	for _, want := range [][2]string{{"dns", "the TXT record at _kez." + domain + " does not hold its statement"}, {"https", "https://" + site.host + "/.well-known/kez-claim does not hold its statement"}} {
		c, _ := claimOf(cs, want[0], map[string]string{"dns": domain, "https": site.host}[want[0]])
		if c.Status != "failed" || c.Reason != want[1] {
			t.Errorf("whois after the proof changed: %s: %+v, want failed: %s", want[0], c, want[1])
		}
	}
	text = mustRunBin(t, bob, "", "whois", "alice").stdout
	if !strings.Contains(text, "dns "+domain+"  failed: the TXT record at _kez."+domain+" does not hold its statement") {
		t.Errorf("whois text of a failed claim:\n%s", text)
	}

	// Revoked: whois no longer lists it; claiming it again needs a new
	// statement (the old one names the revoked claim's place).
	ns.set("_kez."+domain, stmt.Text())
	r = mustRunBin(t, alice, "", "claim", "revoke", "dns", domain)
	if !strings.Contains(r.stdout, "Revoked your claim dns "+domain) {
		t.Errorf("revoke:\n%s", r.stdout)
	}
	if _, ok := claimOf(whoisClaims(t, bob, "alice"), "dns", domain); ok {
		t.Error("whois still lists the revoked claim")
	}
	if r := kezBinRun(t, alice, "", "claim", "revoke", "dns", domain); r.code != 1 || !strings.Contains(r.stderr, "you have no dns claim of "+domain) {
		t.Errorf("revoking twice: exit %d\n%s", r.code, r.stderr)
	}
	r = kezBinRun(t, alice, "", "claim", "dns", domain)
	if r.code != 1 || printedStatement(t, r, au.Key, "dns", domain).Text() == stmt.Text() {
		t.Errorf("claiming again with the revoked claim's record: exit %d\n%s", r.code, r.stdout)
	}

	// A hostile client puts the revoked claim's statement (still in the
	// record) in a new add_claim link, and bob's statement in another: the
	// checks name why each fails.
	appendRawClaim(t, st, au, "dns", domain, stmt.Text())
	seq, head := chainHead(t, st, au.Key)
	ns.set("_kez.bob.example", claims.NewStatement(bu.Identity, "dns", "bob.example", seq+1, head).Text())
	appendRawClaim(t, st, au, "dns", "bob.example", claims.NewStatement(bu.Identity, "dns", "bob.example", seq+1, head).Text())
	cs = whoisClaims(t, bob, "alice")
	if c, _ := claimOf(cs, "dns", domain); c.Status != "failed" || !strings.Contains(c.Reason, "made for another place in the sigchain") {
		t.Errorf("a revoked claim's statement reused: %+v", c)
	}
	if c, _ := claimOf(cs, "dns", "bob.example"); c.Status != "failed" || !strings.Contains(c.Reason, "names another KEZ key") {
		t.Errorf("another key's statement: %+v", c)
	}

	// claim list shows alice's own claims with their check.
	var list []whoisClaim
	listOut := mustRunBin(t, alice, "", "claim", "list", "--json").stdout
	if err := json.Unmarshal([]byte(listOut), &list); err != nil {
		t.Fatal(err)
	}
	fields, _ := jsonTemplate(t, cliDoc(t), "claim list")
	checkJSONFields(t, "kez claim list --json", listOut, fields)
	if c, ok := claimOf(list, "https", site.host); !ok || c.Status != "failed" {
		t.Errorf("claim list --json: %+v", list)
	}
	site.serve(web.Text())
	if out := mustRunBin(t, alice, "", "claim", "list").stdout; !strings.Contains(out, "https "+site.host+"  verified") {
		t.Errorf("claim list:\n%s", out)
	}

	// The file gone: the claim fails.
	site.serve("")
	if c, _ := claimOf(whoisClaims(t, bob, "alice"), "https", site.host); c.Status != "failed" {
		t.Errorf("https claim with no file: %+v", c)
	}

	// The chain moves while the record is checked (another install
	// appends a link): the sig-server refuses the claim's link (409), and
	// kez says to publish the new statement, which it then prints.
	const moving = "moving.example"
	seq, head = chainHead(t, st, au.Key)
	ns.set("_kez."+moving, claims.NewStatement(au.Identity, "dns", moving, seq+1, head).Text())
	moved := make(chan error, 1)
	ns.mu.Lock()
	ns.onQuery = func() {
		sc := &sigchain.Client{BaseURL: st.SigServerURL}
		cur, err := sc.FetchVerified(t.Context(), au.Key, nil)
		if err == nil {
			var l *sigchain.Link
			if l, err = sigchain.NewLink(au.Identity, cur, sigchain.TypeAddClaim, sigchain.AddClaimBody("github", "alice", "https://gist.example/alice"), time.Now()); err == nil {
				err = sc.Append(t.Context(), l)
			}
		}
		moved <- err
	}
	ns.mu.Unlock()
	r = kezBinRun(t, alice, "", "claim", "dns", moving)
	if err := <-moved; err != nil {
		t.Fatal(err)
	}
	if r.code != 1 || !strings.Contains(r.stderr, "your sigchain changed while the claim was being added") || !strings.Contains(r.stderr, "publish the new statement it prints") {
		t.Errorf("a claim whose place was taken: exit %d\n%s", r.code, r.stderr)
	}
	if n, _ := chainHead(t, st, au.Key); n != seq+1 {
		t.Errorf("the chain is %d links long, want %d (the other install's link only)", n, seq+1)
	}
	r = kezBinRun(t, alice, "", "claim", "dns", moving)
	if next := printedStatement(t, r, au.Key, "dns", moving); r.code != 1 || next.Seqno != seq+2 {
		t.Errorf("after the chain moved: exit %d, a statement for seqno %d, want %d", r.code, next.Seqno, seq+2)
	}
	// A claim of a service kez does not check is revoked all the same.
	mustRunBin(t, alice, "", "claim", "revoke", "github", "alice")
	if _, ok := claimOf(whoisClaims(t, bob, "alice"), "github", "alice"); ok {
		t.Error("whois still lists the revoked github claim")
	}
}

// nostrKey is a fixed nostr key pair: its hex secret, nsec and npub.
type nostrKey struct{ sk, nsec, npub string }

func fixedNostrKey(t *testing.T, seed string) nostrKey {
	t.Helper()
	sum := sha256.Sum256([]byte(seed))
	sk := hex.EncodeToString(sum[:])
	pk, err := nostr.GetPublicKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	nsec, err := nip19.EncodePrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	npub, err := nip19.EncodePublicKey(pk)
	if err != nil {
		t.Fatal(err)
	}
	return nostrKey{sk, nsec, npub}
}

// event returns the JSON of a proof event with content, signed by k.
func (k nostrKey) event(t *testing.T, content, kezKey string) []byte {
	t.Helper()
	pk, _ := nostr.GetPublicKey(k.sk)
	ev := nostr.Event{PubKey: pk, CreatedAt: nostr.Timestamp(1_700_000_000), Kind: 1, Tags: nostr.Tags{{"kez", kezKey}}, Content: content}
	if err := ev.Sign(k.sk); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nostr claims with --nsec-file and with --event, a wrong nsec, a forged
// and a stale event; and a linked device, which holds no primary key,
// refused.
func TestClaimNostr(t *testing.T) {
	fastLinkPoll(t)
	st := stacktest.Start(t, stacktest.Options{})
	au, bu := st.NewUser(t, "alice"), st.NewUser(t, "bob")
	alice, bob := st.Env(au), st.Env(bu)
	dir := t.TempDir()
	k1, k2, other := fixedNostrKey(t, "alice nostr 1"), fixedNostrKey(t, "alice nostr 2"), fixedNostrKey(t, "mallory nostr")
	nsec1, nsecOther := filepath.Join(dir, "k1.nsec"), filepath.Join(dir, "other.nsec")
	os.WriteFile(nsec1, []byte(k1.nsec+"\n"), 0o600)
	os.WriteFile(nsecOther, []byte(other.nsec+"\n"), 0o600)

	// Neither flag: the statement to post, exit 1.
	r := kezCmd(t, alice, "", "claim", "nostr", k1.npub)
	if r.code != 1 || !strings.Contains(r.stdout, "Post this as a kind-1 nostr note from "+k1.npub) {
		t.Fatalf("nostr claim without a flag: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	printedStatement(t, r, au.Key, "nostr", k1.npub)
	// The nsec of another key is refused.
	seq0, _ := chainHead(t, st, au.Key)
	if r := kezCmd(t, alice, "", "claim", "nostr", k1.npub, "--nsec-file", nsecOther); r.code != 1 || !strings.Contains(r.stderr, "is the key of another npub, not of "+k1.npub) {
		t.Errorf("a wrong nsec: exit %d\n%s", r.code, r.stderr)
	}
	if n, _ := chainHead(t, st, au.Key); n != seq0 {
		t.Fatal("a refused nostr claim appended a link")
	}
	mustRun(t, alice, "", "claim", "nostr", k1.npub, "--nsec-file", nsec1)

	// --event: an event signed elsewhere for the next position.
	seq, head := chainHead(t, st, au.Key)
	stmt := claims.NewStatement(au.Identity, "nostr", k2.npub, seq+1, head)
	evFile := filepath.Join(dir, "event.json")
	// Forged: signed by another nostr key, or stale (made for an older position).
	for name, ev := range map[string][]byte{
		"signed by another key": forgeAuthor(t, other.event(t, stmt.Text(), au.Key.String()), k2),
		"for an older position": k2.event(t, claims.NewStatement(au.Identity, "nostr", k2.npub, seq, head).Text(), au.Key.String()),
	} {
		os.WriteFile(evFile, ev, 0o600)
		if r := kezCmd(t, alice, "", "claim", "nostr", k2.npub, "--event", evFile); r.code != 1 || !strings.Contains(r.stderr, "the proof of the claim does not hold") {
			t.Errorf("an event %s: exit %d\n%s", name, r.code, r.stderr)
		}
	}
	os.WriteFile(evFile, k2.event(t, stmt.Text(), au.Key.String()), 0o600)
	mustRun(t, alice, "", "claim", "nostr", k2.npub, "--event", evFile)

	var out whoisJSON
	if err := json.Unmarshal([]byte(mustRun(t, bob, "", "whois", "alice", "--json").stdout), &out); err != nil {
		t.Fatal(err)
	}
	cs := out.Claims
	for _, npub := range []string{k1.npub, k2.npub} {
		if c, ok := claimOf(cs, "nostr", npub); !ok || c.Status != "verified" {
			t.Errorf("whois: nostr %s: %+v", npub, c)
		}
	}

	// A linked device of alice is refused, and nothing is appended.
	laptop := with(st.Env(au), "KEZ_HOME", filepath.Join(t.TempDir(), "laptop"))
	code, lout, wait := startLink(t, laptop, "laptop")
	mustRun(t, alice, "", "devices", "add", code, "--no-history")
	if c := wait(); c != 0 {
		t.Fatalf("link: exit %d\n%s", c, lout.String())
	}
	before, _ := chainHead(t, st, au.Key)
	for _, args := range [][]string{{"claim", "nostr", other.npub, "--nsec-file", nsecOther}, {"claim", "revoke", "nostr", k1.npub}} {
		if r := kezCmd(t, laptop, "", args...); r.code != 1 || !strings.Contains(r.stderr, "does not hold your primary key") {
			t.Errorf("kez %s on a linked device: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	if n, _ := chainHead(t, st, au.Key); n != before {
		t.Error("a linked device appended a claim")
	}
	// It may list them.
	if out := mustRun(t, laptop, "", "claim", "list").stdout; !strings.Contains(out, "nostr "+k1.npub+"  verified") {
		t.Errorf("claim list on a linked device:\n%s", out)
	}
}

// forgeAuthor returns the event ev (signed by someone else) claiming to
// be by k: its pubkey changed, its id and signature left.
func forgeAuthor(t *testing.T, ev []byte, k nostrKey) []byte {
	t.Helper()
	var e nostr.Event
	if err := json.Unmarshal(ev, &e); err != nil {
		t.Fatal(err)
	}
	e.PubKey, _ = nostr.GetPublicKey(k.sk)
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The claim arguments a user may mistype are usage errors (exit 2), and
// --json, --nsec-file and --event are refused where they mean nothing.
func TestClaimUsage(t *testing.T) {
	for _, args := range [][]string{
		{"claim"},
		{"claim", "github", "bob"},
		{"claim", "dns"},
		{"claim", "dns", "not a domain"},
		{"claim", "dns", "127.0.0.1:53"},
		{"claim", "https", "http://example.com"},
		{"claim", "https", "https://example.com/elsewhere"},
		{"claim", "https", "https://user@example.com"},
		{"claim", "nostr", "nsec1abc"},
		{"claim", "nostr", "npub1x", "--nsec-file", "a", "--event", "b"},
		{"claim", "dns", "example.com", "--json"},
		{"claim", "dns", "example.com", "--event", "f"},
		{"claim", "revoke", "dns"},
		{"claim", "list", "extra"},
	} {
		if r := kezCmd(t, nil, "", args...); r.code != 2 || !strings.Contains(r.stderr, "usage: kez claim") {
			t.Errorf("kez %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// Every reason a claim fails has its words, as "kez whois" shows them
// after "failed: "; found through wrapping, as the claims package returns
// them.
func TestClaimReasons(t *testing.T) {
	dnsClaim := sigchain.Claim{Service: "dns", Identity: "a.example", Proof: "p"}
	web := sigchain.Claim{Service: "https", Identity: "a.example", Proof: "p"}
	gh := sigchain.Claim{Service: "github", Identity: "a", Proof: "https://gist.example/a"}
	nos := sigchain.Claim{Service: "nostr", Identity: "npub1x", Proof: "{}"}
	wrap := func(err error) error { return fmt.Errorf("claims: x: %w: y", err) }
	for _, tc := range []struct {
		c    sigchain.Claim
		err  error
		want string
	}{
		{dnsClaim, wrap(claims.ErrNotFound), "the TXT record at _kez.a.example does not hold its statement"},
		{web, wrap(claims.ErrNotFound), "https://a.example/.well-known/kez-claim does not hold its statement"},
		{dnsClaim, wrap(claims.ErrWrongKey), "its statement names another KEZ key, so it proves nothing for this one"},
		{dnsClaim, wrap(claims.ErrStale), "its statement was made for another place in the sigchain (an older or revoked claim's), not for this claim"},
		{dnsClaim, wrap(claims.ErrBadSignature), "the signature of its statement does not verify"},
		{nos, wrap(claims.ErrBadSignature), "its nostr event or statement is not signed by the key it names"},
		{dnsClaim, wrap(claims.ErrBadStatement), "its proof is not a kez claim statement"},
		{dnsClaim, wrap(claims.ErrBadIdentity), `"a.example" is not a valid dns name`},
		{web, wrap(claims.ErrForbidden), "kez does not contact a.example, which is not a public address (KEZ_LOCAL_DOMAINS lists the hosts of this machine or network it may contact)"},
		{gh, wrap(claims.ErrUnsupported), "kez does not check github claims (its proof: https://gist.example/a)"},
		{web, wrap(claims.ErrUnavailable), "https://a.example/.well-known/kez-claim could not be read (an error answer, a redirect or a file too large); it may work later"},
		{dnsClaim, fmt.Errorf("%w: %w", claims.ErrUnavailable, syscall.ECONNREFUSED), "the TXT record at _kez.a.example could not be read (connection refused); it may work later"},
		{dnsClaim, wrap(context.DeadlineExceeded), "the TXT record at _kez.a.example did not answer in time"},
	} {
		if got := claimReason(tc.c, tc.err); got != tc.want {
			t.Errorf("%v:\ngot:  %s\nwant: %s", tc.err, got, tc.want)
		}
		if got := claimReason(tc.c, tc.err); strings.Contains(got, "claims:") {
			t.Errorf("a package prefix in %q", got)
		}
	}
}

// FuzzClaimIdentity: whatever a user types as the argument of a claim,
// an accepted identity is one the claims package accepts, and the same
// argument always gives the same identity.
func FuzzClaimIdentity(f *testing.F) {
	for _, s := range []string{"example.com", "Example.COM.", "https://example.com/", "https://127.0.0.1:8443", "example.com/.well-known/kez-claim",
		"http://example.com", "https://u@example.com", "https://[::1]:443", "npub16vktjdkmpa77zgd9xrjmjux35p7wq6e7vtjr9kdz6pfvwg6csnnq2gtjtp", "nsec1abc", "", "a..b", "xn--bcher-kva.example"} {
		for _, svc := range []string{"dns", "https", "nostr"} {
			f.Add(svc, s)
		}
	}
	f.Fuzz(func(t *testing.T, service, arg string) {
		id, err := claimIdentity(service, arg)
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				t.Fatalf("%s %q: not a usage error: %v", service, arg, err)
			}
			return
		}
		if cerr := claims.CheckIdentity(service, id); cerr != nil {
			t.Fatalf("%s %q gave %q, which the claims package refuses: %v", service, arg, id, cerr)
		}
		if again, _ := claimIdentity(service, arg); again != id {
			t.Fatalf("%s %q: %q then %q", service, arg, id, again)
		}
	})
}

// TestClaimDisplayInjection: a chain's claims are text its owner chose;
// "kez whois" and "kez claim list" show them so that they can neither
// move the terminal (C1 controls, bidi overrides, line separators) nor
// push the status of the claim out of sight (runs of spaces, length), nor
// pass for a verified claim.
func TestClaimDisplayInjection(t *testing.T) {
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, ""), now)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sigchain.Verify([]*sigchain.Link{l})
	if err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat(" ", 150)
	hostile := [][3]string{
		{"dns", "alice.example.org  verified" + pad + "\u202e", "x"},
		{"https", "alice.example.org\u0085https alice.example.org  verified", "x"},
		{"github", "alice  verified" + pad, "\u009b2J\u202egro.elpmaxe.ecila" + pad + "x"},
		{"nostr", "npub1\u2028" + strings.Repeat("q", 200), "{}"},
	}
	for _, c := range hostile {
		if l, err = sigchain.NewLink(id, st, sigchain.TypeAddClaim, sigchain.AddClaimBody(c[0], c[1], c[2]), now); err != nil {
			t.Fatal(err)
		}
		if st, err = st.Extend([]*sigchain.Link{l}); err != nil {
			t.Fatalf("%q: %v", c[1], err)
		}
	}
	cs := claimsJSON((&claims.Checker{}).Check(context.Background(), st))
	var b strings.Builder
	printWhois(&b, whoisJSON{Claims: cs})
	for _, c := range cs {
		b.WriteString(claimLine(c) + "\n") // as "kez claim list" prints it
	}
	out := b.String()
	for i := 0; i < len(out); i++ {
		if c := out[i]; c != '\n' && (c < 0x20 || c > 0x7e) {
			t.Fatalf("byte 0x%02x at %d of the output:\n%s", c, i, out)
		}
	}
	n := 0
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, "alice") && !strings.Contains(line, "npub1") {
			continue
		}
		n++
		i := strings.Index(line, "  failed: ")
		if j := strings.Index(line, "  not checked: "); i < 0 || (j >= 0 && j < i) {
			i = j
		}
		if i < 0 || i > 120 {
			t.Errorf("the status is at byte %d of the line:\n%s", i, line)
		}
	}
	if n != 2*len(hostile) {
		t.Errorf("%d claim lines, want %d:\n%s", n, 2*len(hostile), out)
	}
}
