package handles_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
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
		if err != nil || *got != want {
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

func FuzzParseInfo(f *testing.F) {
	for _, s := range []string{
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
