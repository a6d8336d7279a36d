package claims

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/miekg/dns"
	"github.com/nbd-wtf/go-nostr"
	"github.com/nbd-wtf/go-nostr/nip19"
)

// nostrKey returns a nostr key pair from a fixed secret: the nsec and npub.
func nostrKey(t testing.TB, secretHex string) (nsec, npub string) {
	t.Helper()
	pub, err := nostr.GetPublicKey(secretHex)
	if err != nil {
		t.Fatal(err)
	}
	if nsec, err = nip19.EncodePrivateKey(secretHex); err != nil {
		t.Fatal(err)
	}
	if npub, err = nip19.EncodePublicKey(pub); err != nil {
		t.Fatal(err)
	}
	return nsec, npub
}

const (
	secretA = "0000000000000000000000000000000000000000000000000000000000000003"
	secretB = "b7e151628aed2a6abf7158809cf4f3c762e7160f38b4da56a784d9045190cfef"
)

func TestStatementRoundTrip(t *testing.T) {
	id := zeroIdentity(t)
	c := newChain(t, id)
	seqno, prev := c.next()
	st := NewStatement(id, ServiceDNS, "example.com", seqno, prev)
	if err := st.Verify(); err != nil {
		t.Fatal(err)
	}
	got, err := ParseStatement(st.Text(), ServiceDNS, "example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got.Text() != st.Text() || got.Key != st.Key || got.Seqno != seqno || got.Prev != prev || got.Verify() != nil {
		t.Fatalf("round trip: %+v, want %+v", got, st)
	}
	// The signature binds service and identity: the same text read for
	// another identity does not verify.
	other, err := ParseStatement(st.Text(), ServiceDNS, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another identity: %v, want ErrBadSignature", err)
	}
	// The longest possible text fits one TXT string.
	long := NewStatement(id, ServiceDNS, "example.com", maxSeqno, prev)
	if n := len(long.Text()); n > MaxStatementLen {
		t.Fatalf("the longest statement is %d bytes", n)
	}
	if _, err := ParseStatement(long.Text(), ServiceDNS, "example.com"); err != nil {
		t.Fatal(err)
	}
}

func TestParseStatementRejects(t *testing.T) {
	id := zeroIdentity(t)
	c := newChain(t, id)
	good := c.statement(ServiceDNS, "example.com").Text()
	f := strings.Split(good, " ")
	join := func(parts ...string) string { return strings.Join(parts, " ") }
	sig := f[4]
	// A signature with non-zero unused bits: another text of the same bytes.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", sig[len(sig)-1])
	otherSig := sig[:len(sig)-1] + string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1])
	cases := map[string]string{
		"empty":             "",
		"trailing newline":  good + "\n",
		"double space":      strings.Replace(good, " ", "  ", 1),
		"tab":               strings.Replace(good, " ", "\t", 1),
		"other version":     join("kez-claim=v2", f[1], f[2], f[3], f[4]),
		"extra field":       good + " x",
		"lower-case key":    join(f[0], strings.ToLower(f[1]), f[2], f[3], f[4]),
		"not a key":         join(f[0], "U"+strings.Repeat("A", 55), f[2], f[3], f[4]),
		"leading zero":      join(f[0], f[1], "0"+f[2], f[3], f[4]),
		"seqno 1":           join(f[0], f[1], "1", f[3], f[4]),
		"seqno 0":           join(f[0], f[1], "0", f[3], f[4]),
		"seqno too big":     join(f[0], f[1], "9007199254740992", f[3], f[4]),
		"negative seqno":    join(f[0], f[1], "-2", f[3], f[4]),
		"plus seqno":        join(f[0], f[1], "+2", f[3], f[4]),
		"upper-case prev":   join(f[0], f[1], f[2], strings.ToUpper(f[3]), f[4]),
		"prev not a CID":    join(f[0], f[1], f[2], "b"+strings.Repeat("a", 58), f[4]),
		"padded sig":        good + "==",
		"std base64 sig":    join(f[0], f[1], f[2], f[3], strings.NewReplacer("-", "+", "_", "/").Replace(sig)+"+"),
		"short sig":         join(f[0], f[1], f[2], f[3], sig[:84]),
		"non-canonical sig": join(f[0], f[1], f[2], f[3], otherSig),
		"too long":          good + strings.Repeat("A", 256-len(good)),
		"NUL":               good + "\x00",
		"CR":                good + "\r",
	}
	if otherSig == sig {
		t.Fatal("test bug")
	}
	for name, text := range cases {
		if _, err := ParseStatement(text, ServiceDNS, "example.com"); !errors.Is(err, ErrBadStatement) {
			t.Errorf("%s: %q: %v, want ErrBadStatement", name, text, err)
		}
	}
	if _, err := ParseStatement(good, "github", "alice"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("unknown service: %v", err)
	}
	if _, err := ParseStatement(good, ServiceDNS, "Example.com"); !errors.Is(err, ErrBadIdentity) {
		t.Errorf("upper-case identity: %v", err)
	}
}

