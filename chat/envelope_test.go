package chat

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
	"github.com/kez-lat/kez-chat/kez"
)

var t0 = time.Date(2026, 5, 4, 12, 30, 15, 123_000_000, time.UTC)

func TestSealOpenRoundTrip(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	ref := NewMessageID()
	cases := []Message{
		{Kind: KindText, Body: []byte("hello bob")},
		{Kind: KindText, Body: nil},
		{Kind: KindText, Body: []byte("re: ça va? 👋"), Ref: ref},
		{Kind: KindReceipt, Ref: ref, Body: []byte("read")},
		{Kind: "file.offer", Body: []byte{0, 1, 2, 0xff}},
		{Kind: KindText, Body: bytes.Repeat([]byte("x"), MaxBodySize)},
		{ID: NewMessageID(), From: alice.PublicKey(), To: bob.PublicKey(), SentAt: t0, Kind: KindText, Body: []byte("all set")},
	}
	o := mustOpener(t, bob)
	for i, m := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			before := time.Now().Truncate(time.Millisecond)
			env := mustSeal(t, alice, recipientOf(bob, 0), m)
			if len(env) > MaxEnvelopeSize {
				t.Fatalf("envelope is %d bytes", len(env))
			}
			got, err := o.Open(env, alice.PublicKey())
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if got.From != alice.PublicKey() || got.To != bob.PublicKey() {
				t.Errorf("From/To = %s/%s", got.From, got.To)
			}
			if got.Kind != m.Kind || got.Ref != m.Ref || !bytes.Equal(got.Body, m.Body) {
				t.Errorf("got kind %q ref %s body %q", got.Kind, got.Ref, got.Body)
			}
			if got.ID.IsZero() || (!m.ID.IsZero() && got.ID != m.ID) {
				t.Errorf("ID = %s, want %s (or random if zero)", got.ID, m.ID)
			}
			if m.SentAt.IsZero() {
				if got.SentAt.Before(before) || got.SentAt.After(time.Now()) {
					t.Errorf("SentAt = %v, want about now", got.SentAt)
				}
			} else if !got.SentAt.Equal(m.SentAt) {
				t.Errorf("SentAt = %v, want %v", got.SentAt, m.SentAt)
			}
			// The one-shot form agrees, with or without an expected sender.
			if _, err := OpenEnvelope(bob, env, kez.PublicKey{}, nil); err != nil {
				t.Errorf("Open without sender: %v", err)
			}
		})
	}
}

func TestSealTwiceDiffers(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	m := Message{ID: NewMessageID(), SentAt: t0, Kind: KindText, Body: []byte("same")}
	a := mustSeal(t, alice, recipientOf(bob, 0), m)
	b := mustSeal(t, alice, recipientOf(bob, 0), m)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one message are identical; enc must be fresh each time")
	}
}

func TestSealRejectsBadInput(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	to := recipientOf(bob, 0)
	p256, _ := ecdh.P256().GenerateKey(rand.Reader)
	ok := Message{Kind: KindText, Body: []byte("hi")}
	cases := []struct {
		name   string
		sender kez.Signer
		to     Recipient
		m      Message
		want   error // nil: any error
	}{
		{"nil sender", nil, to, ok, nil},
		{"zero recipient key", alice, Recipient{EncryptionKey: to.EncryptionKey}, ok, nil},
		{"no encryption key", alice, Recipient{Key: to.Key}, ok, nil},
		{"P-256 encryption key", alice, Recipient{Key: to.Key, EncryptionKey: p256.PublicKey()}, ok, nil},
		{"From is someone else", alice, to, Message{From: bob.PublicKey(), Kind: KindText}, nil},
		{"To is someone else", alice, to, Message{To: alice.PublicKey(), Kind: KindText}, nil},
		{"no kind", alice, to, Message{Body: []byte("hi")}, ErrMalformed},
		{"upper-case kind", alice, to, Message{Kind: "Text"}, ErrMalformed},
		{"kind starts with digit", alice, to, Message{Kind: "1x"}, ErrMalformed},
		{"kind too long", alice, to, Message{Kind: Kind(strings.Repeat("k", 33))}, ErrMalformed},
		{"text not UTF-8", alice, to, Message{Kind: KindText, Body: []byte{0xff, 0xfe}}, ErrMalformed},
		{"receipt without ref", alice, to, Message{Kind: KindReceipt}, ErrMalformed},
		{"body too large", alice, to, Message{Kind: KindText, Body: make([]byte, MaxBodySize+1)}, ErrTooLarge},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			env, err := Seal(c.sender, c.to, c.m)
			if err == nil {
				t.Fatalf("Seal succeeded (%d bytes)", len(env))
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
		})
	}
}

