package session_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha512"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// prekeyIdentity returns a fixed identity for i.
func prekeyIdentity(t testing.TB, i int) *kez.Identity {
	t.Helper()
	seed := sha512.Sum512(fmt.Appendf(nil, "session prekey test identity %d", i))
	id, err := kez.FromSeed(seed[:])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// prekeyRand is a deterministic random source (the only fake a test may
// use besides a clock).
func prekeyRand(seed byte) *rand.ChaCha8 {
	var s [32]byte
	s[0] = seed
	return rand.NewChaCha8(s)
}

// prekeyEpoch is the tests' fixed "now".
var prekeyEpoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newTestPrekey(t testing.TB, id *kez.Identity, prekeyID uint32, created time.Time, lifetime time.Duration) *session.PrekeyPrivate {
	t.Helper()
	k, err := session.NewPrekey(prekeyRand(byte(prekeyID)), id, prekeyID, created, lifetime)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestPrekeyRoundTrip(t *testing.T) {
	id := prekeyIdentity(t, 1)
	created := prekeyEpoch.Add(123456789 * time.Nanosecond) // rounded down to the millisecond
	k := newTestPrekey(t, id, 7, created, 14*24*time.Hour)
	p := &k.Public
	if p.Owner != id.PublicKey() || p.ID != 7 {
		t.Fatalf("owner %s id %d", p.Owner, p.ID)
	}
	if want := prekeyEpoch.Add(123 * time.Millisecond); !p.Created.Equal(want) || p.Created.Location() != time.UTC {
		t.Fatalf("created %v, want %v UTC", p.Created, want)
	}
	if want := p.Created.Add(14 * 24 * time.Hour); !p.Expires.Equal(want) {
		t.Fatalf("expires %v, want %v", p.Expires, want)
	}
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if session.PrekeyRecordSize != 1373 || len(b) != session.PrekeyRecordSize {
		t.Fatalf("record of %d bytes, PrekeyRecordSize %d, want 1373", len(b), session.PrekeyRecordSize)
	}
	q, err := session.ParsePrekey(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p, q) {
		t.Fatalf("parsed record differs:\n%+v\n%+v", p, q)
	}
	if b2, _ := q.MarshalBinary(); !bytes.Equal(b, b2) {
		t.Fatal("marshalling the parsed record gives other bytes")
	}
	if err := q.Verify(id.PublicKey(), prekeyEpoch); err != nil {
		t.Fatal(err)
	}

	// The same randomness makes the same prekey; other randomness another.
	if again := newTestPrekey(t, id, 7, created, 14*24*time.Hour); !reflect.DeepEqual(again.Public, k.Public) {
		t.Fatal("NewPrekey is not a function of its randomness")
	}
	other, err := session.NewPrekey(prekeyRand(99), id, 7, created, 14*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other.Public.KEMPublic, p.KEMPublic) || other.Public.RatchetPublic == p.RatchetPublic {
		t.Fatal("two random sources gave the same keys")
	}
}

func TestPrekeyPrivateRoundTrip(t *testing.T) {
	id := prekeyIdentity(t, 1)
	k := newTestPrekey(t, id, 3, prekeyEpoch, time.Hour)
	b, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := session.ParsePrekeyPrivate(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(k.Public, k2.Public) {
		t.Fatal("public half differs after a round trip")
	}
	if b2, _ := k2.MarshalBinary(); !bytes.Equal(b, b2) {
		t.Fatal("marshalling the parsed private prekey gives other bytes")
	}
	if !k.RatchetKey().Equal(k2.RatchetKey()) {
		t.Fatal("ratchet private key differs")
	}
	if !bytes.Equal(k2.RatchetKey().PublicKey().Bytes(), k.Public.RatchetPublic[:]) {
		t.Fatal("ratchet private key does not match the record")
	}

	// The parsed KEM key opens what is sealed to the record's KEM key.
	if id := k2.KEMKey().KEM().ID(); id != session.KEMHybrid {
		t.Fatalf("KEM %#x", id)
	}
	pk, err := hpke.MLKEM768X25519().NewPublicKey(k.Public.KEMPublic)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := hpke.Seal(pk, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte("info"), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := hpke.Open(k2.KEMKey(), hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte("info"), ct)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("open: %q, %v", pt, err)
	}
	// And the ratchet key agrees with a peer's X25519 key.
	peer, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	rpub, _ := ecdh.X25519().NewPublicKey(k.Public.RatchetPublic[:])
	s1, err1 := k2.RatchetKey().ECDH(peer.PublicKey())
	s2, err2 := peer.ECDH(rpub)
	if err1 != nil || err2 != nil || !bytes.Equal(s1, s2) {
		t.Fatal("ratchet key agreement fails")
	}

	// An expired prekey still loads: the ring keeps it for the grace period.
	old := newTestPrekey(t, id, 4, prekeyEpoch.Add(-90*24*time.Hour), time.Hour)
	ob, _ := old.MarshalBinary()
	if _, err := session.ParsePrekeyPrivate(ob); err != nil {
		t.Fatalf("an expired private prekey does not load: %v", err)
	}
}

func TestPrekeyVerifyWindow(t *testing.T) {
	id := prekeyIdentity(t, 1)
	k := newTestPrekey(t, id, 1, prekeyEpoch, 14*24*time.Hour)
	p := &k.Public
	ms := time.Millisecond
	for _, c := range []struct {
		name string
		now  time.Time
		want error
	}{
		{"at creation", p.Created, nil},
		{"clock 5 min behind", p.Created.Add(-session.PrekeyClockSkew), nil},
		{"clock more than 5 min behind", p.Created.Add(-session.PrekeyClockSkew - ms), session.ErrPrekeyExpired},
		{"last millisecond", p.Expires.Add(-ms), nil},
		{"at expiry", p.Expires, session.ErrPrekeyExpired},
		{"long after", p.Expires.Add(365 * 24 * time.Hour), session.ErrPrekeyExpired},
	} {
		err := p.Verify(id.PublicKey(), c.now)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// resign signs p again with id after a change, so that only the change
// is wrong.
func resign(t *testing.T, id *kez.Identity, p *session.Prekey) {
	t.Helper()
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := id.Sign("kez/v2 prekey", b[:len(b)-64])
	if err != nil {
		t.Fatal(err)
	}
	copy(p.Sig[:], sig)
}

func TestPrekeyVerifyFailures(t *testing.T) {
	alice, mallory := prekeyIdentity(t, 1), prekeyIdentity(t, 2)
	now := prekeyEpoch
	fresh := func() *session.Prekey {
		p := newTestPrekey(t, alice, 1, now, 24*time.Hour).Public
		return &p
	}
	for _, c := range []struct {
		name   string
		change func(p *session.Prekey)
		owner  kez.PublicKey
		want   error
	}{
		{"expected from another key", func(p *session.Prekey) {}, mallory.PublicKey(), session.ErrPrekeyOwner},
		{"owner swapped, signed by the owner", func(p *session.Prekey) {
			p.Owner = mallory.PublicKey()
		}, mallory.PublicKey(), session.ErrPrekeySignature},
		{"owner swapped, re-signed by the new owner", func(p *session.Prekey) {
			p.Owner = mallory.PublicKey()
			resign(t, mallory, p)
		}, alice.PublicKey(), session.ErrPrekeyOwner},
		{"signed by another key", func(p *session.Prekey) { resign(t, mallory, p) }, alice.PublicKey(), session.ErrPrekeySignature},
		{"zero signature", func(p *session.Prekey) { p.Sig = [64]byte{} }, alice.PublicKey(), session.ErrPrekeySignature},
		{"signature under another context", func(p *session.Prekey) {
			b, _ := p.MarshalBinary()
			sig, _ := alice.Sign("kez/v1 message", b[:len(b)-64])
			copy(p.Sig[:], sig)
		}, alice.PublicKey(), session.ErrPrekeySignature},
		{"expires before it is made", func(p *session.Prekey) {
			p.Expires = p.Created.Add(-time.Millisecond)
			resign(t, alice, p)
		}, alice.PublicKey(), session.ErrMalformedPrekey},
		{"expires as it is made", func(p *session.Prekey) {
			p.Expires = p.Created
			resign(t, alice, p)
		}, alice.PublicKey(), session.ErrMalformedPrekey},
		{"made in the future", func(p *session.Prekey) {
			p.Created = now.Add(time.Hour)
			p.Expires = now.Add(2 * time.Hour)
			resign(t, alice, p)
		}, alice.PublicKey(), session.ErrPrekeyExpired},
		{"expired", func(p *session.Prekey) {
			p.Created = now.Add(-2 * time.Hour)
			p.Expires = now.Add(-time.Hour)
			resign(t, alice, p)
		}, alice.PublicKey(), session.ErrPrekeyExpired},
		{"KEM key of the wrong size", func(p *session.Prekey) { p.KEMPublic = p.KEMPublic[:1215] }, alice.PublicKey(), session.ErrMalformedPrekey},
		{"KEM key not on the ML-KEM lattice, signed", func(p *session.Prekey) {
			p.KEMPublic = bytes.Repeat([]byte{0xff}, 1216) // coefficients ≥ q
			resign(t, alice, p)
		}, alice.PublicKey(), session.ErrMalformedPrekey},
	} {
		p := fresh()
		c.change(p)
		err := p.Verify(c.owner, now)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestPrekeyTamper flips one bit in each field of a marshalled record:
// the layout fields make it unparseable, every other field breaks the
// signature (or the owner check).
func TestPrekeyTamper(t *testing.T) {
	alice := prekeyIdentity(t, 1)
	k := newTestPrekey(t, alice, 0x01020304, prekeyEpoch, 24*time.Hour)
	rec, err := k.Public.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name      string
		off, size int
		want      error
	}{
		{"magic", 0, 4, session.ErrMalformedPrekey},
		{"version", 4, 1, session.ErrMalformedPrekey},
		{"kem_id", 5, 2, session.ErrMalformedPrekey},
		{"prekey_id", 7, 4, session.ErrPrekeySignature},
		{"created_ms", 11, 8, session.ErrPrekeySignature},
		{"expires_ms", 19, 8, session.ErrPrekeySignature},
		{"owner", 27, 32, session.ErrPrekeyOwner},
		{"kem_pk_len", 59, 2, session.ErrMalformedPrekey},
		{"kem_pk", 61, 1216, session.ErrPrekeySignature},
		{"ratchet_pk", 1277, 32, session.ErrPrekeySignature},
		{"sig", 1309, 64, session.ErrPrekeySignature},
	} {
		for _, at := range []int{f.off, f.off + f.size - 1} {
			for _, bit := range []byte{0x01, 0x80} {
				b := bytes.Clone(rec)
				b[at] ^= bit
				p, err := session.ParsePrekey(b)
				if err == nil {
					err = p.Verify(alice.PublicKey(), prekeyEpoch)
				}
				if !errors.Is(err, f.want) {
					t.Errorf("%s: byte %d ^ %#x: %v, want %v", f.name, at, bit, err, f.want)
				}
			}
		}
	}
	if f := 1309 + 64; f != len(rec) {
		t.Fatalf("the table covers %d bytes of %d", f, len(rec))
	}
}

func TestParsePrekeyLength(t *testing.T) {
	rec, err := newTestPrekey(t, prekeyIdentity(t, 1), 1, prekeyEpoch, time.Hour).Public.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for n := range len(rec) {
		if _, err := session.ParsePrekey(rec[:n]); !errors.Is(err, session.ErrMalformedPrekey) {
			t.Fatalf("%d of %d bytes: %v", n, len(rec), err)
		}
	}
	if _, err := session.ParsePrekey(append(bytes.Clone(rec), 0)); !errors.Is(err, session.ErrMalformedPrekey) {
		t.Fatalf("a trailing byte: %v", err)
	}
	var empty session.Prekey
	if _, err := empty.MarshalBinary(); !errors.Is(err, session.ErrMalformedPrekey) {
		t.Fatalf("marshalling a record without a KEM key: %v", err)
	}
}

func TestParsePrekeyPrivateFailures(t *testing.T) {
	alice, mallory := prekeyIdentity(t, 1), prekeyIdentity(t, 2)
	k := newTestPrekey(t, alice, 1, prekeyEpoch, time.Hour)
	good, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := newTestPrekey(t, alice, 2, prekeyEpoch, time.Hour).MarshalBinary()
	const seeds = 5 // offset of the KEM seed
	for _, c := range []struct {
		name   string
		change func(b []byte) []byte
		want   error
	}{
		{"empty", func(b []byte) []byte { return nil }, session.ErrMalformedPrekey},
		{"short", func(b []byte) []byte { return b[:len(b)-1] }, session.ErrMalformedPrekey},
		{"long", func(b []byte) []byte { return append(b, 0) }, session.ErrMalformedPrekey},
		{"magic", func(b []byte) []byte { b[3] = 'P'; return b }, session.ErrMalformedPrekey},
		{"version", func(b []byte) []byte { b[4] = 2; return b }, session.ErrMalformedPrekey},
		{"KEM seed", func(b []byte) []byte { b[seeds] ^= 1; return b }, session.ErrMalformedPrekey},
		{"ratchet seed (a bit X25519 does not clamp)", func(b []byte) []byte { b[seeds+33] ^= 1; return b }, session.ErrMalformedPrekey},
		{"another prekey's seeds", func(b []byte) []byte { copy(b[seeds:seeds+64], other[seeds:seeds+64]); return b }, session.ErrMalformedPrekey},
		{"record unparseable", func(b []byte) []byte { b[seeds+64] = 'X'; return b }, session.ErrMalformedPrekey},
		{"record signature", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }, session.ErrPrekeySignature},
		{"record re-signed by another key", func(b []byte) []byte {
			rec := b[seeds+64:]
			p, _ := session.ParsePrekey(rec)
			p.Owner = mallory.PublicKey()
			resign(t, alice, p) // signed by alice, claims mallory
			r, _ := p.MarshalBinary()
			copy(rec, r)
			return b
		}, session.ErrPrekeySignature},
	} {
		if _, err := session.ParsePrekeyPrivate(c.change(bytes.Clone(good))); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	var zero session.PrekeyPrivate
	if _, err := zero.MarshalBinary(); err == nil {
		t.Error("a PrekeyPrivate without keys marshals")
	}
}

func TestNewPrekeyRefuses(t *testing.T) {
	alice := prekeyIdentity(t, 1)
	if _, err := session.NewPrekey(prekeyRand(1), nil, 1, prekeyEpoch, time.Hour); err == nil {
		t.Error("no identity: no error")
	}
	for _, l := range []time.Duration{0, -time.Hour, time.Microsecond} {
		if _, err := session.NewPrekey(prekeyRand(1), alice, 1, prekeyEpoch, l); err == nil {
			t.Errorf("lifetime %v: no error", l)
		}
	}
	if _, err := session.NewPrekey(bytes.NewReader(make([]byte, 63)), alice, 1, prekeyEpoch, time.Hour); err == nil {
		t.Error("63 bytes of randomness: no error")
	}
	if k, err := session.NewPrekey(nil, alice, 1, prekeyEpoch, time.Hour); err != nil || k.Public.Verify(alice.PublicKey(), prekeyEpoch) != nil {
		t.Errorf("nil rand (crypto/rand): %v", err)
	}
}

func ExampleNewPrekey() {
	id, _, _ := kez.NewIdentity()
	created := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	k, err := session.NewPrekey(nil, id, 1, created, 14*24*time.Hour)
	if err != nil {
		panic(err)
	}
	record, _ := k.Public.MarshalBinary() // publish this (sigchain.Client.PublishPrekey)
	stored, _ := k.MarshalBinary()        // keep this on the device only

	// Whoever fetches the record verifies it for its owner's key.
	p, _ := session.ParsePrekey(record)
	fmt.Println(len(record), len(stored))
	fmt.Println(p.Verify(id.PublicKey(), created.Add(time.Hour)))
	fmt.Println(p.Verify(id.PublicKey(), created.Add(15*24*time.Hour)) != nil)
	// Output:
	// 1373 1442
	// <nil>
	// true
}
