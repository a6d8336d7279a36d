package session_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/session"
)

// prekeySeeds returns a valid record and its private prekey, and the
// same made for a record already expired, as fuzz seeds.
func prekeySeeds(f *testing.F) (records, privates [][]byte) {
	id := prekeyIdentity(f, 1)
	for i, created := range []time.Time{prekeyEpoch, prekeyEpoch.Add(-90 * 24 * time.Hour)} {
		k := newTestPrekey(f, id, uint32(i+1), created, 14*24*time.Hour)
		rec, err := k.Public.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		priv, err := k.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		records, privates = append(records, rec), append(privates, priv)
	}
	return records, privates
}

// FuzzParsePrekey checks that ParsePrekey accepts only what marshals back
// to the same bytes, and that Verify never panics on what it accepts.
func FuzzParsePrekey(f *testing.F) {
	records, privates := prekeySeeds(f)
	for _, r := range records {
		f.Add(r)
		f.Add(r[:len(r)-1])
		f.Add(append(bytes.Clone(r), 0))
	}
	f.Add(privates[0])
	f.Add([]byte("KEZP"))
	f.Add([]byte{})
	owner := prekeyIdentity(f, 1).PublicKey()
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := session.ParsePrekey(b)
		if err != nil {
			return
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("a parsed record does not marshal: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatal("marshalling a parsed record gives other bytes")
		}
		if p.Verify(owner, prekeyEpoch) == nil && !bytes.Equal(b, records[0]) {
			t.Fatal("a record other than the seed verifies")
		}
	})
}

// FuzzParsePrekeyPrivate checks that ParsePrekeyPrivate accepts only what
// marshals back to the same bytes, with keys that match the record.
func FuzzParsePrekeyPrivate(f *testing.F) {
	records, privates := prekeySeeds(f)
	for _, p := range privates {
		f.Add(p)
		f.Add(p[:len(p)-1])
	}
	f.Add(records[0])
	f.Add([]byte("KEZp\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := session.ParsePrekeyPrivate(b)
		if err != nil {
			return
		}
		out, err := k.MarshalBinary()
		if err != nil {
			t.Fatalf("a parsed private prekey does not marshal: %v", err)
		}
		if !bytes.Equal(out, b) {
			t.Fatal("marshalling a parsed private prekey gives other bytes")
		}
		if !bytes.Equal(k.KEMKey().PublicKey().Bytes(), k.Public.KEMPublic) ||
			!bytes.Equal(k.RatchetKey().PublicKey().Bytes(), k.Public.RatchetPublic[:]) {
			t.Fatal("the private keys do not match the record")
		}
	})
}