// TestOpenTamperedEveryByte flips each byte of an envelope in turn. Every
// copy must fail, with the error the region of the byte calls for.
func TestOpenTamperedEveryByte(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	env := mustSeal(t, alice, recipientOf(bob, 0), Message{SentAt: t0, Kind: KindText, Body: []byte("tamper with me")})
	o := mustOpener(t, bob, 0, 1)
	for i := range env {
		var want []error
		switch {
		case i < 4:
			want = []error{ErrMalformed}
		case i == 4:
			want = []error{ErrUnsupportedVersion}
		case i < 11:
			want = []error{ErrUnsupportedSuite}
		case i < 15: // generation
			want = []error{ErrUnknownGeneration, ErrDecrypt}
		case i < 47: // sender key
			want = []error{ErrSenderMismatch}
		case i < 79: // recipient key
			want = []error{ErrNotForMe}
		case i < 81: // enc length
			want = []error{ErrMalformed}
		default: // enc, ciphertext, tag
			want = []error{ErrDecrypt}
		}
		_, err := o.Open(flip(env, i), alice.PublicKey())
		if !isOneOf(err, want) {
			t.Errorf("byte %d flipped: err = %v, want one of %v", i, err, want)
		}
	}
	// Without an expected sender, a changed sender key in the header must
	// still fail: the HPKE info binds it.
	for i := 15; i < 47; i++ {
		if _, err := o.Open(flip(env, i), kez.PublicKey{}); !errors.Is(err, ErrDecrypt) {
			t.Errorf("sender byte %d flipped, no expected sender: err = %v, want ErrDecrypt", i, err)
		}
	}
}

func isOneOf(err error, want []error) bool {
	for _, w := range want {
		if errors.Is(err, w) {
			return true
		}
	}
	return false
}

func TestOpenTruncatedEveryLength(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	env := mustSeal(t, alice, recipientOf(bob, 0), Message{SentAt: t0, Kind: KindText, Body: []byte("cut me short")})
	o := mustOpener(t, bob)
	for n := 0; n < len(env); n++ {
		m, err := o.Open(env[:n], alice.PublicKey())
		if m != nil || !isOneOf(err, []error{ErrMalformed, ErrDecrypt}) {
			t.Fatalf("truncated to %d bytes: m=%v err=%v", n, m, err)
		}
	}
	// Bytes appended after the tag are part of the ciphertext: it fails.
	if _, err := o.Open(append(env[:len(env):len(env)], 0), alice.PublicKey()); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("one byte appended: err = %v, want ErrDecrypt", err)
	}
}

func TestOpenNotForMe(t *testing.T) {
	alice, bob, carol := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob"), vectorid.Identity(t, "carol")
	env := mustSeal(t, alice, recipientOf(bob, 0), Message{Kind: KindText, Body: []byte("for bob")})
	if _, err := OpenEnvelope(carol, env, alice.PublicKey(), nil); !errors.Is(err, ErrNotForMe) {
		t.Fatalf("carol opening bob's envelope: err = %v, want ErrNotForMe", err)
	}
	// Sealed to carol's encryption key but with bob named as recipient: the
	// header is bob's, but the key is not, so HPKE fails.
	wrongKey := Recipient{Key: bob.PublicKey(), EncryptionKey: carol.EncryptionKey(0).PublicKey()}
	env = mustSeal(t, alice, wrongKey, Message{Kind: KindText})
	if _, err := OpenEnvelope(bob, env, alice.PublicKey(), nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("sealed to the wrong encryption key: err = %v, want ErrDecrypt", err)
	}
}