func TestCheckIdentity(t *testing.T) {
	_, npub := nostrKey(t, secretA)
	long := strings.Repeat("a", 63)
	ok := map[string][]string{
		ServiceDNS:   {"example.com", "a", "xn--bcher-kva.example", "a-b.c0", long + "." + long + "." + long + "." + strings.Repeat("b", 61)},
		ServiceHTTPS: {"example.com", "example.com:8443", "127.0.0.1", "127.0.0.1:443", "[::1]", "[2001:db8::1]:8443"},
		ServiceNostr: {npub},
	}
	bad := map[string][]string{
		ServiceDNS: {"", "Example.com", "example.com.", ".example.com", "a..b", "-a.com", "a-.com", "a_b.com", "a b.com",
			"é.com", "1.2.3.4", "example.123", long + "a.com", long + "." + long + "." + long + "." + strings.Repeat("b", 62), "example.com:80"},
		ServiceHTTPS: {"", "Example.com", "example.com:", "example.com:0", "example.com:080", "example.com:65536", "example.com/x",
			"https://example.com", "user@example.com", "::1", "[::1", "[::1]x", "[::ffff:127.0.0.1]", "[fe80::1%eth0]",
			"[2001:DB8::1]", "[2001:db8:0::1]", "127.000.0.1", "1.2.3.4.5", "[127.0.0.1]"},
		ServiceNostr: {"", strings.ToUpper(npub), npub[:62], npub + "q", "nsec" + npub[4:], "npub1" + strings.Repeat("q", 58),
			"nprofile1qqsrhuxx8l9ex335q7he0f09aej04zpazpl0ne2cgukyawd24mayt8gpp4mhxue69uhhytnc9e3k7mgpz4mhxue69uhkg6nzv9ejuumpv34kytnrdaksjlyr9p"},
	}
	for svc, ids := range ok {
		for _, id := range ids {
			if err := CheckIdentity(svc, id); err != nil {
				t.Errorf("%s %q: %v", svc, id, err)
			}
		}
	}
	for svc, ids := range bad {
		for _, id := range ids {
			if err := CheckIdentity(svc, id); !errors.Is(err, ErrBadIdentity) {
				t.Errorf("%s %q: %v, want ErrBadIdentity", svc, id, err)
			}
		}
	}
	if err := CheckIdentity("github", "alice"); !errors.Is(err, ErrUnsupported) {
		t.Errorf("github: %v", err)
	}
}

// checkOne checks the newest claim of c's chain.
func checkOne(t *testing.T, ch *Checker, c *chain) Result {
	t.Helper()
	rs := ch.Check(context.Background(), c.st)
	if len(rs) == 0 {
		t.Fatal("no results")
	}
	return rs[len(rs)-1]
}

// checkLast checks the newest claim of c's chain with CheckClaim: no
// cache, and no other claim checked.
func checkLast(t *testing.T, ch *Checker, c *chain) error {
	t.Helper()
	cl := c.st.Claims()
	return ch.CheckClaim(context.Background(), c.st.Key(), cl[len(cl)-1])
}

