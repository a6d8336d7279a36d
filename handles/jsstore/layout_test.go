package jsstore

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
)

type layoutVectors struct {
	DomainTokens []struct{ Domain, Token string } `json:"domain_tokens"`
	Claims       []struct {
		Name, Domain, Key string
		EncKeyHex         string            `json:"enc_key_hex"`
		Gen               uint32            `json:"gen"`
		TimeMs            int64             `json:"time_ms"`
		Values            map[string]string `json:"values"`
	} `json:"claims"`
	FailEntries []struct{ Why, Value string } `json:"fail_entries"`
	FailIndexes []struct{ Why, Value string } `json:"fail_indexes"`
}

func loadLayout(t testing.TB) layoutVectors {
	t.Helper()
	b, err := os.ReadFile("testdata/layout.json")
	if err != nil {
		t.Fatal(err)
	}
	var v layoutVectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLayout checks the bucket layout the package comment specifies
// against testdata/layout.json: a claim writes exactly these keys and
// bytes, and readers refuse the fail_* values.
func TestLayout(t *testing.T) {
	v := loadLayout(t)
	for _, d := range v.DomainTokens {
		if got := domainToken(d.Domain); got != d.Token {
			t.Errorf("domainToken(%q) = %q, want %q", d.Domain, got, d.Token)
		}
	}

	ctx := context.Background()
	s, kv := newTestStore(t)
	for _, c := range v.Claims {
		key, err := kez.ParsePublicKey(c.Key)
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := hex.DecodeString(c.EncKeyHex)
		rec := handles.Record{
			Handle: handles.Handle{Name: c.Name, Domain: c.Domain}, Key: key,
			EncryptionKey: enc, Generation: c.Gen, UpdatedAt: time.UnixMilli(c.TimeMs),
		}
		if _, err := s.Claim(ctx, rec); err != nil {
			t.Fatal(err)
		}
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for k := range keys.Keys() {
			n++
			e, err := kv.Get(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			want, ok := c.Values[k]
			if !ok || string(e.Value()) != want {
				t.Errorf("bucket key %s holds\n%s\nwant\n%s", k, e.Value(), want)
			}
		}
		if n != len(c.Values) {
			t.Errorf("the claim wrote %d keys, want %d", n, len(c.Values))
		}
		for _, f := range v.FailEntries {
			if _, err := decodeEntry([]byte(f.Value)); err == nil {
				t.Errorf("an entry with %s was accepted", f.Why)
			}
		}
		for _, f := range v.FailIndexes {
			if _, err := decodeIndex([]byte(f.Value)); err == nil {
				t.Errorf("an index with %s was accepted", f.Why)
			}
		}
	}
}

// FuzzDecode feeds arbitrary bytes to the value decoders: they return an
// error or a value that encodes back to a value they accept.
func FuzzDecode(f *testing.F) {
	v := loadLayout(f)
	for _, c := range v.Claims {
		for _, val := range c.Values {
			f.Add([]byte(val))
		}
	}
	for _, x := range v.FailEntries {
		f.Add([]byte(x.Value))
	}
	for _, x := range v.FailIndexes {
		f.Add([]byte(x.Value))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if e, err := decodeEntry(b); err == nil {
			e2, err := decodeEntry(e.encode())
			if err != nil || e2.handle() != e.handle() || e2.key != e.key {
				t.Fatalf("re-encoding %q: %v", b, err)
			}
		}
		if ix, err := decodeIndex(b); err == nil {
			if ix2, err := decodeIndex(encodeIndex(ix.handle())); err != nil || ix2.handle() != ix.handle() {
				t.Fatalf("re-encoding %q: %v", b, err)
			}
		}
	})
}

// FuzzDomainToken: every domain becomes a valid bucket-key part, and two
// domains never share one.
func FuzzDomainToken(f *testing.F) {
	for _, d := range loadLayout(f).DomainTokens {
		f.Add(d.Domain, "kez.lat")
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		ta, tb := domainToken(a), domainToken(b)
		if a != b && ta == tb {
			t.Fatalf("%q and %q share the token %q", a, b, ta)
		}
		key := "name." + ta + ".x"
		for i := 0; i < len(key); i++ {
			c := key[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				t.Fatalf("token %q of %q has the byte %q", ta, a, c)
			}
			if c == '.' && (i == len(key)-1 || key[i+1] == '.') {
				t.Fatalf("token %q of %q makes an empty key part", ta, a)
			}
		}
	})
}
