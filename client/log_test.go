package client_test

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/internal/testenv/logtest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/sqlitepins"
)

// TestDiscoverLog: Discover makes a log monitor whose pins live in
// Home/log.db (making Home), gives it to the resolver it makes, and
// Close closes it; a monitor the caller gave is kept and not closed.
func TestDiscoverLog(t *testing.T) {
	s := logtest.Start(t, logtest.Options{})
	home := filepath.Join(t.TempDir(), "new", "home")
	cc, err := client.Config{Identity: stacktest.Identity("alice"), Home: home, Domain: "kez.test", SigServerURL: s.URL}.Discover(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if cc.Log == nil || cc.Resolver.Log != cc.Log {
		t.Fatalf("Log %v, the resolver's %v", cc.Log, cc.Resolver.Log)
	}
	if fi, err := os.Stat(home); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("Home: %v %v", fi, err)
	}
	if _, err := cc.Log.Latest(ctx(t), s.URL); err != nil {
		t.Fatal(err)
	}
	if err := cc.Log.Witness(ctx(t), s.URL, []byte("x")); err != nil {
		t.Fatalf("a checkpoint of a log not pinned yet: %v", err)
	}
	if err := cc.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cc.Close(); err != nil {
		t.Fatalf("a second Close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(home, sqlitepins.FileName)); err != nil {
		t.Fatal(err)
	}

	mine := &translog.Monitor{}
	cc2, err := client.Config{Identity: stacktest.Identity("alice"), Home: home, Domain: "kez.test", Log: mine}.Discover(ctx(t))
	if err != nil || cc2.Log != mine || cc2.Resolver.Log != mine {
		t.Fatalf("a given monitor was replaced: %v", err)
	}
	if err := cc2.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := mine.Latest(ctx(t), s.URL); err != nil {
		t.Fatalf("the given monitor was closed: %v", err)
	}
}

// TestDiscoverLogHome: a Home that cannot be made is an error, and
// nothing is left open.
func TestDiscoverLogHome(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := client.Config{Identity: stacktest.Identity("alice"), Home: filepath.Join(file, "home"), Domain: "kez.test"}.Discover(ctx(t))
	if err == nil {
		t.Fatal("Discover made a Home under a file")
	}
}

// TestLogHTTPClient: the monitor asks the user's servers and servers
// that are not public https with the configured HTTP client (its
// transport sees the requests), and follows no redirect.
func TestLogHTTPClient(t *testing.T) {
	s := logtest.Start(t, logtest.Options{})
	var seen int
	hc := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
		seen++
		return http.DefaultTransport.RoundTrip(r)
	})}
	redirect := serve(t, http.RedirectHandler(s.URL+"/v1/info", http.StatusFound))
	cc, err := client.Config{Identity: stacktest.Identity("alice"), Home: t.TempDir(), Domain: "kez.test", SigServerURL: s.URL, HTTPClient: hc}.Discover(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	key := stacktest.Identity("alice").PublicKey()
	e := translog.Entry{Key: key, Seqno: 1, ID: "bafkreibjn3nrvcfg6m35kuxbjlqsntwhwvq3ti453ncq747j7w2xhdrcb4"}
	// A proof without a pinned log makes the monitor ask /v1/info.
	err = cc.Log.CheckHead(ctx(t), s.URL, e, &translog.HeadProof{Checkpoint: "x"})
	if seen == 0 {
		t.Fatalf("the configured client was not used (%v)", err)
	}
	// A server that redirects /v1/info elsewhere is not followed (the
	// check fails, and the log it points at is not pinned for it).
	before := seen
	if err := cc.Log.CheckHead(ctx(t), redirect.URL, e, nil); err == nil {
		t.Fatal("a redirecting server's head was accepted")
	}
	if seen != before+1 {
		t.Fatalf("%d requests for a redirect, want 1", seen-before)
	}
	if li, err := cc.Log.Latest(ctx(t), redirect.URL); err != nil || li != nil {
		t.Fatalf("a redirect pinned %q, %v", li, err)
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