func wantErr(t *testing.T, err, target error) {
	t.Helper()
	if (target == nil) != (err == nil) || (target != nil && !errors.Is(err, target)) {
		t.Fatalf("%v, want %v", err, target)
	}
}

func wantStatus(t *testing.T, r Result, s Status, target error) {
	t.Helper()
	if r.Status != s || (target == nil) != (r.Err == nil) || (target != nil && !errors.Is(r.Err, target)) {
		t.Fatalf("%s %s: %v %v, want %v %v", r.Claim.Service, r.Claim.Identity, r.Status, r.Err, s, target)
	}
}

func TestCheckDNS(t *testing.T) {
	srv := newDNSServer(t)
	ch := &Checker{DNSServer: srv.Addr}
	c := newChain(t, zeroIdentity(t))
	st := c.statement(ServiceDNS, "example.com")
	srv.set("_kez.example.com", []string{"v=spf1 -all"}, []string{st.Text()})
	cl := c.claim(ServiceDNS, "example.com", st.Text())
	if cl.Prev == "" || cl.Seqno != 2 {
		t.Fatalf("claim position %d %q", cl.Seqno, cl.Prev)
	}
	wantStatus(t, checkOne(t, ch, c), Verified, nil)

	t.Run("split over strings", func(t *testing.T) {
		st := c.statement(ServiceDNS, "split.example.com")
		txt := st.Text()
		srv.set("_kez.split.example.com", []string{txt[:100], txt[100:200], txt[200:]})
		c.claim(ServiceDNS, "split.example.com", txt)
		wantStatus(t, checkOne(t, &Checker{DNSServer: srv.Addr}, c), Verified, nil)
	})
	t.Run("missing", func(t *testing.T) {
		st := c.statement(ServiceDNS, "missing.example.com")
		c.claim(ServiceDNS, "missing.example.com", st.Text())
		wantStatus(t, checkOne(t, &Checker{DNSServer: srv.Addr}, c), Failed, ErrNotFound)
		// A record that exists but holds something else.
		srv.set("_kez.missing.example.com", []string{"kez-claim=v1 something else"})
		wantStatus(t, checkOne(t, &Checker{DNSServer: srv.Addr}, c), Failed, ErrNotFound)
	})
	t.Run("truncated over UDP, then TCP", func(t *testing.T) {
		srv.setTruncate(true)
		defer srv.setTruncate(false)
		_, tcp := srv.counts()
		st := c.statement(ServiceDNS, "big.example.com")
		srv.set("_kez.big.example.com", []string{st.Text()})
		c.claim(ServiceDNS, "big.example.com", st.Text())
		wantErr(t, checkLast(t, &Checker{DNSServer: srv.Addr}, c), nil)
		if _, tcp2 := srv.counts(); tcp2 != tcp+1 {
			t.Fatalf("TCP queries %d → %d, want one more", tcp, tcp2)
		}
	})
	t.Run("server failure", func(t *testing.T) {
		srv.mu.Lock()
		srv.rcode = 2 // SERVFAIL
		srv.mu.Unlock()
		defer func() { srv.mu.Lock(); srv.rcode = 0; srv.mu.Unlock() }()
		st := c.statement(ServiceDNS, "fail.example.com")
		c.claim(ServiceDNS, "fail.example.com", st.Text())
		wantStatus(t, checkOne(t, &Checker{DNSServer: srv.Addr}, c), Failed, ErrUnavailable)
	})
}

