package handles

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

func TestRegisterAndLookup(t *testing.T) {
	s := newStack(t, "kez.lat")
	alice := s.register(t, "alice")

	var rec LookupRecord
	resp := get(t, s.chat.URL+"/v1/handles/alice", &rec)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("lookup: %d", resp.StatusCode)
	}
	wantEnc := base64.RawURLEncoding.EncodeToString(alice.EncryptionKey(0).PublicKey().Bytes())
	if rec.Handle != "alice@kez.lat" || rec.Key != alice.PublicKey().String() ||
		rec.Fingerprint != alice.PublicKey().Fingerprint() || rec.EncryptionKey != wantEnc ||
		rec.EncryptionGeneration != 0 || rec.SigchainURL != s.sig.URL+"/v1/chains/"+alice.PublicKey().String() ||
		time.Since(rec.ClaimedAt) > time.Minute {
		t.Fatalf("lookup record %+v", rec)
	}
	// The sigchain URL serves the chain.
	if resp := get(t, rec.SigchainURL, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("sigchain_url: %d", resp.StatusCode)
	}
	// The full handle and any case work; the Client says the same.
	c := Client{BaseURL: s.chat.URL}
	for _, name := range []string{"alice@kez.lat", "ALICE"} {
		got, err := c.Lookup(context.Background(), name)
		if err != nil || *got != rec {
			t.Fatalf("Lookup(%q) = %+v, %v", name, got, err)
		}
	}
	// Unknown names and other domains are 404; text that is not a handle 400.
	for name, want := range map[string]int{
		"bob": 404, "alice@other.example": 404, "a": 400, "al..ice": 400,
		url.PathEscape("\u0430lice"): 400,
	} {
		var e errorBody
		if resp := get(t, s.chat.URL+"/v1/handles/"+name, &e); resp.StatusCode != want || e.Error == "" {
			t.Errorf("GET /v1/handles/%s: %d %+v, want %d", name, resp.StatusCode, e, want)
		}
	}
	if _, err := c.Lookup(context.Background(), "bob"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Client.Lookup(bob): %v", err)
	}
	if _, err := c.Lookup(context.Background(), "\u0430lice"); ReasonOf(err) != ReasonHomoglyph {
		t.Errorf("Client.Lookup(homoglyph): %v", err)
	}
}

