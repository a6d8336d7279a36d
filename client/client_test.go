package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// counting wraps h and counts the requests it serves.
type counting struct {
	h http.Handler
	n atomic.Int64
}

func (c *counting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.n.Add(1)
	c.h.ServeHTTP(w, r)
}

// serve starts a real HTTP server with h, stopped in t.Cleanup.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// Against a real chat-server: the domain and the sig-server come from its
// /v1/info, and what Discover returns resolves the stack's handles.
func TestDiscoverFromChatServer(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{Relays: []string{relayA, relayB}})
	bob := st.NewUser(t, "bob")
	cc, err := client.Config{Identity: stacktest.Identity("alice"), Home: t.TempDir(), ServerURL: st.ServerURL + "/"}.Discover(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cc.Relays, []string{relayA, relayB}) {
		t.Fatalf("discovered relays %q", cc.Relays)
	}
	if cc.Domain != st.Domain || cc.SigServerURL != st.SigServerURL || cc.ServerURL != st.ServerURL {
		t.Fatalf("discovered domain %q, sig-server %q, server %q; want %q, %q, %q", cc.Domain, cc.SigServerURL, cc.ServerURL, st.Domain, st.SigServerURL, st.ServerURL)
	}
	if cc.AllowLocalDomains {
		t.Error("kez.test turned on development domains")
	}
	if cc.HTTPClient == nil || cc.HTTPClient.Timeout != client.DefaultHTTPTimeout || cc.Logger == nil || cc.Clock == nil || cc.Resolver == nil {
		t.Fatalf("defaults not filled in: %+v", cc)
	}
	res, err := cc.Resolver.Resolve(ctx(t), "bob")
	if err != nil || res.Key != bob.Key {
		t.Fatalf("the discovered resolver: %v %+v", err, res)
	}
	// Discovering a complete Config again changes nothing.
	again, err := cc.Discover(ctx(t))
	if err != nil || again.Resolver != cc.Resolver || again.HTTPClient != cc.HTTPClient || again.Domain != cc.Domain {
		t.Fatalf("a second Discover: %v", err)
	}
}