func TestCheckHTTPS(t *testing.T) {
	srv := newHTTPSServer(t)
	c := newChain(t, zeroIdentity(t))
	checker := func() *Checker { return &Checker{HTTPClient: srv.client()} }
	st := c.statement(ServiceHTTPS, "example.com")
	srv.set("example.com"+WellKnownPath, "# kez claims\r\nkez-claim=v1 another one\r\n  "+st.Text()+"\r\n")
	c.claim(ServiceHTTPS, "example.com", st.Text())
	wantStatus(t, checkOne(t, checker(), c), Verified, nil)

	t.Run("missing", func(t *testing.T) {
		st := c.statement(ServiceHTTPS, "www.example.com")
		c.claim(ServiceHTTPS, "www.example.com", st.Text())
		wantStatus(t, checkOne(t, checker(), c), Failed, ErrNotFound)
		srv.set("www.example.com"+WellKnownPath, "nothing here\n"+st.Text()[:100])
		wantStatus(t, checkOne(t, checker(), c), Failed, ErrNotFound)
	})
	t.Run("redirect refused", func(t *testing.T) {
		st := c.statement(ServiceHTTPS, "moved.example.com")
		srv.set("moved.example.com"+WellKnownPath, "redirect:https://example.com/elsewhere")
		srv.set("example.com/elsewhere", st.Text())
		c.claim(ServiceHTTPS, "moved.example.com", st.Text())
		before := srv.count()
		wantErr(t, checkLast(t, checker(), c), ErrUnavailable)
		if n := srv.count() - before; n != 1 {
			t.Fatalf("%d requests, want 1 (the redirect not followed)", n)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		st := c.statement(ServiceHTTPS, "big.example.com")
		srv.set("big.example.com"+WellKnownPath, st.Text()+"\n"+strings.Repeat("x", MaxHTTPSBody))
		c.claim(ServiceHTTPS, "big.example.com", st.Text())
		wantStatus(t, checkOne(t, checker(), c), Failed, ErrUnavailable)
	})
	t.Run("IP or port outside local domains", func(t *testing.T) {
		addr := srv.Listener.Addr().String()
		for _, id := range []string{addr, "127.0.0.1", "example.com:8443"} {
			st := c.statement(ServiceHTTPS, id)
			srv.set(id+WellKnownPath, st.Text())
			c.claim(ServiceHTTPS, id, st.Text())
			before := srv.count()
			wantErr(t, checkLast(t, checker(), c), ErrForbidden)
			if srv.count() != before {
				t.Fatalf("%s: a request was made", id)
			}
			// The same identity marked local is checked.
			ch := checker()
			ch.LocalDomains = []string{id}
			wantErr(t, checkLast(t, ch, c), nil)
		}
	})
	t.Run("the default client dials public addresses only", func(t *testing.T) {
		st := c.statement(ServiceHTTPS, "localhost")
		c.claim(ServiceHTTPS, "localhost", st.Text())
		before := srv.count()
		wantErr(t, checkLast(t, &Checker{}, c), ErrForbidden)
		if srv.count() != before {
			t.Fatal("a request was made")
		}
	})
}

func TestCheckNostr(t *testing.T) {
	nsecA, npubA := nostrKey(t, secretA)
	nsecB, _ := nostrKey(t, secretB)
	c := newChain(t, zeroIdentity(t))
	ch := &Checker{}
	st := c.statement(ServiceNostr, npubA)
	ev, err := NostrEvent(nsecA, st)
	if err != nil {
		t.Fatal(err)
	}
	c.claim(ServiceNostr, npubA, ev)
	wantStatus(t, checkOne(t, ch, c), Verified, nil)

	if _, err := NostrEvent(nsecB, st); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("signing with another nostr key: %v", err)
	}
	if _, err := NostrEvent(npubA, st); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("signing with an npub: %v", err)
	}

	// sign makes an event for st at the next position, changed by edit
	// before signing with secret.
	sign := func(secret string, st Statement, edit func(*nostr.Event)) *nostr.Event {
		e := &nostr.Event{CreatedAt: 1767225600, Kind: NostrKind, Tags: nostr.Tags{{NostrTag, st.Key.String()}}, Content: st.Text()}
		if edit != nil {
			edit(e)
		}
		if err := e.Sign(secret); err != nil {
			t.Fatal(err)
		}
		return e
	}
	cases := []struct {
		name   string
		secret string
		edit   func(*nostr.Event) // before signing
		after  func(*nostr.Event) // after signing
		want   error
	}{
		{"another nostr key", secretB, nil, nil, ErrWrongKey},
		{"kind 0", secretA, func(e *nostr.Event) { e.Kind = 0 }, nil, ErrBadStatement},
		{"no kez tag", secretA, func(e *nostr.Event) { e.Tags = nostr.Tags{{"t", "kez"}} }, nil, ErrBadStatement},
		{"tag of another key", secretA, func(e *nostr.Event) { e.Tags = nostr.Tags{{NostrTag, newIdentity(t).PublicKey().String()}} }, nil, ErrBadStatement},
		{"content changed after signing", secretA, nil, func(e *nostr.Event) { e.CreatedAt++ }, ErrBadSignature},
		{"forged signature", secretA, nil, func(e *nostr.Event) { e.Sig = strings.Repeat("0", 128) }, ErrBadSignature},
		{"signature of another event", secretA, nil, func(e *nostr.Event) {
			o := sign(secretA, st, func(o *nostr.Event) { o.CreatedAt = 1 })
			e.Sig = o.Sig
		}, ErrBadSignature},
		{"pubkey swapped", secretB, nil, func(e *nostr.Event) { e.PubKey, _ = nostr.GetPublicKey(secretA) }, ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := c.statement(ServiceNostr, npubA)
			e := sign(tc.secret, st, tc.edit)
			if tc.after != nil {
				tc.after(e)
			}
			c.claim(ServiceNostr, npubA, string(marshalNostrEvent(e)))
			wantStatus(t, checkOne(t, ch, c), Failed, tc.want)
		})
	}
}

