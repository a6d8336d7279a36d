package handles

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

func TestPublicAddr(t *testing.T) {
	public := []string{"8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4001::200e",
		"::ffff:8.8.8.8", "64:ff9b::808:808" /* NAT64 of 8.8.8.8 */, "2002:808:808::1" /* 6to4 of 8.8.8.8 */}
	refused := []string{
		"127.0.0.1", "127.255.255.254", "::1", "0.0.0.0", "::", "0.1.2.3",
		"10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1", "fc00::1", "fd12:3456::1",
		"169.254.169.254", "fe80::1", "fe80::1%eth0", "fec0::1",
		"100.64.0.1", "100.127.255.254", "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.1", "203.0.113.1",
		"240.0.0.1", "255.255.255.255", "224.0.0.1", "239.255.255.250", "ff02::1", "ff05::2",
		"::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
		"64:ff9b::7f00:1" /* NAT64 of 127.0.0.1 */, "64:ff9b::a9fe:a9fe", "64:ff9b:1::a00:1",
		"2002:7f00:1::1" /* 6to4 of 127.0.0.1 */, "2002:c0a8:101::1",
		"2001::1" /* Teredo */, "2001:db8::1", "100::1",
	}
	for _, s := range public {
		if !PublicAddr(netip.MustParseAddr(s)) {
			t.Errorf("PublicAddr(%s) = false, want true", s)
		}
	}
	for _, s := range refused {
		if PublicAddr(netip.MustParseAddr(s)) {
			t.Errorf("PublicAddr(%s) = true, want false", s)
		}
	}
	if PublicAddr(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}

func TestCheckRemoteURL(t *testing.T) {
	for in, ok := range map[string]bool{
		"https://kez.lat":                       true,
		"https://sig.kez.lat/v1/chains":         true,
		"https://sig.kez.lat:8443":              true,
		"https://8.8.8.8":                       true,
		"https://localhost":                     true, // a name: its address is checked when dialed
		"http://kez.lat":                        false,
		"ftp://kez.lat":                         false,
		"//kez.lat":                             false,
		"https://":                              false,
		"https://user:pw@kez.lat":               false,
		"https://127.0.0.1":                     false,
		"https://127.0.0.1:8080":                false,
		"https://[::1]:8080":                    false,
		"https://[::ffff:127.0.0.1]":            false,
		"https://10.1.2.3":                      false,
		"https://169.254.169.254/latest/meta":   false,
		"https://[fe80::1%25eth0]:443":          false,
		"https://0.0.0.0":                       false,
		"https://[64:ff9b::a9fe:a9fe]/metadata": false,
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(in, err)
		}
		err = CheckRemoteURL(u)
		if got := err == nil; got != ok {
			t.Errorf("CheckRemoteURL(%s) = %v, want ok=%v", in, err, ok)
		}
		if err != nil && !errors.Is(err, ErrForbiddenOrigin) {
			t.Errorf("CheckRemoteURL(%s) = %v, not ErrForbiddenOrigin", in, err)
		}
		if strings.Contains(in, "pw") && err != nil && strings.Contains(err.Error(), "pw") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
	if err := CheckRemoteURL(nil); !errors.Is(err, ErrForbiddenOrigin) {
		t.Errorf("nil URL: %v", err)
	}
}

// countingListener counts the connections it accepted.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// countingServer is a real HTTP server on loopback that counts the
// connections made to it; TLS with the httptest certificate if tlsOn.
func countingServer(t *testing.T, h http.Handler, tlsOn bool) (*httptest.Server, *countingListener) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	cl := &countingListener{Listener: srv.Listener}
	srv.Listener = cl
	if tlsOn {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv, cl
}

func portOf(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	_, port, err := net.SplitHostPort(srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// The remote client reaches nothing on this machine: not by an IP
// literal, not by a name that resolves to loopback (checked when dialed,
// which is also what defeats DNS rebinding), not over plain http.
func TestRemoteClientRefusesLocalAddresses(t *testing.T) {
	var hits atomic.Int32
	srv, conns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }), false)
	port := portOf(t, srv)

	// Positive control: an ordinary client reaches the server by the same
	// name, so a refusal below is the remote client's doing.
	resp, err := http.Get("http://localhost:" + port + "/")
	if err != nil {
		t.Fatalf("the control request failed: %v", err)
	}
	resp.Body.Close()
	if hits.Load() != 1 || conns.n.Load() != 1 {
		t.Fatalf("the control request: %d hits, %d connections", hits.Load(), conns.n.Load())
	}

	rc := NewRemoteClient(5 * time.Second)
	for _, u := range []string{
		"https://localhost:" + port + "/", // a name: refused at dial time
		"https://127.0.0.1:" + port + "/",
		"https://[::ffff:127.0.0.1]:" + port + "/",
		"http://localhost:" + port + "/", // plain http
		"http://127.0.0.1:" + port + "/",
	} {
		resp, err := rc.Get(u)
		if err == nil {
			resp.Body.Close()
			t.Errorf("GET %s: %s, want a refusal", u, resp.Status)
			continue
		}
		if !errors.Is(err, ErrForbiddenOrigin) {
			t.Errorf("GET %s: %v, want ErrForbiddenOrigin", u, err)
		}
		t.Logf("GET %s: %v", u, err)
	}
	if hits.Load() != 1 || conns.n.Load() != 1 {
		t.Errorf("the remote client reached the local server: %d hits, %d connections", hits.Load()-1, conns.n.Load()-1)
	}

	// The dial check itself, for the addresses a name might resolve to.
	for _, addr := range []string{"127.0.0.1:443", "[::1]:443", "10.0.0.1:443", "169.254.169.254:80", "[fe80::1%lo]:443", "nonsense"} {
		if err := RemoteDialControl("tcp", addr, nil); !errors.Is(err, ErrForbiddenOrigin) {
			t.Errorf("RemoteDialControl(%s) = %v", addr, err)
		}
	}
	if err := RemoteDialControl("tcp4", "8.8.8.8:443", nil); err != nil {
		t.Errorf("RemoteDialControl(8.8.8.8:443) = %v", err)
	}
}

