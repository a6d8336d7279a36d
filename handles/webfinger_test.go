package handles

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
)

func TestWebFinger(t *testing.T) {
	s := newStack(t, "kez.lat")
	alice := s.register(t, "alice")
	wf := s.chat.URL + "/.well-known/webfinger?resource="

	var jrd JRD
	resp := get(t, wf+url.QueryEscape("acct:alice@kez.lat"), &jrd)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != JRDContentType || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Fatalf("status %d, headers %v", resp.StatusCode, resp.Header)
	}
	if jrd.Subject != "acct:alice@kez.lat" {
		t.Errorf("subject %q", jrd.Subject)
	}
	if len(jrd.Aliases) != 0 {
		t.Errorf("aliases %v without a PublicURL", jrd.Aliases)
	}
	kl, sl := jrd.Link(RelKey), jrd.Link(RelSigchain)
	if kl == nil || kl.Properties[PropKey] == nil || *kl.Properties[PropKey] != alice.PublicKey().String() ||
		kl.Properties[PropFingerprint] == nil || *kl.Properties[PropFingerprint] != alice.PublicKey().Fingerprint() {
		t.Errorf("key link %+v", kl)
	}
	if sl == nil || sl.Href != ChainURL(s.sig.URL, alice.PublicKey()) || sl.Type != "application/json" {
		t.Errorf("sigchain link %+v", sl)
	}
	// The JSON has exactly the RFC 7033 member names.
	var raw map[string]json.RawMessage
	get(t, wf+"acct:alice@kez.lat", &raw)
	for k := range raw {
		if k != "subject" && k != "aliases" && k != "links" {
			t.Errorf("unexpected member %q", k)
		}
	}

	// rel filters the links.
	var only JRD
	get(t, wf+"acct:alice@kez.lat&rel="+url.QueryEscape(RelSigchain), &only)
	if len(only.Links) != 1 || only.Links[0].Rel != RelSigchain {
		t.Errorf("rel filter: %+v", only.Links)
	}

	// The Client reads the same document.
	got, err := (&Client{BaseURL: s.chat.URL}).WebFinger(context.Background(), Handle{"alice", "kez.lat"})
	if err != nil || got.Subject != jrd.Subject || len(got.Links) != 2 {
		t.Fatalf("Client.WebFinger: %+v %v", got, err)
	}

	for _, tc := range []struct {
		query  string
		status int
	}{
		{"", 400},
		{"?resource=", 400},
		{"?resource=acct:alice@kez.lat&resource=acct:alice@kez.lat", 400},
		{"?resource=alice@kez.lat", 400},
		{"?resource=mailto:alice@kez.lat", 404}, // well-formed, another scheme
		{"?resource=" + url.QueryEscape("https://kez.lat/alice"), 404},
		{"?resource=" + url.QueryEscape("acct:\u0430lice@kez.lat"), 400},
		{"?resource=acct:alice%2540kez.lat", 400},
		{"?resource=acct:bob@kez.lat", 404},
		{"?resource=acct:alice@other.example", 404},
	} {
		var e errorBody
		resp := get(t, s.chat.URL+"/.well-known/webfinger"+tc.query, &e)
		if resp.StatusCode != tc.status || e.Error == "" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
			t.Errorf("%q: %d %+v (CORS %q), want %d", tc.query, resp.StatusCode, e, resp.Header.Get("Access-Control-Allow-Origin"), tc.status)
		}
	}
	if err := s.reg.SetSuspended(context.Background(), Handle{"alice", "kez.lat"}, true); err != nil {
		t.Fatal(err)
	}
	if resp := get(t, wf+"acct:alice@kez.lat", nil); resp.StatusCode != http.StatusGone {
		t.Errorf("suspended: %d", resp.StatusCode)
	}
}

// webFingerServer serves the registry of s again, configured with cfg's
// PublicURL and Limits.
func webFingerServer(t *testing.T, s *stack, publicURL string, limits Limits) *httptest.Server {
	t.Helper()
	srv, err := NewServer(ServerConfig{Domain: s.domain, Store: s.reg, SigServer: s.sigc, Logger: quietLog, PublicURL: publicURL, Limits: limits})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(srv)
	t.Cleanup(h.Close)
	return h
}

