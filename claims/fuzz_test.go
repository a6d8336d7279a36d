package claims

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// seedVectors returns the vectors file, for seeds.
func seedVectors(f *testing.F) vectors {
	b, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		f.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		f.Fatal(err)
	}
	return v
}

// FuzzParseStatement: a parsed statement writes back to the exact text,
// and nothing else is accepted.
func FuzzParseStatement(f *testing.F) {
	v := seedVectors(f)
	for _, s := range []string{v.Statement.Text, v.Nostr.Statement, v.Statement.Text + "\n", strings.Replace(v.Statement.Text, " 2 ", " 02 ", 1),
		"kez-claim=v1", "kez-claim=v1    ", ""} {
		f.Add(s, ServiceDNS, "example.com")
	}
	f.Add(v.Nostr.Statement, ServiceNostr, v.Nostr.Npub)
	f.Add(v.Statement.Text, ServiceHTTPS, "example.com:8443")
	f.Add(v.Statement.Text, ServiceHTTPS, "[::1]:1")
	f.Fuzz(func(t *testing.T, text, service, identity string) {
		st, err := ParseStatement(text, service, identity)
		if err != nil {
			if !errors.Is(err, ErrBadStatement) && !errors.Is(err, ErrBadIdentity) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if st.Text() != text || st.Service != service || st.Identity != identity {
			t.Fatalf("%q parsed, writes back %q", text, st.Text())
		}
		if len(text) > MaxStatementLen {
			t.Fatalf("%d bytes accepted", len(text))
		}
		_ = st.Verify() // must not panic
	})
}

// FuzzParseNostrEvent: a parsed event writes back to the exact proof, and
// checking it never panics.
func FuzzParseNostrEvent(f *testing.F) {
	v := seedVectors(f)
	ev := v.Nostr.Event
	for _, s := range []string{ev, strings.Replace(ev, `"kind":1`, `"kind":1.0`, 1), strings.Replace(ev, `{"content"`, `{ "content"`, 1),
		strings.Replace(ev, `"tags":[`, `"tags":[[],`, 1), strings.Replace(ev, `}`, `,"x":1}`, 1), `{}`, `[]`, `null`,
		strings.Replace(ev, `"content":`, `"content":"a","content":`, 1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, proof string) {
		e, err := ParseNostrEvent(proof)
		if err != nil {
			if !errors.Is(err, ErrBadStatement) {
				t.Fatalf("untyped error %v", err)
			}
			return
		}
		if string(marshalNostrEvent(e)) != proof {
			t.Fatalf("%q parsed, writes back %q", proof, marshalNostrEvent(e))
		}
		if st, err := ParseStatement(e.Content, ServiceNostr, v.Nostr.Npub); err == nil {
			_ = CheckNostrEvent(e, v.Nostr.Npub, st) // must not panic
		}
	})
}