// Redirects: at most MaxRemoteRedirects, each to https.
func TestRemoteRedirects(t *testing.T) {
	var plainHits atomic.Int32
	plain, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { plainHits.Add(1) }), false)
	var srv *httptest.Server
	srv, _ = countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// /hop/N redirects N more times, then to /ok; /plain to plain http.
		switch {
		case r.URL.Path == "/ok":
			w.Write([]byte("ok"))
		case r.URL.Path == "/plain":
			http.Redirect(w, r, "http://localhost:"+portOf(t, plain)+"/", http.StatusFound)
		case r.URL.Path == "/loopback":
			http.Redirect(w, r, "https://127.0.0.1:"+portOf(t, srv)+"/ok", http.StatusFound)
		case strings.HasPrefix(r.URL.Path, "/hop/"):
			n := strings.TrimPrefix(r.URL.Path, "/hop/")
			next := "/ok"
			if n != "1" {
				next = "/hop/" + string(n[0]-1)
			}
			http.Redirect(w, r, "https://localhost:"+portOf(t, srv)+next, http.StatusFound)
		}
	}), true)
	// The remote client's redirect and URL rules over a transport that may
	// reach this test server (the remote dial check would refuse it).
	tlsConf := srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	tlsConf.ServerName = "example.com" // a name in the httptest certificate
	c := &http.Client{
		Transport:     remoteTransport{&http.Transport{TLSClientConfig: tlsConf}},
		CheckRedirect: NewRemoteClient(0).CheckRedirect,
	}
	base := "https://localhost:" + portOf(t, srv)
	get := func(path string) error {
		resp, err := c.Get(base + path)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	// Positive control: MaxRemoteRedirects redirects are followed.
	if err := get("/hop/" + string(rune('0'+MaxRemoteRedirects))); err != nil {
		t.Fatalf("%d redirects: %v", MaxRemoteRedirects, err)
	}
	for path, why := range map[string]string{
		"/hop/" + string(rune('0'+MaxRemoteRedirects+1)): "one redirect too many",
		"/plain":    "a redirect to plain http",
		"/loopback": "a redirect to a loopback IP",
	} {
		if err := get(path); !errors.Is(err, ErrForbiddenOrigin) {
			t.Errorf("%s: %v, want ErrForbiddenOrigin", why, err)
		}
	}
	if plainHits.Load() != 0 {
		t.Errorf("the plain http server was reached %d times", plainHits.Load())
	}
}