func TestClaimReplayIsHarmless(t *testing.T) {
	s := newStack(t, "kez.lat")
	id := newIdentity(t)
	h := Handle{Name: "alice", Domain: "kez.lat"}
	s.startChain(t, id, h.String())
	claim, err := NewClaim(id, h, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{201, 200, 200} {
		if status, e := post(t, s.chat.URL+"/v1/handles", claim); status != want {
			t.Fatalf("post %d: %d %+v, want %d", i, status, e, want)
		}
	}
	// A fresh claim by the holder is fine too (200, not created).
	c := Client{BaseURL: s.chat.URL}
	if _, created, err := c.Claim(context.Background(), id, h); err != nil || created {
		t.Fatalf("fresh claim by the holder: %v %v", created, err)
	}
}

func TestClaimRefusals(t *testing.T) {
	s := newStack(t, "kez.lat")
	alice := s.register(t, "alice")
	ctx := context.Background()
	now := time.Now()

	// Users with chains, for the cases below.
	bob := newIdentity(t) // chain claims alice@kez.lat: a squatter
	s.startChain(t, bob, "alice@kez.lat")
	carol := newIdentity(t) // chain claims carol@kez.lat, but claims dave
	s.startChain(t, carol, "carol@kez.lat")
	erin := newIdentity(t) // chain without a handle
	s.startChain(t, erin, "")
	frank := newIdentity(t) // no chain at all
	admin := newIdentity(t)
	s.startChain(t, admin, "admin@kez.lat")
	look := newIdentity(t) // a look-alike of alice
	s.startChain(t, look, "al.ice@kez.lat")
	digits := newIdentity(t) // a look-alike of alice by the digit folds
	s.startChain(t, digits, "a1ice@kez.lat")

	claim := func(id *kez.Identity, handle string, at time.Time) *Claim {
		c, err := NewClaim(id, Handle{Name: strings.Split(handle, "@")[0], Domain: strings.Split(handle, "@")[1]}, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	forged := claim(carol, "carol@kez.lat", now)
	forged.Signature = claim(bob, "carol@kez.lat", now).Signature
	otherName := claim(carol, "carol@kez.lat", now)
	otherName.Handle = "carla@kez.lat"

	for _, tc := range []struct {
		name   string
		body   any
		status int
		reason Reason
	}{
		{"taken", claim(bob, "alice@kez.lat", now), 409, ReasonTaken},
		{"look-alike of a taken name", claim(look, "al.ice@kez.lat", now), 409, ReasonLookAlike},
		{"confusable look-alike of a taken name", claim(digits, "a1ice@kez.lat", now), 409, ReasonLookAlike},
		{"key already holds a handle", claim(alice, "alicia@kez.lat", now), 409, ""},
		{"chain claims another handle", claim(carol, "dave@kez.lat", now), 422, ""},
		{"chain has no handle", claim(erin, "erin@kez.lat", now), 422, ""},
		{"no chain", claim(frank, "frank@kez.lat", now), 422, ""},
		{"forged signature", forged, 401, ""},
		{"signature moved to another name", otherName, 401, ""},
		{"stale", claim(carol, "carol@kez.lat", now.Add(-MaxClaimAge-time.Minute)), 401, ""},
		{"future", claim(carol, "carol@kez.lat", now.Add(MaxClaimSkew+time.Minute)), 401, ""},
		{"reserved", claim(admin, "admin@kez.lat", now), 400, ReasonReserved},
		{"other domain", claim(carol, "carol@other.example", now), 400, ""},
		{"not JSON", []byte("{"), 400, ""},
		{"two objects", []byte(`{} {}`), 400, ""},
		{"too large", []byte(`{"handle":"` + strings.Repeat("a", MaxClaimBody) + `"}`), 413, ""},
	} {
		status, e := post(t, s.chat.URL+"/v1/handles", tc.body)
		if status != tc.status || e.Error == "" || e.Reason != tc.reason {
			t.Errorf("%s: %d %+v, want %d reason %q", tc.name, status, e, tc.status, tc.reason)
		}
		if wantExisting := status == 409 && tc.reason != ""; wantExisting != (e.Existing == "alice@kez.lat") {
			t.Errorf("%s: existing %q", tc.name, e.Existing)
		}
	}
	if n := s.server.LookAlikeRefusals(); n != 2 {
		t.Errorf("LookAlikeRefusals() = %d after two refused look-alikes", n)
	}
	// Nothing was recorded by the refused claims.
	for _, k := range []*kez.Identity{bob, carol, erin, frank, admin, look, digits} {
		if _, err := s.reg.LookupKey(ctx, k.PublicKey()); !errors.Is(err, ErrNotFound) {
			t.Errorf("a refused claim left an entry for %s: %v", k.PublicKey(), err)
		}
	}
	if r, err := s.reg.Lookup(ctx, Handle{"alice", "kez.lat"}); err != nil || r.Key != alice.PublicKey() {
		t.Fatalf("alice changed: %+v %v", r, err)
	}

	// The Client maps the answers to the package errors.
	c := Client{BaseURL: s.chat.URL}
	if _, _, err := c.Claim(ctx, bob, Handle{"alice", "kez.lat"}); !errors.Is(err, ErrTaken) {
		t.Errorf("Client.Claim taken: %v", err)
	}
	var te *TakenError
	if _, _, err := c.Claim(ctx, digits, Handle{"a1ice", "kez.lat"}); !errors.As(err, &te) ||
		te.Holder != (Handle{"alice", "kez.lat"}) || te.Claimed != (Handle{"a1ice", "kez.lat"}) || !errors.Is(err, ErrTaken) {
		t.Errorf("Client.Claim of a look-alike: %v; want a *TakenError naming alice", err)
	}
	if _, _, err := c.Claim(ctx, carol, Handle{"dave", "kez.lat"}); !errors.Is(err, ErrChainMismatch) {
		t.Errorf("Client.Claim mismatch: %v", err)
	}

	// A suspended holder may not renew.
	if err := s.reg.SetSuspended(ctx, Handle{"alice", "kez.lat"}, true); err != nil {
		t.Fatal(err)
	}
	if status, e := post(t, s.chat.URL+"/v1/handles", claim(alice, "alice@kez.lat", now)); status != 403 {
		t.Errorf("suspended renewal: %d %+v", status, e)
	}
	if resp := get(t, s.chat.URL+"/v1/handles/alice", nil); resp.StatusCode != http.StatusGone {
		t.Errorf("suspended lookup: %d", resp.StatusCode)
	}
}

// Every class of invalid name gets a 400 with its reason.
func TestClaimInvalidNames(t *testing.T) {
	s := newStack(t, "kez.lat")
	id := newIdentity(t)
	for _, v := range loadParseVectors(t) {
		if v.Reason == "" || v.DefaultDomain != "" || v.AllowLocal || v.InputHex != "" {
			continue // JSON cannot carry bytes that are not UTF-8
		}
		c := Claim{Handle: v.Input, Key: id.PublicKey().String(), Timestamp: time.Now().Unix(), Signature: "AAAA"}
		status, e := post(t, s.chat.URL+"/v1/handles", c)
		if status != 400 || e.Reason != v.Reason {
			t.Errorf("claim of %q: %d %+v, want 400 %s", v.Input, status, e, v.Reason)
		}
	}
}

func TestClaimSigServerFailures(t *testing.T) {
	s := newStack(t, "kez.lat")
	id := newIdentity(t)
	s.startChain(t, id, "alice@kez.lat")
	claimVia := func(sigURL string) (int, errorBody) {
		srv, err := NewServer(ServerConfig{Domain: "kez.lat", Store: s.reg, SigServer: &sigchain.Client{BaseURL: sigURL}, Logger: quietLog})
		if err != nil {
			t.Fatal(err)
		}
		chat := httptest.NewServer(srv)
		defer chat.Close()
		c, _ := NewClaim(id, Handle{"alice", "kez.lat"}, time.Now())
		return post(t, chat.URL+"/v1/handles", c)
	}
	// A sig-server that fails with 500: bad gateway.
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"error":"disk on fire"}`, http.StatusInternalServerError)
	}))
	defer broken.Close()
	if status, e := claimVia(broken.URL); status != http.StatusBadGateway {
		t.Errorf("broken sig-server: %d %+v", status, e)
	}
	// A sig-server that is not there: unavailable.
	gone := httptest.NewServer(http.NotFoundHandler())
	goneURL := gone.URL
	gone.Close()
	if status, e := claimVia(goneURL); status != http.StatusServiceUnavailable {
		t.Errorf("unreachable sig-server: %d %+v", status, e)
	}
	// And the Client says so.
	s.sig.Close()
	if _, _, err := (&Client{BaseURL: s.chat.URL}).Claim(context.Background(), id, Handle{"alice", "kez.lat"}); !errors.Is(err, ErrUnreachable) {
		t.Errorf("Client.Claim with the sig-server down: %v", err)
	}
}

func TestClaimClock(t *testing.T) {
	s := newStack(t, "kez.lat")
	id := newIdentity(t)
	s.startChain(t, id, "alice@kez.lat")
	// The server's clock is an hour ahead: the claim is stale.
	srv, err := NewServer(ServerConfig{Domain: "kez.lat", Store: s.reg, SigServer: s.sigc, Logger: quietLog,
		Now: func() time.Time { return time.Now().Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	chat := httptest.NewServer(srv)
	defer chat.Close()
	c := Client{BaseURL: chat.URL}
	if _, _, err := c.Claim(context.Background(), id, Handle{"alice", "kez.lat"}); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "clock") {
		t.Fatalf("stale claim: %v", err)
	}
	// The client's clock agrees with the server's: accepted.
	c.Now = func() time.Time { return time.Now().Add(time.Hour) }
	if _, created, err := c.Claim(context.Background(), id, Handle{"alice", "kez.lat"}); err != nil || !created {
		t.Fatalf("claim with agreeing clocks: %v %v", created, err)
	}
}

func TestConcurrentClaimsOverHTTP(t *testing.T) {
	s := newStack(t, "kez.lat")
	const n = 8
	claims := make([]*Claim, n)
	for i := range claims {
		id := newIdentity(t)
		s.startChain(t, id, "popular@kez.lat")
		c, err := NewClaim(id, Handle{"popular", "kez.lat"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		claims[i] = c
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
		start    = make(chan struct{})
	)
	for _, c := range claims {
		wg.Go(func() {
			<-start
			status, _ := post(t, s.chat.URL+"/v1/handles", c)
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if statuses[201] != 1 || statuses[409] != n-1 {
		t.Fatalf("statuses %v; want one 201 and %d 409", statuses, n-1)
	}
}

func TestNewServerChecksConfig(t *testing.T) {
	s := newStack(t, "kez.lat")
	for _, cfg := range []ServerConfig{
		{Domain: "localhost:8080", Store: s.reg, SigServer: s.sigc},
		{Domain: "kez.lat", SigServer: s.sigc},
		{Domain: "kez.lat", Store: s.reg},
	} {
		if _, err := NewServer(cfg); err == nil {
			t.Errorf("NewServer(%+v) accepted", cfg)
		}
	}
	if _, err := NewServer(ServerConfig{Domain: "127.0.0.1:8080", AllowLocal: true, Store: s.reg, SigServer: s.sigc}); err != nil {
		t.Errorf("dev domain: %v", err)
	}
}