// TestForgedStaleRevokedWrongKey: proofs that must fail, and why.
func TestForgedStaleRevokedWrongKey(t *testing.T) {
	srv := newDNSServer(t)
	ch := &Checker{DNSServer: srv.Addr}
	alice := newChain(t, zeroIdentity(t))
	bob := newChain(t, newIdentity(t))

	t.Run("forged", func(t *testing.T) {
		// A statement naming alice's key, signed by someone else.
		st := alice.statement(ServiceDNS, "forged.example.com")
		st.Sig = bob.statement(ServiceDNS, "forged.example.com").Sig
		srv.set("_kez.forged.example.com", []string{st.Text()})
		alice.claim(ServiceDNS, "forged.example.com", st.Text())
		wantStatus(t, checkOne(t, ch, alice), Failed, ErrBadSignature)
	})
	t.Run("wrong key", func(t *testing.T) {
		// Bob's own valid statement, copied into alice's claim.
		st := bob.statement(ServiceDNS, "bob.example.com")
		srv.set("_kez.bob.example.com", []string{st.Text()})
		alice.claim(ServiceDNS, "bob.example.com", st.Text())
		wantStatus(t, checkOne(t, ch, alice), Failed, ErrWrongKey)
	})
	t.Run("stale position", func(t *testing.T) {
		seqno, prev := alice.next()
		st := NewStatement(alice.id, ServiceDNS, "stale.example.com", seqno+1, prev)
		srv.set("_kez.stale.example.com", []string{st.Text()})
		alice.claim(ServiceDNS, "stale.example.com", st.Text())
		wantStatus(t, checkOne(t, ch, alice), Failed, ErrStale)
	})
	t.Run("revoked, then re-added with the old statement", func(t *testing.T) {
		st := alice.statement(ServiceDNS, "revoked.example.com")
		srv.set("_kez.revoked.example.com", []string{st.Text()})
		cl := alice.claim(ServiceDNS, "revoked.example.com", st.Text())
		wantStatus(t, checkOne(t, ch, alice), Verified, nil)
		alice.revoke(cl.ID)
		for _, r := range ch.Check(context.Background(), alice.st) {
			if r.Claim.ID == cl.ID {
				t.Fatal("a revoked claim has a result")
			}
		}
		// The old statement (still published) for a new claim is stale.
		alice.claim(ServiceDNS, "revoked.example.com", st.Text())
		wantStatus(t, checkOne(t, ch, alice), Failed, ErrStale)
	})
	t.Run("revoked nostr event reused", func(t *testing.T) {
		nsec, npub := nostrKey(t, secretA)
		ev, err := NostrEvent(nsec, alice.statement(ServiceNostr, npub))
		if err != nil {
			t.Fatal(err)
		}
		cl := alice.claim(ServiceNostr, npub, ev)
		wantStatus(t, checkOne(t, ch, alice), Verified, nil)
		alice.revoke(cl.ID)
		alice.claim(ServiceNostr, npub, ev)
		wantStatus(t, checkOne(t, ch, alice), Failed, ErrStale)
	})
	t.Run("unsupported service", func(t *testing.T) {
		alice.claim("github", "alice", "https://gist.github.com/alice/1")
		wantStatus(t, checkOne(t, ch, alice), Failed, ErrUnsupported)
	})
	t.Run("not a statement", func(t *testing.T) {
		alice.claim(ServiceDNS, "junk.example.com", "https://example.com/proof")
		wantStatus(t, checkOne(t, ch, alice), Failed, ErrBadStatement)
	})
}

