package sigchain

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
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
