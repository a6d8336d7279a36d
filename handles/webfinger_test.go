package handles

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
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
	if len(jrd.Aliases) != 1 || jrd.Aliases[0] != s.chat.URL+"/v1/handles/alice" {
		t.Errorf("aliases %v", jrd.Aliases)
	}
	// The alias is the lookup URL and answers.
	if resp := get(t, jrd.Aliases[0], nil); resp.StatusCode != 200 {
		t.Errorf("alias: %d", resp.StatusCode)
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
		{"?resource=mailto:alice@kez.lat", 400},
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