func TestCache(t *testing.T) {
	srv := newDNSServer(t)
	clock := &limittest.Clock{}
	clock.Add(t0.Add(time.Hour).Sub(clock.Now()))
	ch := &Checker{DNSServer: srv.Addr, Clock: clock.Now}
	c := newChain(t, zeroIdentity(t))
	st := c.statement(ServiceDNS, "example.com")
	srv.set("_kez.example.com", []string{st.Text()})
	c.claim(ServiceDNS, "example.com", st.Text())

	if rs := ch.Cached(c.st); len(rs) != 1 || rs[0].Status != Unchecked || !rs[0].CheckedAt.IsZero() {
		t.Fatalf("before any check: %+v", rs)
	}
	r := checkOne(t, ch, c)
	wantStatus(t, r, Verified, nil)
	if !r.CheckedAt.Equal(clock.Now()) {
		t.Fatalf("CheckedAt %v", r.CheckedAt)
	}
	// The record goes away: within the TTL the result comes from the
	// cache, without a query.
	srv.set("_kez.example.com")
	udp, tcp := srv.counts()
	clock.Add(DefaultTTL - time.Second)
	wantStatus(t, checkOne(t, ch, c), Verified, nil)
	if rs := ch.Cached(c.st); rs[0].Status != Verified {
		t.Fatalf("Cached: %+v", rs)
	}
	if u, tc := srv.counts(); u != udp || tc != tcp {
		t.Fatal("a cached result was checked again")
	}
	// After the TTL it is checked again and fails.
	clock.Add(time.Second)
	if rs := ch.Cached(c.st); rs[0].Status != Unchecked {
		t.Fatalf("Cached after the TTL: %+v", rs)
	}
	wantStatus(t, checkOne(t, ch, c), Failed, ErrNotFound)
	// A failure is kept for FailedTTL, then checked again.
	srv.set("_kez.example.com", []string{st.Text()})
	clock.Add(DefaultFailedTTL - time.Second)
	wantStatus(t, checkOne(t, ch, c), Failed, ErrNotFound)
	clock.Add(time.Second)
	wantStatus(t, checkOne(t, ch, c), Verified, nil)
}

func TestCacheBound(t *testing.T) {
	srv := newDNSServer(t)
	ch := &Checker{DNSServer: srv.Addr, maxEntries: 2}
	c := newChain(t, zeroIdentity(t))
	for i := range 3 {
		name := fmt.Sprintf("n%d.example.com", i)
		st := c.statement(ServiceDNS, name)
		srv.set("_kez."+name, []string{st.Text()})
		c.claim(ServiceDNS, name, st.Text())
	}
	for _, r := range ch.Check(context.Background(), c.st) {
		wantStatus(t, r, Verified, nil)
	}
	ch.mu.Lock()
	n := len(ch.cache)
	ch.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d cached, want 2", n)
	}
	cached := ch.Cached(c.st)
	unchecked := 0
	for _, r := range cached {
		if r.Status == Unchecked {
			unchecked++
		}
	}
	if unchecked != 1 {
		t.Fatalf("%d unchecked after the bound, want 1: %+v", unchecked, cached)
	}
}

