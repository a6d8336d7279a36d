package handles

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParseTooLongInput(t *testing.T) {
	in := strings.Repeat("a", MaxInputLen+1)
	_, err := Parse(in, "kez.lat")
	if ReasonOf(err) != ReasonTooLong {
		t.Fatalf("reason %q, want too_long: %v", ReasonOf(err), err)
	}
	if len(err.Error()) > 200 {
		t.Errorf("the error repeats the whole input: %d bytes", len(err.Error()))
	}
}

func TestHandleErrorMessage(t *testing.T) {
	_, err := Parse("\u0430lice@kez.lat", "")
	var he *HandleError
	if !errors.As(err, &he) {
		t.Fatalf("%v is not a *HandleError", err)
	}
	msg := err.Error()
	for _, want := range []string{`\u0430lice@kez.lat`, "U+0430", "Cyrillic", `'a'`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

func TestHandleForms(t *testing.T) {
	h := Handle{Name: "alice", Domain: "kez.lat"}
	if h.String() != "alice@kez.lat" || h.Display() != "@alice@kez.lat" || h.Acct() != "acct:alice@kez.lat" {
		t.Fatal(h.String(), h.Display(), h.Acct())
	}
	if !(Handle{}).IsZero() || h.IsZero() {
		t.Fatal("IsZero")
	}
}

func TestParseDomain(t *testing.T) {
	for in, want := range map[string]string{"KEZ.lat": "kez.lat", "a.b.c.example": "a.b.c.example"} {
		if got, err := ParseDomain(in, false); err != nil || got != want {
			t.Errorf("ParseDomain(%q) = %q, %v", in, got, err)
		}
	}
	if got, err := ParseDomain("[0:0::1]:80", true); err != nil || got != "[::1]:80" {
		t.Errorf("IPv6 literal: %q, %v", got, err)
	}
	for _, in := range []string{"localhost", "kez.lat:80", "", "ke z.lat", "[::1]"} {
		if _, err := ParseDomain(in, false); err == nil {
			t.Errorf("ParseDomain(%q) accepted", in)
		}
	}
}

func TestIsReserved(t *testing.T) {
	for _, n := range []string{"admin", "ad.min", "a-d_min", "postmaster", "kez", "www"} {
		if !IsReserved(n) {
			t.Errorf("%q not reserved", n)
		}
	}
	for _, n := range []string{"alice", "admins", "kez1"} {
		if IsReserved(n) {
			t.Errorf("%q reserved", n)
		}
	}
}

// checkParsed asserts the invariants every accepted handle keeps.
func checkParsed(t *testing.T, in string, h Handle) {
	t.Helper()
	s := h.String()
	if !utf8.ValidString(s) || strings.ToLower(s) != s {
		t.Fatalf("Parse(%q) = %q: not lower-case UTF-8", in, s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] <= 0x20 {
			t.Fatalf("Parse(%q) = %q: byte %#x outside printable ASCII", in, s, s[i])
		}
	}
	if len(h.Name) < MinNameLen || len(h.Name) > MaxNameLen || strings.Contains(h.Name, "@") {
		t.Fatalf("Parse(%q) = %q: bad name", in, s)
	}
	h2, err := Rules{AllowLocal: true}.Parse(s)
	if err != nil || h2 != h {
		t.Fatalf("Parse(%q) = %q does not round-trip: %v, %v", in, s, h2, err)
	}
}

func FuzzParse(f *testing.F) {
	for _, v := range loadParseVectors(f) {
		f.Add(v.Input, v.DefaultDomain, v.AllowLocal)
	}
	f.Add("@bob@[::1]:1", "", true)
	f.Fuzz(func(t *testing.T, in, def string, allowLocal bool) {
		h, err := Rules{DefaultDomain: def, AllowLocal: allowLocal}.Parse(in)
		if err != nil {
			var he *HandleError
			if !errors.As(err, &he) || he.Reason == "" || he.Detail == "" {
				t.Fatalf("Parse(%q): untyped error %v", in, err)
			}
			return
		}
		checkParsed(t, in, h)
		if !allowLocal {
			if _, err := ParseDomain(h.Domain, false); err != nil {
				t.Fatalf("Parse(%q) accepted domain %q that ParseDomain refuses: %v", in, h.Domain, err)
			}
		}
	})
}

func FuzzWebFingerResource(f *testing.F) {
	for _, v := range loadResourceVectors(f) {
		f.Add(v.Resource, v.AllowLocal)
	}
	f.Add("https://kez.lat/alice", false)
	f.Add("mailto:alice@kez.lat", false)
	f.Add("http:", false)
	f.Fuzz(func(t *testing.T, res string, allowLocal bool) {
		h, err := ParseWebFingerResource(res, allowLocal)
		// The server answers 404 for a well-formed URI of another scheme:
		// never for an acct: resource, one it can parse least of all.
		if otherScheme(res) && (err == nil || strings.HasPrefix(strings.ToLower(res), "acct:")) {
			t.Fatalf("%q: taken for a URI of another scheme (parse error %v)", res, err)
		}
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("ParseWebFingerResource(%q): untyped error %v", res, err)
			}
			return
		}
		checkParsed(t, res, h)
		h2, err := ParseWebFingerResource(h.Acct(), allowLocal)
		if err != nil || h2 != h {
			t.Fatalf("%q: Acct %q does not round-trip: %v %v", res, h.Acct(), h2, err)
		}
	})
}