// strangerDomain is a domain a stranger controls, played by real TLS
// servers on loopback reached by name: https://localhost:PORT serves
// WebFinger (a handles.Server for that domain, whose answers can be made
// to name any sig-server URL), and a TLS sig-server holds the chains.
type strangerDomain struct {
	domain  string
	wf, sig *httptest.Server
	wfConns *countingListener
	sigc    *sigchain.Client
	reg     *SQLiteStore
	tls     *tls.Config // trusts both servers

	mu   sync.Mutex
	href string // the sigchain href the WebFinger answer gives ("" keeps the server's)
}

func newStrangerDomain(t *testing.T) *strangerDomain {
	t.Helper()
	d := &strangerDomain{}
	dir := t.TempDir()
	chains, err := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { chains.Close() })
	d.sig, _ = countingServer(t, sigchain.NewHandler(chains, sigchain.WithLogger(quietLog)), true)
	d.tls = d.sig.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	d.tls.ServerName = "example.com" // a name in the httptest certificate
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: d.tls}, Timeout: 10 * time.Second}
	d.sigc = &sigchain.Client{BaseURL: d.sig.URL, HTTPClient: hc}

	wf := httptest.NewUnstartedServer(nil)
	d.wfConns = &countingListener{Listener: wf.Listener}
	wf.Listener = d.wfConns
	d.wf = wf
	d.domain = "localhost:" + portOf(t, wf)
	if d.reg, err = OpenSQLite(filepath.Join(dir, "handles.db")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.reg.Close() })
	srv, err := NewServer(ServerConfig{Domain: d.domain, AllowLocal: true, Store: d.reg, SigServer: d.sigc,
		PublicSigServerURL: "https://localhost:" + portOf(t, d.sig), Logger: quietLog})
	if err != nil {
		t.Fatal(err)
	}
	wf.Config.Handler = rewriting(t, srv, func(path string, v map[string]any) {
		d.mu.Lock()
		href := d.href
		d.mu.Unlock()
		if href == "" {
			return
		}
		links, _ := v["links"].([]any)
		for _, l := range links {
			if lm := l.(map[string]any); lm["rel"] == RelSigchain {
				lm["href"] = href
			}
		}
	}).Config.Handler
	wf.StartTLS()
	t.Cleanup(wf.Close)
	return d
}