func TestOpenSenderMismatch(t *testing.T) {
	alice, bob, carol := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob"), vectorid.Identity(t, "carol")
	env := mustSeal(t, alice, recipientOf(bob, 0), Message{Kind: KindText, Body: []byte("from alice")})
	if _, err := OpenEnvelope(bob, env, carol.PublicKey(), nil); !errors.Is(err, ErrSenderMismatch) {
		t.Fatalf("expected carol, envelope from alice: err = %v, want ErrSenderMismatch", err)
	}
	// Carol claims in the header to be alice but can only sign as herself.
	forged := rawEnvelope{from: alice.PublicKey(), to: bob.PublicKey(), encKey: bob.EncryptionKey(0).PublicKey(), signer: carol,
		msg: Message{ID: NewMessageID(), From: alice.PublicKey(), To: bob.PublicKey(), SentAt: t0, Kind: KindText, Body: []byte("I am alice")}}
	if _, err := OpenEnvelope(bob, forged.seal(t), alice.PublicKey(), nil); !errors.Is(err, ErrBadSignature) || !errors.Is(err, kez.ErrBadSignature) {
		t.Fatalf("carol signing as alice: err = %v, want ErrBadSignature", err)
	}
	// Header from carol (as the broker enforces), inner claims alice.
	forged.from = carol.PublicKey()
	if _, err := OpenEnvelope(bob, forged.seal(t), carol.PublicKey(), nil); !errors.Is(err, ErrSenderMismatch) {
		t.Fatalf("inner sender differs from header: err = %v, want ErrSenderMismatch", err)
	}
}

// TestRewrap: a recipient who decrypted a signed message cannot pass it
// off to someone else, nor lift it into a fresh envelope.
func TestRewrap(t *testing.T) {
	alice, bob, carol := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob"), vectorid.Identity(t, "carol")
	toCarol := mustSeal(t, alice, recipientOf(carol, 0), Message{Kind: KindText, Body: []byte("for carol only")})
	inner := decryptInner(t, carol, toCarol)

	// Carol re-wraps alice's signed message to bob, header naming alice.
	rewrap := rawEnvelope{from: alice.PublicKey(), to: bob.PublicKey(), encKey: bob.EncryptionKey(0).PublicKey(), inner: inner}
	if _, err := OpenEnvelope(bob, rewrap.seal(t), alice.PublicKey(), nil); !errors.Is(err, ErrWrongRecipient) {
		t.Fatalf("re-wrapped to bob: err = %v, want ErrWrongRecipient", err)
	}
	// Carol seals it back to herself in a new envelope: the signature
	// covers the old enc, so it fails.
	lifted := rawEnvelope{from: alice.PublicKey(), to: carol.PublicKey(), encKey: carol.EncryptionKey(0).PublicKey(), inner: inner}
	if _, err := OpenEnvelope(carol, lifted.seal(t), alice.PublicKey(), nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("lifted into a new envelope: err = %v, want ErrBadSignature", err)
	}
	// The same, to another generation of carol's key.
	lifted.gen, lifted.encKey = 1, carol.EncryptionKey(1).PublicKey()
	if _, err := mustOpener(t, carol, 0, 1).Open(lifted.seal(t), alice.PublicKey()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("lifted into generation 1: err = %v, want ErrBadSignature", err)
	}
}

func TestOpenBadSignature(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	for _, off := range []int{1, 32, 64} { // bytes from the end of the signature
		r := rawEnvelope{from: alice.PublicKey(), to: bob.PublicKey(), encKey: bob.EncryptionKey(0).PublicKey(), signer: alice,
			msg:    Message{ID: NewMessageID(), From: alice.PublicKey(), To: bob.PublicKey(), SentAt: t0, Kind: KindText, Body: []byte("x")},
			mutate: func(b []byte) []byte { b[len(b)-off] ^= 1; return b }}
		if _, err := OpenEnvelope(bob, r.seal(t), alice.PublicKey(), nil); !errors.Is(err, ErrBadSignature) {
			t.Errorf("signature byte -%d flipped: err = %v, want ErrBadSignature", off, err)
		}
	}
}

