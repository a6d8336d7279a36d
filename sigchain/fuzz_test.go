package sigchain

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vectorSeeds returns the link bytes of every test vector, one slice per
// vector.
func vectorSeeds(f *testing.F) [][][]byte {
	files, _ := filepath.Glob(filepath.Join(vectorDir, "*.json"))
	var out [][][]byte
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var v vector
		if err := json.Unmarshal(data, &v); err != nil {
			f.Fatal(err)
		}
		var links [][]byte
		for _, raw := range v.Links {
			if len(raw) > 0 && raw[0] != '"' {
				links = append(links, raw)
			}
		}
		out = append(out, links)
	}
	return out
}

func FuzzParseLink(f *testing.F) {
	for _, links := range vectorSeeds(f) {
		for _, l := range links {
			f.Add(l)
		}
	}
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLink(b)
		if err != nil {
			return
		}
		if !bytes.Equal(l.Bytes(), b) {
			t.Fatal("Bytes differ from the parsed input")
		}
		body := l.Body()
		if err := checkCanonicalObject(body); err != nil {
			t.Fatalf("accepted body is not canonical: %v", err)
		}
		if c, err := Canonicalize(body); err != nil || !bytes.Equal(c, body) {
			t.Fatalf("Canonicalize disagrees with the parser: %s → %s, %v", body, c, err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil || !bytes.Equal(compact.Bytes(), b) {
			t.Fatalf("encoding/json changes an accepted link: %v", err)
		}
		again, err := ParseLink(l.SignedPayload()[:len(l.SignedPayload())-1])
		if err == nil {
			t.Fatalf("a payload without sig parsed as %v", again)
		}
		if _, err := ParseID(l.ID().String()); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzVerify(f *testing.F) {
	for _, links := range vectorSeeds(f) {
		f.Add(bytes.Join(links, []byte("\n")), uint8(1))
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		var links []*Link
		for _, b := range bytes.Split(data, []byte("\n")) {
			l, err := ParseLink(b)
			if err != nil {
				return
			}
			links = append(links, l)
		}
		st, err := Verify(links, fixedClock(vectorNow))
		if err != nil {
			return
		}
		// Verifying in two steps must agree with verifying at once.
		k := 1 + int(split)%len(links)
		first, err := Verify(links[:k], fixedClock(vectorNow))
		if err != nil {
			t.Fatalf("a prefix of a valid chain is invalid: %v", err)
		}
		ext, err := first.Extend(links[k:], fixedClock(vectorNow))
		if err != nil || ext.Pin() != st.Pin() || ext.Handle() != st.Handle() || len(ext.Claims()) != len(st.Claims()) {
			t.Fatalf("Extend disagrees with Verify: %v", err)
		}
		if err := CheckAgainst(first.Pin(), links); err != nil {
			t.Fatalf("a chain fails against its own prefix: %v", err)
		}
	})
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{}`, `{"b":1,"a":[true,false,null,"x\u0000<"]}`, ` {"é" : {"z":-1}} `, `{"a":"\ud800"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkCanonicalObject(b) == nil {
			c, err := Canonicalize(b)
			if err != nil || !bytes.Equal(c, b) {
				t.Fatalf("canonical input %q changed: %q, %v", b, c, err)
			}
		}
		c, err := Canonicalize(b)
		if err != nil {
			return
		}
		if err := checkCanonicalObject(c); err != nil {
			t.Fatalf("Canonicalize output %q is not canonical: %v", c, err)
		}
		if c2, err := Canonicalize(c); err != nil || !bytes.Equal(c2, c) {
			t.Fatalf("Canonicalize is not idempotent: %q → %q, %v", c, c2, err)
		}
	})
}

// linkCodeSeeds returns the link code vectors (testdata/link_codes.json).
func linkCodeSeeds(f *testing.F) *linkCodeVectors {
	data, err := os.ReadFile(linkCodeVectorFile)
	if err != nil {
		f.Fatal(err)
	}
	var v linkCodeVectors
	if err := json.Unmarshal(data, &v); err != nil {
		f.Fatal(err)
	}
	return &v
}

func FuzzParseLinkRequest(f *testing.F) {
	for _, c := range linkCodeSeeds(f).Codes {
		if c.Request != "" {
			f.Add([]byte(c.Request))
		}
	}
	// The requests inside the device vectors' add_device bodies.
	for _, links := range vectorSeeds(f) {
		for _, b := range links {
			if l, err := ParseLink(b); err == nil && l.Type() == TypeAddDevice {
				if i := bytes.Index(l.Body(), []byte(`"request":`)); i >= 0 {
					f.Add(l.Body()[i+len(`"request":`) : len(l.Body())-1])
				}
			}
		}
	}
	f.Add([]byte(`{"created":0,"device":"","expires":1,"name":"a","nonce":"","sig":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseLinkRequest(b)
		if err != nil {
			if !errors.Is(err, ErrBadLinkRequest) {
				t.Fatalf("error %v does not match ErrBadLinkRequest", err)
			}
			return
		}
		if !bytes.Equal(r.Bytes(), b) {
			t.Fatal("Bytes differ from the parsed input")
		}
		if err := CheckDeviceName(r.Name()); err != nil {
			t.Fatalf("accepted name %q: %v", r.Name(), err)
		}
		if d := r.Expires().Sub(r.Created()); d <= 0 || d > LinkRequestTTL {
			t.Fatalf("accepted validity %v", d)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, b); err != nil || !bytes.Equal(compact.Bytes(), b) {
			t.Fatalf("encoding/json changes an accepted request: %v", err)
		}
		// An accepted request fits an add_device body and its code reads back.
		if n := len(AddDeviceBody(r)); n > MaxBodySize {
			t.Fatalf("add_device body of %d bytes", n)
		}
		c, err := ParseLinkCode(r.Code().String())
		if err != nil || c != r.Code() {
			t.Fatalf("code round trip: %v", err)
		}
	})
}

func FuzzParseLinkCode(f *testing.F) {
	v := linkCodeSeeds(f)
	for _, c := range v.Codes {
		f.Add(c.Code)
	}
	for _, e := range v.Equivalent {
		f.Add(e.Text)
	}
	for _, b := range v.Bad {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseLinkCode(s)
		if err != nil {
			if !errors.Is(err, ErrBadLinkCode) {
				t.Fatalf("error %v does not match ErrBadLinkCode", err)
			}
			return
		}
		text := c.String()
		if again, err := ParseLinkCode(text); err != nil || again != c {
			t.Fatalf("%q → %s does not read back: %v", s, text, err)
		}
		// Text that is already canonical is what String writes.
		canonical := len(s) == 21 && s[4] == '-' && s[9] == '-' && s[14] == '-' && s[19] == '-' &&
			strings.Count(s, "-") == 4 && strings.ToUpper(s) == s && !strings.ContainsAny(s, "OIL \t")
		if canonical && s != text {
			t.Fatalf("canonical %q written as %q", s, text)
		}
	})
}