// user makes name@domain: an eldest link at the sig-server, and the
// registry entry.
func (d *strangerDomain) user(t *testing.T, name string) *kez.Identity {
	t.Helper()
	id := newIdentity(t)
	h := Handle{Name: name, Domain: d.domain}
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, h.String()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := d.sigc.Append(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	if _, err := d.reg.Claim(context.Background(), Record{Handle: h, Key: id.PublicKey()}); err != nil {
		t.Fatal(err)
	}
	return id
}

func (d *strangerDomain) setHref(href string) {
	d.mu.Lock()
	d.href = href
	d.mu.Unlock()
}

// A handle's domain that is not marked local is a remote origin: its
// WebFinger and the sig-server it names must be public https. A stranger's
// domain on this machine is never contacted, nor a loopback, link-local or
// plain-http sig-server its answer names.
func TestResolverRemoteOrigins(t *testing.T) {
	d := newStrangerDomain(t)
	bob := d.user(t, "bob")
	ctx := context.Background()
	handle := "bob@" + d.domain
	trusting := &http.Client{Transport: &http.Transport{TLSClientConfig: d.tls}, Timeout: 10 * time.Second}

	// Positive control: marked local, the domain resolves, so the
	// refusals below are the rules' doing.
	local := &Resolver{AllowLocal: true, LocalDomains: []string{d.domain}, HTTPClient: trusting, TTL: -1}
	if res, err := local.Resolve(ctx, handle); err != nil || res.Key != bob.PublicKey() {
		t.Fatalf("marked local: %+v, %v", res, err)
	}
	before := d.wfConns.n.Load()
	if before == 0 {
		t.Fatal("the control resolution did not reach the domain's server")
	}

	// Not marked: https://localhost:PORT is dialed at a loopback address,
	// which is refused before a connection is made.
	strict := &Resolver{AllowLocal: true, HTTPClient: trusting, TTL: -1}
	if _, err := strict.Resolve(ctx, handle); !errors.Is(err, ErrForbiddenOrigin) {
		t.Errorf("not marked local: %v, want ErrForbiddenOrigin", err)
	}
	if _, err := strict.Resolve(ctx, "bob@127.0.0.1:"+portOf(t, d.wf)); !errors.Is(err, ErrForbiddenOrigin) {
		t.Errorf("an IP domain: %v, want ErrForbiddenOrigin", err)
	}
	if n := d.wfConns.n.Load(); n != before {
		t.Errorf("%d connections reached the stranger's server", n-before)
	}

	// The sig-server a domain names. This remote client plays the public
	// internet for the WebFinger server and the TLS sig-server only: every
	// other address goes through the real dial check.
	publicAddrs := map[string]bool{d.wf.Listener.Addr().String(): true, d.sig.Listener.Addr().String(): true}
	rc := &http.Client{
		Transport: remoteTransport{&http.Transport{
			TLSClientConfig: d.tls,
			DialContext: (&net.Dialer{Control: func(network, address string, c syscall.RawConn) error {
				if publicAddrs[address] {
					return nil
				}
				return RemoteDialControl(network, address, c)
			}}).DialContext,
		}},
		CheckRedirect: checkRemoteRedirect,
		Timeout:       10 * time.Second,
	}
	r := &Resolver{AllowLocal: true, RemoteHTTPClient: rc, TTL: -1}
	d.setHref(ChainURL("https://localhost:"+portOf(t, d.sig), bob.PublicKey()))
	if res, err := r.Resolve(ctx, handle); err != nil || res.Key != bob.PublicKey() {
		t.Fatalf("positive control through the remote client: %+v, %v", res, err)
	}
	var hidden atomic.Int32
	other, otherConns := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hidden.Add(1) }), true)
	op := portOf(t, other)
	for _, href := range []string{
		"http://localhost:" + op,      // plain http
		"https://localhost:" + op,     // a name of a loopback address: refused at dial time
		"https://127.0.0.1:" + op,     // loopback
		"https://[::1]:" + op,         // loopback
		"https://169.254.169.254",     // a cloud metadata service
		"https://10.0.0.1",            // a private network
		"https://u:p@localhost:" + op, // credentials
	} {
		d.setHref(ChainURL(href, bob.PublicKey()))
		_, err := r.Resolve(ctx, handle)
		if !errors.Is(err, ErrForbiddenOrigin) {
			t.Errorf("sig-server %s: %v, want ErrForbiddenOrigin", href, err)
		}
	}
	if otherConns.n.Load() != 0 || hidden.Load() != 0 {
		t.Errorf("a refused sig-server was reached: %d connections", otherConns.n.Load())
	}
}

// FuzzRemoteRules feeds the remote-origin checks what a stranger's
// WebFinger answer or DNS could hold: whatever passes must be https with
// a host and no user information, and every IP it names must be public.
func FuzzRemoteRules(f *testing.F) {
	for _, s := range []string{
		"https://kez.lat/v1/chains", "https://sig.kez.lat:8443", "http://127.0.0.1:8081", "https://[::ffff:127.0.0.1]",
		"https://169.254.169.254/latest", "https://u:p@kez.lat", "https://[fe80::1%25eth0]", "https://2130706433",
		"https://0x7f.1", "HTTPS://KEZ.LAT", "https://[64:ff9b::a9fe:a9fe]", "//kez.lat", "", "127.0.0.1:443", "[::1]:80", "8.8.8.8:443",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if u, err := url.Parse(s); err == nil && CheckRemoteURL(u) == nil {
			if u.Scheme != "https" || u.User != nil || u.Hostname() == "" {
				t.Fatalf("CheckRemoteURL accepted %q", s)
			}
			if a, err := netip.ParseAddr(u.Hostname()); err == nil && !PublicAddr(a) {
				t.Fatalf("CheckRemoteURL accepted %q at %s", s, a)
			}
		}
		if RemoteDialControl("tcp", s, nil) == nil {
			ap, err := netip.ParseAddrPort(s)
			if err != nil || !PublicAddr(ap.Addr()) {
				t.Fatalf("RemoteDialControl accepted %q", s)
			}
		}
	})
}
