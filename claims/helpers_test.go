package claims

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/miekg/dns"
)

const zeroWords = "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon art"

// t0 is the ctime of the eldest link of the test chains.
var t0 = time.Unix(1767222000, 0).UTC()

func zeroIdentity(t testing.TB) *kez.Identity {
	t.Helper()
	id, err := kez.FromWords(zeroWords)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newIdentity(t testing.TB) *kez.Identity {
	t.Helper()
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// chain is a person's sigchain under construction.
type chain struct {
	t     testing.TB
	id    *kez.Identity
	links []*sigchain.Link
	st    *sigchain.State
}

func newChain(t testing.TB, id *kez.Identity) *chain {
	t.Helper()
	l, err := sigchain.NewLink(id, nil, sigchain.TypeEldest,
		sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), t0)
	if err != nil {
		t.Fatal(err)
	}
	c := &chain{t: t, id: id}
	c.add(l)
	return c
}

func (c *chain) add(l *sigchain.Link) {
	c.t.Helper()
	c.links = append(c.links, l)
	st, err := sigchain.Verify(c.links, sigchain.WithClock(func() time.Time { return t0.Add(time.Hour) }))
	if err != nil {
		c.t.Fatal(err)
	}
	c.st = st
}

// next returns the seqno and prev of the chain's next link.
func (c *chain) next() (uint64, string) { return c.st.Seqno() + 1, c.st.Head().String() }

// statement signs the statement for a claim at the chain's next position.
func (c *chain) statement(service, identity string) Statement {
	seqno, prev := c.next()
	return NewStatement(c.id, service, identity, seqno, prev)
}

// claim appends an add_claim link with proof and returns the new claim.
func (c *chain) claim(service, identity, proof string) sigchain.Claim {
	c.t.Helper()
	l, err := sigchain.NewLink(c.id, c.st, sigchain.TypeAddClaim, sigchain.AddClaimBody(service, identity, proof),
		t0.Add(time.Duration(len(c.links))*time.Second))
	if err != nil {
		c.t.Fatal(err)
	}
	c.add(l)
	cl := c.st.Claims()
	return cl[len(cl)-1]
}

// revoke appends a revoke_claim link for id.
func (c *chain) revoke(id cid.Cid) {
	c.t.Helper()
	l, err := sigchain.NewLink(c.id, c.st, sigchain.TypeRevokeClaim, sigchain.RevokeClaimBody(id),
		t0.Add(time.Duration(len(c.links))*time.Second))
	if err != nil {
		c.t.Fatal(err)
	}
	c.add(l)
}

// dnsServer is a real DNS server on loopback, UDP and TCP on one port,
// answering TXT queries from a map the test changes.
type dnsServer struct {
	Addr string

	mu       sync.Mutex
	txt      map[string][][]string // lower-case FQDN → records, each a list of strings
	rrs      map[string][]dns.RR   // lower-case FQDN → the whole answer section, as given
	truncate bool                  // answer UDP queries with TC set and no records
	rcode    int
	udp, tcp int // queries seen per transport
}

func newDNSServer(t testing.TB) *dnsServer {
	t.Helper()
	s := &dnsServer{txt: map[string][][]string{}, rrs: map[string][]dns.RR{}}
	var (
		pc  net.PacketConn
		ln  net.Listener
		err error
	)
	for range 20 { // the TCP port may be taken: try another UDP port
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = pc.LocalAddr().String()
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: s}, {Listener: ln, Handler: s}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() { defer close(done); srv.ActivateAndServe() }()
		<-started
		t.Cleanup(func() { srv.Shutdown(); <-done })
	}
	return s
}

// set replaces the TXT records of name.
func (s *dnsServer) set(name string, records ...[]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.txt[dns.Fqdn(strings.ToLower(name))] = records
}

// setAnswer makes the answer to a query for name exactly rrs, whatever
// names and types they carry (a lying or sloppy server).
func (s *dnsServer) setAnswer(name string, rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rrs[dns.Fqdn(strings.ToLower(name))] = rrs
}

func (s *dnsServer) setTruncate(v bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncate = v
}

func (s *dnsServer) counts() (udp, tcp int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.udp, s.tcp
}

// ServeDNS answers from the map: NXDOMAIN for an unknown name.
func (s *dnsServer) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(q)
	isUDP := w.LocalAddr().Network() == "udp"
	if isUDP {
		s.udp++
	} else {
		s.tcp++
	}
	name := strings.ToLower(q.Question[0].Name)
	recs, ok := s.txt[name]
	rrs, given := s.rrs[name]
	switch {
	case s.rcode != 0:
		m.Rcode = s.rcode
	case given:
		m.Answer = rrs
	case !ok:
		m.Rcode = dns.RcodeNameError
	case isUDP && s.truncate:
		m.Truncated = true
	default:
		for _, r := range recs {
			m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT,
				Class: dns.ClassINET, Ttl: 60}, Txt: r})
		}
	}
	w.WriteMsg(m)
}

// httpsServer is a real TLS server (httptest's certificate names
// example.com) serving paths from a map the test changes.
type httpsServer struct {
	*httptest.Server
	mu    sync.Mutex
	files map[string]string // host + path → body
	hits  int
}

func newHTTPSServer(t testing.TB) *httpsServer {
	t.Helper()
	s := &httpsServer{files: map[string]string{}}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		body, ok := s.files[r.Host+r.URL.Path]
		s.hits++
		s.mu.Unlock()
		switch {
		case !ok:
			http.NotFound(w, r)
		case strings.HasPrefix(body, "redirect:"):
			http.Redirect(w, r, strings.TrimPrefix(body, "redirect:"), http.StatusFound)
		default:
			w.Write([]byte(body))
		}
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *httpsServer) set(hostPath, body string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[hostPath] = body
}

func (s *httpsServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

// client returns an HTTP client that trusts the server's certificate and
// dials it whatever host a URL names.
func (s *httpsServer) client() *http.Client {
	base := s.Server.Client().Transport.(*http.Transport).Clone()
	addr := s.Listener.Addr().String()
	base.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	base.TLSClientConfig = base.TLSClientConfig.Clone()
	base.TLSClientConfig.MinVersion = tls.VersionTLS12
	return &http.Client{Transport: base}
}
