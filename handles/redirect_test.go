package handles

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// The servers a user configured (the home server, local domains, the
// sig-servers they name) are reached with the Resolver's HTTPClient, but a
// redirect they answer with is followed only to https, and one to another
// host only by the remote-origin rules (https, a public address, checked
// at dial time): a configured server cannot send the client to plain http
// or into the user's network.
func TestResolverRedirectsFromConfiguredServers(t *testing.T) {
	s := newStack(t, "kez.lat")
	alice := s.register(t, "alice")
	// An https copy of the home server on this machine, and a plain one
	// that must never be reached.
	mirror, mirrorConns := countingServer(t, s.server, true)
	plain, plainConns := countingServer(t, s.server, false)
	var mu sync.Mutex
	target := "" // where the home server redirects to; "" serves
	home := redirecting(t, s.server, func() string { mu.Lock(); defer mu.Unlock(); return target })
	var loop *httptest.Server // https on the same host, redirecting to itself
	loop, _ = countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, loop.URL+"/again"+r.URL.RequestURI(), http.StatusFound)
	}), true)
	redirectTo := func(u string) {
		mu.Lock()
		target = u
		mu.Unlock()
	}
	trusting := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: mirror.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs, ServerName: "127.0.0.1"},
	}}
	r := &Resolver{DefaultDomain: "kez.lat", HomeServer: home.URL, HTTPClient: trusting, TTL: -1}
	ctx := context.Background()

	// Positive controls: no redirect; a redirect to https on the same host
	// (another port of 127.0.0.1) is followed.
	if res, err := r.Resolve(ctx, "alice"); err != nil || res.Key != alice.PublicKey() {
		t.Fatalf("without a redirect: %+v %v", res, err)
	}
	redirectTo("https://127.0.0.1:" + portOf(t, mirror))
	if res, err := r.Resolve(ctx, "alice"); err != nil || res.Key != alice.PublicKey() {
		t.Fatalf("a redirect to https on the same host: %+v %v", res, err)
	}
	if mirrorConns.n.Load() == 0 {
		t.Fatal("the https copy was not reached")
	}
	reached := mirrorConns.n.Load()

	for _, tc := range []struct{ to, why, says string }{
		{"http://127.0.0.1:" + portOf(t, plain), "plain http, same host", "not https"},
		{"http://localhost:" + portOf(t, plain), "plain http, another host", "not https"},
		{"https://localhost:" + portOf(t, mirror), "another host that is loopback (checked when dialed)", "not a public address"},
		{"https://10.0.0.1", "another host in a private network", "not a public address"},
		{"https://169.254.169.254", "a cloud metadata service", "not a public address"},
		{"https://u:p@127.0.0.1:" + portOf(t, mirror), "credentials", "user name or password"},
		{"https://127.0.0.1:" + portOf(t, loop), "too many redirects", "redirects"},
	} {
		redirectTo(tc.to)
		_, err := r.Resolve(ctx, "alice")
		if !errors.Is(err, ErrForbiddenOrigin) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s (%s): %v, want ErrForbiddenOrigin saying %q", tc.why, tc.to, err, tc.says)
		}
	}
	if plainConns.n.Load() != 0 || mirrorConns.n.Load() != reached {
		t.Errorf("a refused redirect was followed: plain %d connections, mirror %d more", plainConns.n.Load(), mirrorConns.n.Load()-reached)
	}
	// The Resolver's HTTPClient itself is left as it was.
	if trusting.CheckRedirect != nil {
		t.Error("the Resolver changed the HTTPClient it was given")
	}
}

// redirecting serves h, or, while target() is not empty, redirects every
// request there (path and query kept).
func redirecting(t *testing.T, h http.Handler, target func() string) *httptest.Server {
	t.Helper()
	srv, _ := countingServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if to := target(); to != "" {
			http.Redirect(w, r, to+r.URL.RequestURI(), http.StatusFound)
			return
		}
		h.ServeHTTP(w, r)
	}), false)
	return srv
}