// do sends a request with the given method and headers and returns the
// answer with its body read.
func do(t *testing.T, method, url string, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// WebFinger aliases come from the configured PublicURL only: whoever sends
// a request chooses its Host header, and an alias built from it would put
// their URL in the server's answer (and in a cache's copy of it).
func TestWebFingerAliasesNeverFromHost(t *testing.T) {
	s := newStack(t, "kez.lat")
	s.register(t, "alice")
	query := "/.well-known/webfinger?resource=acct:alice@kez.lat"
	hostile := map[string]string{"Host": "evil.example", "X-Forwarded-Host": "evil.example", "Forwarded": "host=evil.example;proto=https"}

	resp, body := do(t, http.MethodGet, s.chat.URL+query, hostile)
	var jrd JRD
	if err := json.Unmarshal(body, &jrd); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if len(jrd.Aliases) != 0 || strings.Contains(string(body), "evil") {
		t.Errorf("without a PublicURL: %s", body)
	}

	configured := webFingerServer(t, s, "https://kez.lat/", NoLimits())
	resp, body = do(t, http.MethodGet, configured.URL+query, hostile)
	jrd = JRD{}
	if err := json.Unmarshal(body, &jrd); err != nil || resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if len(jrd.Aliases) != 1 || jrd.Aliases[0] != "https://kez.lat/v1/handles/alice" || strings.Contains(string(body), "evil") {
		t.Errorf("with a PublicURL: %s", body)
	}
}

// A browser's CORS preflight gets a fixed answer: any origin, the read
// methods, the Accept header; nothing of the request (its Origin, the
// headers it asks for) comes back, and no credentials are allowed. The
// preflight counts against the per-address read limit like a lookup, and
// a refusal still carries the CORS header, so a page can read it.
func TestWebFingerPreflight(t *testing.T) {
	s := newStack(t, "kez.lat")
	srv := webFingerServer(t, s, "", Limits{ReadsPerIP: ratelimit.Limit{N: 3, Per: time.Hour}, ClaimsPerIP: ratelimit.Unlimited, ClaimsPerKey: ratelimit.Unlimited})
	preflight := map[string]string{
		"Origin":                         "https://evil.example",
		"Access-Control-Request-Method":  "DELETE",
		"Access-Control-Request-Headers": "X-Evil, Authorization, Cookie",
	}
	for _, query := range []string{"?resource=acct:alice@kez.lat", "?resource=acct:nobody@other.example", ""} {
		resp, body := do(t, http.MethodOptions, srv.URL+"/.well-known/webfinger"+query, preflight)
		h := resp.Header
		if resp.StatusCode != http.StatusNoContent || len(body) != 0 || h.Get("Access-Control-Allow-Origin") != "*" ||
			h.Get("Access-Control-Allow-Methods") != "GET, HEAD, OPTIONS" || h.Get("Access-Control-Allow-Headers") != "Accept" ||
			h.Get("Access-Control-Max-Age") == "" || h.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("preflight %q: %d %v %q", query, resp.StatusCode, h, body)
		}
		for k, vs := range h {
			for _, v := range vs {
				if strings.Contains(v, "evil") || strings.Contains(v, "X-Evil") || strings.Contains(v, "DELETE") {
					t.Errorf("the answer reflects the request: %s: %s", k, v)
				}
			}
		}
	}
	for _, method := range []string{http.MethodOptions, http.MethodGet} {
		resp, _ := do(t, method, srv.URL+"/.well-known/webfinger?resource=acct:alice@kez.lat", preflight)
		if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Access-Control-Allow-Origin") != "*" ||
			resp.Header.Get("Retry-After") == "" || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("%s past the limit: %d %v", method, resp.StatusCode, resp.Header)
		}
	}
	// Other methods are not WebFinger.
	if resp, _ := do(t, http.MethodDelete, s.chat.URL+"/.well-known/webfinger", nil); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("DELETE: %d", resp.StatusCode)
	}
}

// An answer may be cached for a minute; no error is (a handle registered
// a moment after a 404 must be found, a suspension lifted seen).
func TestWebFingerCacheControl(t *testing.T) {
	s := newStack(t, "kez.lat")
	s.register(t, "alice")
	s.register(t, "sam")
	if err := s.reg.SetSuspended(context.Background(), Handle{"sam", "kez.lat"}, true); err != nil {
		t.Fatal(err)
	}
	wf := s.chat.URL + "/.well-known/webfinger"
	for query, want := range map[string]string{
		"?resource=acct:alice@kez.lat":                    "max-age=60",
		"?resource=acct:alice@kez.lat&rel=" + RelKey:      "max-age=60",
		"?resource=acct:bob@kez.lat":                      "no-store",
		"?resource=acct:sam@kez.lat":                      "no-store",
		"?resource=acct:alice":                            "no-store",
		"?resource=" + url.QueryEscape("https://kez.lat"): "no-store",
		"": "no-store",
	} {
		for _, method := range []string{http.MethodGet, http.MethodHead} {
			resp, _ := do(t, method, wf+query, nil)
			if got := resp.Header.Get("Cache-Control"); got != want {
				t.Errorf("%s %q: %d, Cache-Control %q, want %q", method, query, resp.StatusCode, got, want)
			}
		}
	}
}

// A resource that is a well-formed URI of another scheme is one the
// server has no information about: 404 (RFC 7033 §4.2). Text that is not
// a URI at all, or a malformed acct: resource, is the client's mistake:
// 400.
func TestWebFingerOtherSchemes(t *testing.T) {
	s := newStack(t, "kez.lat")
	s.register(t, "alice")
	for resource, want := range map[string]int{
		"https://kez.lat/alice":        404,
		"https://kez.lat/v1/handles/x": 404,
		"mailto:alice@kez.lat":         404,
		"xmpp:alice@kez.lat":           404,
		"HTTPS://KEZ.LAT":              404,
		"alice@kez.lat":                400, // no scheme
		"alice":                        400,
		"http:":                        400, // a scheme and nothing else
		"://kez.lat":                   400,
		"acct:alice":                   400,
		"acct:@alice@kez.lat":          400,
		"ACCT:bob@kez.lat":             404, // well-formed acct:, unknown
		"acct:alice@kez.lat":           200,
	} {
		var e errorBody
		resp := get(t, s.chat.URL+"/.well-known/webfinger?resource="+url.QueryEscape(resource), &e)
		if resp.StatusCode != want {
			t.Errorf("%q: %d %+v, want %d", resource, resp.StatusCode, e, want)
		}
	}
}