// Explicit settings win over the server's, and a complete Config asks
// nothing at all.
func TestDiscoverExplicitWins(t *testing.T) {
	info := &counting{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"domain":"server.example","sig_server":"https://sig.server.example"}`))
	})}
	srv := serve(t, info)
	base := client.Config{Identity: stacktest.Identity("alice"), Home: t.TempDir(), ServerURL: srv.URL}

	cfg := base
	cfg.Domain, cfg.SigServerURL, cfg.Relays = "mine.example", "https://sig.mine.example/", []string{client.NoRelays}
	cc, err := cfg.Discover(ctx(t))
	if err != nil || cc.Domain != "mine.example" || cc.SigServerURL != "https://sig.mine.example" || cc.Relays != nil || info.n.Load() != 0 {
		t.Fatalf("complete config: %v %q %q %q, %d requests", err, cc.Domain, cc.SigServerURL, cc.Relays, info.n.Load())
	}

	cfg = base
	cfg.Domain = "mine.example"
	cc, err = cfg.Discover(ctx(t))
	if err != nil || cc.Domain != "mine.example" || cc.SigServerURL != "https://sig.server.example" || info.n.Load() != 1 {
		t.Fatalf("domain given: %v %q %q, %d requests", err, cc.Domain, cc.SigServerURL, info.n.Load())
	}
}

// Two relay addresses with real peer ids.
const (
	relayA = "/ip4/192.0.2.1/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"
	relayB = "/ip4/192.0.2.2/udp/4002/quic-v1/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"
)

// Relays: the server's when none are given (asked for even when the
// domain and sig-server are known, once), the user's when given, none for
// "none"; a server that cannot say leaves the client without relays.
func TestDiscoverRelays(t *testing.T) {
	info := &counting{h: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"domain":"server.example","relays":["` + relayA + `"]}`))
	})}
	srv := serve(t, info)
	base := client.Config{Identity: stacktest.Identity("alice"), Home: t.TempDir(), ServerURL: srv.URL, Domain: "kez.lat", SigServerURL: "https://sig.kez.lat"}

	cc, err := base.Discover(ctx(t))
	if err != nil || !slices.Equal(cc.Relays, []string{relayA}) || info.n.Load() != 1 {
		t.Fatalf("the server's relays: %v %q, %d requests", err, cc.Relays, info.n.Load())
	}
	if again, err := cc.Discover(ctx(t)); err != nil || !slices.Equal(again.Relays, cc.Relays) || info.n.Load() != 1 {
		t.Fatalf("a second Discover: %v %q, %d requests", err, again.Relays, info.n.Load())
	}

	cfg := base
	cfg.Relays = []string{strings.Replace(relayB, "/p2p/", "/ipfs/", 1), relayB}
	cc, err = cfg.Discover(ctx(t))
	if err != nil || !slices.Equal(cc.Relays, []string{relayB}) || info.n.Load() != 1 {
		t.Fatalf("the user's relays: %v %q, %d requests", err, cc.Relays, info.n.Load())
	}
	cfg.Relays = []string{client.NoRelays}
	cc, err = cfg.Discover(ctx(t))
	if err != nil || cc.Relays != nil || info.n.Load() != 1 {
		t.Fatalf("none: %v %q, %d requests", err, cc.Relays, info.n.Load())
	}
	// Then nothing is asked on a second Discover either.
	if cc, err = cc.Discover(ctx(t)); err != nil || cc.Relays != nil || info.n.Load() != 1 {
		t.Fatalf("none again: %v %q, %d requests", err, cc.Relays, info.n.Load())
	}

	for _, bad := range [][]string{{"/ip4/192.0.2.1/tcp/4002"}, {relayA, "none"}, {""}, {relayA + "/p2p-circuit"}} {
		cfg.Relays = bad
		if _, err := cfg.Discover(ctx(t)); !errors.Is(err, handles.ErrBadRelay) {
			t.Errorf("Relays %q: %v, want ErrBadRelay", bad, err)
		}
	}

	// A server that cannot answer costs the relays only.
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	cfg = base
	cfg.ServerURL = gone.URL
	if cc, err := cfg.Discover(ctx(t)); err != nil || cc.Relays != nil {
		t.Fatalf("server down, relays only: %v %q", err, cc.Relays)
	}
	// One that names bad relays likewise, when the domain is known;
	// without it, the answer is refused whole.
	liar := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"domain":"kez.lat","relays":["/ip4/192.0.2.1/tcp/4002"]}`))
	}))
	cfg.ServerURL = liar.URL
	if cc, err := cfg.Discover(ctx(t)); err != nil || cc.Relays != nil {
		t.Fatalf("bad relays, relays only: %v %q", err, cc.Relays)
	}
	if _, err := (client.Config{Identity: stacktest.Identity("alice"), Home: t.TempDir(), ServerURL: liar.URL}).Discover(ctx(t)); !errors.Is(err, handles.ErrBadInfo) {
		t.Fatalf("bad relays, domain asked: %v", err)
	}
}

func TestDiscoverDevelopmentDomain(t *testing.T) {
	srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"domain":"127.0.0.1:8080","sig_server":"http://127.0.0.1:8081"}`))
	}))
	cc, err := client.Config{Identity: stacktest.Identity("alice"), Home: t.TempDir(), ServerURL: srv.URL}.Discover(ctx(t))
	if err != nil || !cc.AllowLocalDomains || !cc.Resolver.AllowLocal {
		t.Fatalf("a development home domain: %v, AllowLocalDomains %v", err, cc.AllowLocalDomains)
	}
	if _, err := (handles.Rules{DefaultDomain: cc.Domain, AllowLocal: cc.AllowLocalDomains}).Parse("bob"); err != nil {
		t.Fatalf("bob at the development domain: %v", err)
	}
}

