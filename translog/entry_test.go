package translog_test

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
)

// testKey returns the key made from SHA-256(name) as its ed25519 seed.
func testKey(name string) kez.PublicKey {
	seed := sha256.Sum256([]byte(name))
	k, err := kez.PublicKeyFromEd25519(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	if err != nil {
		panic(err)
	}
	return k
}

var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// testID returns the link ID whose digest is SHA-256(name).
func testID(name string) string {
	d := sha256.Sum256([]byte(name))
	return "b" + b32.EncodeToString(append([]byte{0x01, 0x55, 0x12, 0x20}, d[:]...))
}

func TestEntryRoundTrip(t *testing.T) {
	for _, e := range []translog.Entry{
		{Key: testKey("a"), Seqno: 1, ID: testID("a1")},
		{Key: testKey("a"), Seqno: 1<<53 - 1, ID: testID("a2")},
		{Key: testKey("b")},
	} {
		b := e.Marshal()
		got, err := translog.ParseEntry(b)
		if err != nil || got != e {
			t.Fatalf("ParseEntry(%s) = %+v, %v", b, got, err)
		}
		if got.IsDeletion() != (e.Seqno == 0) {
			t.Errorf("IsDeletion of %s", b)
		}
		if len(b) > translog.MaxEntrySize {
			t.Errorf("%d bytes", len(b))
		}
	}
}

// TestParseEntryRefuses: every form but the canonical one is refused.
func TestParseEntryRefuses(t *testing.T) {
	key := testKey("a").String()
	id := testID("a1")
	good := `{"id":"` + id + `","key":"` + key + `","seqno":7}`
	if _, err := translog.ParseEntry([]byte(good)); err != nil {
		t.Fatal(err)
	}
	badKey := []byte(key)
	badKey[10] ^= 1 // a checksum mismatch
	upper := strings.ToUpper(id[:1]) + id[1:]
	// CIDv1 of another codec (dag-pb 0x70) and another hash (0x13).
	d := sha256.Sum256([]byte("x"))
	dagpb := "b" + b32.EncodeToString(append([]byte{0x01, 0x70, 0x12, 0x20}, d[:]...))
	sha512 := "b" + b32.EncodeToString(append([]byte{0x01, 0x55, 0x13, 0x20}, d[:]...))
	// The same ID with a non-zero trailing bit: two texts, one ID.
	trailing := id[:len(id)-1] + string(rune(id[len(id)-1]+1))
	for name, in := range map[string]string{
		"empty":             ``,
		"space":             `{"id":"` + id + `", "key":"` + key + `","seqno":7}`,
		"trailing newline":  good + "\n",
		"leading space":     " " + good,
		"reordered":         `{"key":"` + key + `","id":"` + id + `","seqno":7}`,
		"extra field":       `{"id":"` + id + `","key":"` + key + `","seqno":7,"x":1}`,
		"missing seqno":     `{"id":"` + id + `","key":"` + key + `"}`,
		"bad key checksum":  `{"id":"` + id + `","key":"` + string(badKey) + `","seqno":7}`,
		"seed key":          `{"id":"` + id + `","key":"S` + key[1:] + `","seqno":7}`,
		"short key":         `{"id":"` + id + `","key":"` + key[:55] + `","seqno":7}`,
		"upper-case id":     `{"id":"` + strings.ToUpper(id) + `","key":"` + key + `","seqno":7}`,
		"upper-case prefix": `{"id":"` + upper + `","key":"` + key + `","seqno":7}`,
		"CIDv0":             `{"id":"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG","key":"` + key + `","seqno":7}`,
		"dag-pb id":         `{"id":"` + dagpb + `","key":"` + key + `","seqno":7}`,
		"sha2-512 code":     `{"id":"` + sha512 + `","key":"` + key + `","seqno":7}`,
		"trailing bits":     `{"id":"` + trailing + `","key":"` + key + `","seqno":7}`,
		"escaped id":        `{"id":"\u0062` + id[1:] + `","key":"` + key + `","seqno":7}`,
		"leading zero":      `{"id":"` + id + `","key":"` + key + `","seqno":07}`,
		"plus":              `{"id":"` + id + `","key":"` + key + `","seqno":+7}`,
		"negative":          `{"id":"` + id + `","key":"` + key + `","seqno":-7}`,
		"fraction":          `{"id":"` + id + `","key":"` + key + `","seqno":7.0}`,
		"exponent":          `{"id":"` + id + `","key":"` + key + `","seqno":7e0}`,
		"too big":           `{"id":"` + id + `","key":"` + key + `","seqno":9007199254740992}`,
		"seqno 0 with id":   `{"id":"` + id + `","key":"` + key + `","seqno":0}`,
		"no id, seqno 1":    `{"id":"","key":"` + key + `","seqno":1}`,
		"id null":           `{"id":null,"key":"` + key + `","seqno":0}`,
		"string seqno":      `{"id":"` + id + `","key":"` + key + `","seqno":"7"}`,
		"long":              `{"id":"` + id + `","key":"` + key + `","seqno":7` + strings.Repeat(" ", 300) + `}`,
	} {
		if e, err := translog.ParseEntry([]byte(in)); !errors.Is(err, translog.ErrBadEntry) {
			t.Errorf("%s: ParseEntry(%q) = %+v, %v; want ErrBadEntry", name, in, e, err)
		}
	}
}

func FuzzParseEntry(f *testing.F) {
	key := testKey("a").String()
	id := testID("a1")
	f.Add([]byte(`{"id":"` + id + `","key":"` + key + `","seqno":7}`))
	f.Add([]byte(`{"id":"","key":"` + key + `","seqno":0}`))
	f.Add([]byte(`{"id":"` + id + `","key":"` + key + `","seqno":9007199254740991}`))
	f.Add([]byte(`{"id":"` + id + `","key":"` + key + `","seqno":07}`))
	f.Add([]byte(`{"key":"` + key + `","id":"` + id + `","seqno":7}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := translog.ParseEntry(b)
		if err != nil {
			if !errors.Is(err, translog.ErrBadEntry) {
				t.Fatalf("error %v is not ErrBadEntry", err)
			}
			return
		}
		// Accepted bytes are the one canonical form of what they parse to.
		if string(e.Marshal()) != string(b) {
			t.Fatalf("accepted %q, which marshals as %q", b, e.Marshal())
		}
		if e.IsDeletion() != (e.ID == "") {
			t.Fatalf("deletion %+v", e)
		}
	})
}