func TestCheckCancelled(t *testing.T) {
	srv := newDNSServer(t)
	ch := &Checker{DNSServer: srv.Addr}
	c := newChain(t, zeroIdentity(t))
	st := c.statement(ServiceDNS, "example.com")
	srv.set("_kez.example.com", []string{st.Text()})
	c.claim(ServiceDNS, "example.com", st.Text())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, r := range ch.Check(ctx, c.st) {
		wantStatus(t, r, Unchecked, nil)
	}
	if udp, tcp := srv.counts(); udp+tcp != 0 {
		t.Fatal("a query was sent with a cancelled context")
	}
	wantStatus(t, checkOne(t, ch, c), Verified, nil)
}

// TestClaimPrev: sigchain.Claim.Prev is the add_claim link's prev, and a
// statement's position must match it exactly.
func TestClaimPrev(t *testing.T) {
	c := newChain(t, zeroIdentity(t))
	head := c.st.Head().String()
	cl := c.claim(ServiceDNS, "example.com", "x")
	if cl.Prev != head {
		t.Fatalf("Prev %q, want %q", cl.Prev, head)
	}
	if _, err := sigchain.ParseID(cl.Prev); err != nil {
		t.Fatal(err)
	}
	st := NewStatement(c.id, ServiceDNS, "example.com", cl.Seqno, c.st.Head().String())
	if err := CheckPosition(st, c.st.Key(), cl); !errors.Is(err, ErrStale) {
		t.Fatalf("another prev: %v", err)
	}
}

// TestCheckDNSAnswerNames: only TXT records of the name asked (or of the
// names its CNAME chain in the answer leads to) count; a record of another
// name in the answer proves nothing.
func TestCheckDNSAnswerNames(t *testing.T) {
	srv := newDNSServer(t)
	c := newChain(t, zeroIdentity(t))
	txt := func(owner, text string) dns.RR {
		return &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{text}}
	}
	cname := func(owner, target string) dns.RR {
		return &dns.CNAME{Hdr: dns.RR_Header{Name: dns.Fqdn(owner), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: 60}, Target: dns.Fqdn(target)}
	}
	check := func(identity string, answer func(text string) []dns.RR, want error) {
		t.Helper()
		st := c.statement(ServiceDNS, identity)
		srv.setAnswer("_kez."+identity, answer(st.Text())...)
		c.claim(ServiceDNS, identity, st.Text())
		wantErr(t, checkLast(t, &Checker{DNSServer: srv.Addr}, c), want)
	}
	// The statement, but as the record of another name.
	check("alice.example.org", func(s string) []dns.RR { return []dns.RR{txt("_kez.mallory.example", s)} }, ErrNotFound)
	// A CNAME to a name whose record is not in the answer, and an
	// unrelated record that holds it.
	check("bob.example.org", func(s string) []dns.RR {
		return []dns.RR{cname("_kez.bob.example.org", "proofs.example.net"), txt("other.example.net", s)}
	}, ErrNotFound)
	// Delegation through a CNAME chain, in any order and case: verified.
	check("carol.example.org", func(s string) []dns.RR {
		return []dns.RR{txt("Proofs.Example.NET", s), cname("_kez.proofs.example.com", "proofs.example.net"),
			cname("_KEZ.carol.example.org", "_kez.proofs.example.com")}
	}, nil)
	// A CNAME loop ends.
	check("loop.example.org", func(s string) []dns.RR {
		return []dns.RR{cname("_kez.loop.example.org", "a.example"), cname("a.example", "_kez.loop.example.org"), txt("b.example", s)}
	}, ErrNotFound)
}