func TestGenerations(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	env := mustSeal(t, alice, recipientOf(bob, 1), Message{Kind: KindText, Body: []byte("to gen 1")})
	if _, err := OpenEnvelope(bob, env, alice.PublicKey(), nil); !errors.Is(err, ErrUnknownGeneration) {
		t.Fatalf("default opener, generation 1: err = %v, want ErrUnknownGeneration", err)
	}
	if _, err := OpenEnvelope(bob, env, alice.PublicKey(), &OpenOptions{Generations: []uint32{1, 0, 1}}); err != nil {
		t.Fatalf("generations [1 0 1]: %v", err)
	}
	if _, err := OpenEnvelope(bob, env, alice.PublicKey(), &OpenOptions{Generations: []uint32{2}}); !errors.Is(err, ErrUnknownGeneration) {
		t.Fatalf("generations [2]: err = %v, want ErrUnknownGeneration", err)
	}
	// Generation 1 in the header, sealed to generation 0's key.
	mixed := Recipient{Key: bob.PublicKey(), EncryptionKey: bob.EncryptionKey(0).PublicKey(), Generation: 1}
	env = mustSeal(t, alice, mixed, Message{Kind: KindText})
	if _, err := OpenEnvelope(bob, env, alice.PublicKey(), &OpenOptions{Generations: []uint32{0, 1}}); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("header generation does not match the key: err = %v, want ErrDecrypt", err)
	}
}

func TestFreshness(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	env := mustSeal(t, alice, recipientOf(bob, 0), Message{SentAt: t0, Kind: KindText})
	at := func(now time.Time) *OpenOptions {
		return &OpenOptions{MaxAge: time.Hour, MaxSkew: 5 * time.Minute, Now: func() time.Time { return now }}
	}
	cases := []struct {
		now  time.Time
		want error
	}{
		{t0, nil},
		{t0.Add(time.Hour), nil},
		{t0.Add(-5 * time.Minute), nil},
		{t0.Add(time.Hour + time.Millisecond), ErrExpired},
		{t0.Add(-5*time.Minute - time.Millisecond), ErrClockSkew},
	}
	for _, c := range cases {
		_, err := OpenEnvelope(bob, env, alice.PublicKey(), at(c.now))
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("now = sent %+v: err = %v, want %v", c.now.Sub(t0), err, c.want)
		}
	}
	// No limits: a message from 2001 still opens.
	old := mustSeal(t, alice, recipientOf(bob, 0), Message{SentAt: time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC), Kind: KindText})
	if _, err := OpenEnvelope(bob, old, alice.PublicKey(), nil); err != nil {
		t.Fatalf("old message without MaxAge: %v", err)
	}
}

func TestOpenTooLarge(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	env := mustSeal(t, alice, recipientOf(bob, 0), Message{Kind: KindText, Body: []byte("x")})
	big := append(env, make([]byte, MaxEnvelopeSize+1-len(env))...)
	if _, err := OpenEnvelope(bob, big, alice.PublicKey(), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%d-byte envelope: err = %v, want ErrTooLarge", len(big), err)
	}
	// A signed body over the limit inside an envelope that is not.
	r := rawEnvelope{from: alice.PublicKey(), to: bob.PublicKey(), encKey: bob.EncryptionKey(0).PublicKey(), signer: alice,
		msg: Message{ID: NewMessageID(), From: alice.PublicKey(), To: bob.PublicKey(), SentAt: t0, Kind: KindText, Body: make([]byte, MaxBodySize+1)}}
	env = r.seal(t)
	if len(env) > MaxEnvelopeSize {
		t.Fatalf("test envelope is %d bytes", len(env))
	}
	if _, err := OpenEnvelope(bob, env, alice.PublicKey(), nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("body of %d bytes: err = %v, want ErrTooLarge", MaxBodySize+1, err)
	}
}

func TestOpenMalformedInner(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	base := Message{ID: NewMessageID(), From: alice.PublicKey(), To: bob.PublicKey(), SentAt: t0, Kind: KindText, Body: []byte("ok")}
	with := func(f func(*Message)) Message { m := base; f(&m); return m }
	cases := map[string]rawEnvelope{
		"zero ID":             {msg: with(func(m *Message) { m.ID = MessageID{} })},
		"empty kind":          {msg: with(func(m *Message) { m.Kind = "" })},
		"bad kind":            {msg: with(func(m *Message) { m.Kind = "TEXT" })},
		"receipt without ref": {msg: with(func(m *Message) { m.Kind = KindReceipt })},
		"text not UTF-8":      {msg: with(func(m *Message) { m.Body = []byte{0xc3} })},
		"body length too long": {msg: base, mutate: func(b []byte) []byte {
			b[len(b)-sigLen-len(base.Body)-1]++ // low byte of the body length
			return b
		}},
		"bad ref flag": {msg: base, mutate: func(b []byte) []byte {
			b[idLen+2*keyLen+8+1+len(base.Kind)] = 2
			return b
		}},
		"too short": {inner: make([]byte, minInnerLen-1)},
	}
	for name, r := range cases {
		t.Run(name, func(t *testing.T) {
			r.from, r.to, r.encKey, r.signer = alice.PublicKey(), bob.PublicKey(), bob.EncryptionKey(0).PublicKey(), alice
			if _, err := OpenEnvelope(bob, r.seal(t), alice.PublicKey(), nil); !errors.Is(err, ErrMalformed) {
				t.Fatalf("err = %v, want ErrMalformed", err)
			}
		})
	}
}