// A server the user named may still answer badly: nothing it says is
// taken unless it is a usable domain and an http(s) base URL.
func TestDiscoverRefusesBadAnswers(t *testing.T) {
	id := stacktest.Identity("alice")
	for name, tc := range map[string]struct {
		status int
		body   string
		domain string // configured
		want   error
	}{
		"no info, no domain":         {404, `{"error":"not found"}`, "", handles.ErrNotFound},
		"server error":               {503, `{"error":"later"}`, "", handles.ErrUnreachable},
		"rate limited":               {429, `{"error":"slow down"}`, "", handles.ErrRateLimited},
		"not JSON":                   {200, `<html>`, "", handles.ErrBadInfo},
		"look-alike domain":          {200, `{"domain":"kеz.lat"}`, "", handles.ErrBadInfo},
		"script sig-server":          {200, `{"domain":"kez.lat","sig_server":"javascript:alert(1)"}`, "", handles.ErrBadInfo},
		"sig-server with a password": {200, `{"domain":"kez.lat","sig_server":"https://u:p@sig.kez.lat"}`, "", handles.ErrBadInfo},
		"huge answer":                {200, `{"domain":"kez.lat","x":"` + strings.Repeat("x", 1<<20) + `"}`, "", handles.ErrBadInfo},
		"bad info, domain given":     {200, `{"domain":""}`, "kez.lat", handles.ErrBadInfo},
	} {
		t.Run(name, func(t *testing.T) {
			srv := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			cc, err := client.Config{Identity: id, Home: t.TempDir(), ServerURL: srv.URL, Domain: tc.domain}.Discover(ctx(t))
			if !errors.Is(err, tc.want) {
				t.Fatalf("Discover = %+v, %v; want %v", cc, err, tc.want)
			}
		})
	}

	// An old server without /v1/info is fine when the domain is known.
	srv := serve(t, http.NotFoundHandler())
	cc, err := client.Config{Identity: id, Home: t.TempDir(), ServerURL: srv.URL, Domain: "kez.lat"}.Discover(ctx(t))
	if err != nil || cc.Domain != "kez.lat" || cc.SigServerURL != "" {
		t.Fatalf("no /v1/info, domain given: %v %+v", err, cc)
	}

	// Nobody listening.
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	if _, err := (client.Config{Identity: id, Home: t.TempDir(), ServerURL: gone.URL}).Discover(ctx(t)); !errors.Is(err, handles.ErrUnreachable) {
		t.Fatalf("closed server: %v", err)
	}
}

func TestDiscoverRequired(t *testing.T) {
	if _, err := (client.Config{Home: t.TempDir()}).Discover(ctx(t)); !errors.Is(err, client.ErrNoIdentity) {
		t.Errorf("no identity: %v", err)
	}
	if _, err := (client.Config{Identity: stacktest.Identity("alice")}).Discover(ctx(t)); !errors.Is(err, client.ErrNoHome) {
		t.Errorf("no home: %v", err)
	}
	// Offline: no server, nothing asked, a resolver for full handles.
	cc, err := client.Config{Identity: stacktest.Identity("alice"), Home: t.TempDir()}.Discover(ctx(t))
	if err != nil || cc.Resolver == nil || cc.Domain != "" {
		t.Fatalf("offline: %v %+v", err, cc)
	}
}

// A linked device: Device and Person without the primary Identity. A
// Person that is not the Identity's key, or a device without its person,
// is refused before anything is asked.
func TestDiscoverDevices(t *testing.T) {
	alice, dev := stacktest.Identity("alice"), stacktest.Identity("alice-phone")
	base := client.Config{Home: t.TempDir(), Domain: "kez.test", SigServerURL: "https://sig.kez.test"}

	linked := base
	linked.Device, linked.Person = dev, alice.PublicKey()
	cc, err := linked.Discover(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if cc.DeviceKey() != dev.PublicKey() || cc.PersonKey() != alice.PublicKey() || cc.DeviceIdentity() != dev || cc.IsPrimaryDevice() {
		t.Fatalf("a linked device: device %s, person %s", cc.DeviceKey(), cc.PersonKey())
	}

	primary := base
	primary.Identity = alice
	cc, err = primary.Discover(ctx(t))
	if err != nil || cc.Person != alice.PublicKey() || cc.DeviceKey() != alice.PublicKey() || !cc.IsPrimaryDevice() {
		t.Fatalf("the primary device: %v, person %s, device %s", err, cc.Person, cc.DeviceKey())
	}

	wrong := primary
	wrong.Person = dev.PublicKey()
	if _, err := wrong.Discover(ctx(t)); !errors.Is(err, client.ErrDevicePerson) {
		t.Fatalf("a person that is not the identity's: %v", err)
	}
	orphan := base
	orphan.Device = dev
	if _, err := orphan.Discover(ctx(t)); !errors.Is(err, client.ErrNoIdentity) {
		t.Fatalf("a device without its person: %v", err)
	}
}
