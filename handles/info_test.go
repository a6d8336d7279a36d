package handles_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/handles"
)

func TestParseInfo(t *testing.T) {
	good := map[string]handles.Info{
		`{"domain":"kez.lat","sig_server":"https://sig.kez.lat"}`:          {Domain: "kez.lat", SigServer: "https://sig.kez.lat"},
		`{"domain":"KEZ.lat","sig_server":"http://127.0.0.1:8081/","x":1}`: {Domain: "kez.lat", SigServer: "http://127.0.0.1:8081"},
		`{"domain":"127.0.0.1:8080"}`:                                      {Domain: "127.0.0.1:8080"},
		" {\"domain\":\"a.example\"}\n":                                    {Domain: "a.example"},
	}
	for in, want := range good {
		got, err := handles.ParseInfo([]byte(in))
		if err != nil || !reflect.DeepEqual(*got, want) {
			t.Errorf("ParseInfo(%s) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	bad := []string{
		``, `null`, `[]`, `{`, `{"domain":""}`, `{}`, `{"domain":"kez.lat"} {}`, `{"domain":"kez.lat"}x`,
		`{"domain":"kеz.lat"}`, // Cyrillic е
		`{"domain":"a b"}`,
		`{"domain":"kez.lat","sig_server":"ftp://sig"}`,
		`{"domain":"kez.lat","sig_server":"https://user:pw@sig"}`,
		`{"domain":"kez.lat","sig_server":"https://"}`,
		`{"domain":"kez.lat","sig_server":"https://sig/?q=1"}`,
		`{"domain":"kez.lat","sig_server":"sig.kez.lat"}`,
		`{"domain":"kez.lat","pad":"` + strings.Repeat("x", handles.MaxInfoSize) + `"}`,
	}
	for _, in := range bad {
		if got, err := handles.ParseInfo([]byte(in)); !errors.Is(err, handles.ErrBadInfo) {
			t.Errorf("ParseInfo(%.60q) = %+v, %v; want ErrBadInfo", in, got, err)
		}
	}
}

// Two real relay ids (ed25519 keys), as go-libp2p prints them.
const (
	relayA = "/ip4/192.0.2.1/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"
	relayB = "/dns4/relay.kez.lat/udp/4002/quic-v1/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"
)

func TestParseInfoRelays(t *testing.T) {
	in, err := handles.ParseInfo([]byte(`{"domain":"kez.lat","relays":["` + relayA + `","` + relayB + `"]}`))
	if err != nil || !reflect.DeepEqual(in.Relays, []string{relayA, relayB}) {
		t.Fatalf("two relays: %+v %v", in, err)
	}
	// The canonical form comes back: /ipfs/ is the old name of /p2p/.
	in, err = handles.ParseInfo([]byte(`{"domain":"kez.lat","relays":["` + strings.Replace(relayB, "/p2p/", "/ipfs/", 1) + `"]}`))
	if err != nil || !reflect.DeepEqual(in.Relays, []string{relayB}) {
		t.Fatalf("an /ipfs/ relay: %+v %v", in, err)
	}
	if in, err := handles.ParseInfo([]byte(`{"domain":"kez.lat","relays":[]}`)); err != nil || in.Relays != nil {
		t.Fatalf("no relays: %+v %v", in, err)
	}
	many := make([]string, handles.MaxRelays+1)
	for i := range many {
		many[i] = `"/ip4/192.0.2.` + string(rune('1'+i)) + `/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"`
	}
	long := "/dns4/" + strings.Repeat("a", handles.MaxRelayLen) + "/tcp/1/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"
	for name, relays := range map[string]string{
		"too many":         strings.Join(many, ","),
		"too long":         `"` + long + `"`,
		"empty":            `""`,
		"not a multiaddr":  `"relay.kez.lat:4002"`,
		"unknown protocol": `"/ip4/192.0.2.1/tcp/4002/kez/1/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"`,
		"no /p2p":          `"/ip4/192.0.2.1/tcp/4002"`,
		"only /p2p":        `"/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"`,
		"/p2p not last":    `"/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8/ip4/192.0.2.1/tcp/4002"`,
		"a circuit":        `"` + relayA + `/p2p-circuit/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"`,
		"two peer ids":     `"` + relayA + `/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"`,
		"bad peer id":      `"/ip4/192.0.2.1/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh9x"`,
		"control character": `"/dns4/relay
kez.lat/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"`,
		"escape sequence": `"/dns4/relay[2J.kez.lat/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"`,
		"non-ASCII":       `"/dns4/rеlay.kez.lat/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8"`,
		"twice":           `"` + relayA + `","` + relayA + `"`,
		"not a string":    `1`,
	} {
		if in, err := handles.ParseInfo([]byte(`{"domain":"kez.lat","relays":[` + relays + `]}`)); !errors.Is(err, handles.ErrBadInfo) {
			t.Errorf("%s: ParseInfo = %+v, %v; want ErrBadInfo", name, in, err)
		}
	}
	if _, err := handles.ParseInfo([]byte(`{"domain":"kez.lat","relays":"` + relayA + `"}`)); !errors.Is(err, handles.ErrBadInfo) {
		t.Errorf("relays as a string: %v", err)
	}
	if _, err := handles.ParseRelay("/ip4/192.0.2.1/tcp/4002"); !errors.Is(err, handles.ErrBadRelay) {
		t.Errorf("ParseRelay without /p2p: %v", err)
	}
}

func FuzzParseInfo(f *testing.F) {
	for _, s := range []string{
		`{"domain":"kez.lat","relays":["` + relayA + `","` + relayB + `"]}`,
		`{"domain":"kez.lat","relays":["/ip4/192.0.2.1/tcp/4002"]}`,
		`{"domain":"kez.lat","relays":["` + relayA + `/p2p-circuit"]}`,
		`{"domain":"kez.lat","relays":["/ip6/::1/udp/1/quic-v1/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC"]}`,
		`{"domain":"kez.lat","relays":[]}`, `{"domain":"kez.lat","relays":null}`,
		`{"domain":"kez.lat","sig_server":"https://sig.kez.lat"}`,
		`{"domain":"127.0.0.1:8080","sig_server":"http://127.0.0.1:8081"}`,
		`{"domain":"[::1]:80"}`, `{"domain":"xn--e1a.lat"}`, `{}`, `{"domain":1}`, `"x"`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		in, err := handles.ParseInfo(b)
		if err != nil {
			if !errors.Is(err, handles.ErrBadInfo) {
				t.Fatalf("error without ErrBadInfo: %v", err)
			}
			return
		}
		// What is accepted is normalised: parsing its domain again is a no-op.
		d, err := handles.ParseDomain(in.Domain, true)
		if err != nil || d != in.Domain {
			t.Fatalf("accepted domain %q does not re-parse: %q %v", in.Domain, d, err)
		}
		if in.SigServer != "" && !strings.HasPrefix(in.SigServer, "http://") && !strings.HasPrefix(in.SigServer, "https://") {
			t.Fatalf("accepted sig_server %q", in.SigServer)
		}
		if len(in.Relays) > handles.MaxRelays {
			t.Fatalf("accepted %d relays", len(in.Relays))
		}
		for _, r := range in.Relays {
			if c, err := handles.ParseRelay(r); err != nil || c != r || len(r) > handles.MaxRelayLen {
				t.Fatalf("accepted relay %q does not re-parse: %q %v", r, c, err)
			}
		}
	})
}

func TestClientInfoErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		status int
		body   string
		want   error
	}{
		"404":     {404, `{"error":"nope"}`, handles.ErrNotFound},
		"503":     {503, `{"error":"later"}`, handles.ErrUnreachable},
		"400":     {400, `{"error":"?"}`, handles.ErrBadInfo},
		"garbage": {200, `<html>`, handles.ErrBadInfo},
		"429":     {429, `{"error":"slow down"}`, handles.ErrRateLimited},
		"huge":    {200, `{"domain":"kez.lat","pad":"` + strings.Repeat("x", 1<<20) + `"}`, handles.ErrBadInfo},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != handles.InfoPath {
				t.Errorf("asked for %s", r.URL.Path)
			}
			w.WriteHeader(tc.status)
			w.Write([]byte(tc.body))
		}))
		_, err := (&handles.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}).Info(context.Background())
		srv.Close()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	// Nobody listening.
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	if _, err := (&handles.Client{BaseURL: url}).Info(context.Background()); !errors.Is(err, handles.ErrUnreachable) {
		t.Errorf("closed server: %v", err)
	}
}

func FuzzParseRelay(f *testing.F) {
	for _, s := range []string{
		relayA, relayB, strings.Replace(relayB, "/p2p/", "/ipfs/", 1),
		"/ip4/192.0.2.1/tcp/4002", "/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8",
		relayA + "/p2p-circuit", "/dns4/a\x00b/tcp/1/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8",
		"/ip6/::1/udp/1/quic-v1/webtransport/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC", "", "/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := handles.ParseRelay(s)
		if err != nil {
			if !errors.Is(err, handles.ErrBadRelay) {
				t.Fatalf("error without ErrBadRelay: %v", err)
			}
			return
		}
		// Canonical: it parses to itself, within the bounds, ends in the
		// peer id and names nothing after it.
		again, err := handles.ParseRelay(c)
		if err != nil || again != c || len(c) > handles.MaxRelayLen || !strings.Contains(c, "/p2p/") || strings.Contains(c, "/p2p-circuit") {
			t.Fatalf("ParseRelay(%q) = %q, which gives %q, %v", s, c, again, err)
		}
	})
}