func TestOpenGarbage(t *testing.T) {
	bob := vectorid.Identity(t, "bob")
	o := mustOpener(t, bob, 0, 1)
	prefix := append([]byte(envelopeMagic), envelopeVersion, 0, 0x20, 0, 1, 0, 3)
	buf := make([]byte, 512)
	var decrypts int
	rng := mrand.NewChaCha8([32]byte{'k', 'e', 'z'}) // fixed seed: the same garbage every run
	for i := 0; i < 2000; i++ {
		n := i % len(buf)
		rng.Read(buf[:n])
		switch i % 3 {
		case 1: // a valid start, random from there
			copy(buf, prefix)
		case 2: // a header for bob, generation 0, random enc and ciphertext
			copy(buf, prefix)
			copy(buf[11:15], []byte{0, 0, 0, 0})
			copy(buf[47:79], bob.PublicKey().Ed25519())
			copy(buf[79:81], []byte{0, 32})
		}
		m, err := o.Open(buf[:n], kez.PublicKey{})
		if err == nil {
			t.Fatalf("random %d bytes opened: %+v", n, m)
		}
		if errors.Is(err, ErrDecrypt) {
			decrypts++
		}
	}
	if decrypts < 250 {
		t.Fatalf("only %d of the garbage inputs reached decryption", decrypts)
	}
}

func TestNewOpenerNil(t *testing.T) {
	if _, err := NewOpener(nil, nil); err == nil {
		t.Fatal("NewOpener(nil) succeeded")
	}
}

func TestOpenerConcurrent(t *testing.T) {
	alice, bob, carol := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob"), vectorid.Identity(t, "carol")
	o := mustOpener(t, bob, 0, 1)
	envs := [][]byte{
		mustSeal(t, alice, recipientOf(bob, 0), Message{Kind: KindText, Body: []byte("a")}),
		mustSeal(t, carol, recipientOf(bob, 1), Message{Kind: KindText, Body: []byte("c")}),
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for i := 0; i < 10; i++ {
				if _, err := o.Open(envs[(g+i)%2], kez.PublicKey{}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestMessageIDText(t *testing.T) {
	id := NewMessageID()
	b, _ := id.MarshalText()
	var back MessageID
	if err := back.UnmarshalText(b); err != nil || back != id {
		t.Fatalf("round trip %s: %v %s", b, err, back)
	}
	for _, bad := range []string{"", "00", strings.Repeat("g", 32), strings.Repeat("0", 33)} {
		if _, err := ParseMessageID(bad); err == nil {
			t.Errorf("ParseMessageID(%q) succeeded", bad)
		}
	}
}

// TestLargestEnvelope pins the size the spec gives for the largest
// version-1 envelope, and that it fits the stream's message limit.
func TestLargestEnvelope(t *testing.T) {
	alice, bob := vectorid.Identity(t, "alice"), vectorid.Identity(t, "bob")
	m := Message{Kind: Kind(strings.Repeat("k", maxKind)), Ref: NewMessageID(), Body: make([]byte, MaxBodySize)}
	env := mustSeal(t, alice, recipientOf(bob, 0), m)
	if len(env) != 49487 || len(env) > MaxEnvelopeSize {
		t.Fatalf("largest envelope is %d bytes, the spec says 49487", len(env))
	}
	if _, err := OpenEnvelope(bob, env, alice.PublicKey(), nil); err != nil {
		t.Fatal(err)
	}
}
