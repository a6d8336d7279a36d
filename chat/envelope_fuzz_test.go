package chat

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/vectorid"
	"github.com/kez-lat/kez-chat/kez"
)

// addVectorSeeds adds every envelope of the vector file to the corpus.
func addVectorSeeds(f *testing.F) {
	for _, v := range loadVectors(f).Vectors {
		b, err := hex.DecodeString(v.Envelope)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzOpen opens arbitrary bytes as bob. It must never panic, and anything
// that opens must be a message to bob from the sender its header names,
// with every field inside the format's limits.
func FuzzOpen(f *testing.F) {
	addVectorSeeds(f)
	alice, bob := vectorid.Identity(f, "alice"), vectorid.Identity(f, "bob")
	f.Add(mustSeal(f, alice, recipientOf(bob, 1), Message{SentAt: t0, Kind: KindText, Body: []byte("seed")}))
	o := mustOpener(f, bob, 0, 1)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := o.Open(data, kez.PublicKey{})
		if err != nil {
			if m != nil {
				t.Fatal("a message returned with an error")
			}
			if !isOneOf(err, sentinels) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		h, _, err := parseHeader(data)
		if err != nil {
			t.Fatalf("opened, but the header does not parse: %v", err)
		}
		if m.To != bob.PublicKey() || m.From != h.from || m.ID.IsZero() || len(m.Body) > MaxBodySize || m.Kind.check() != nil {
			t.Fatalf("opened an invalid message: %+v", m)
		}
	})
}

var sentinels = []error{ErrMalformed, ErrUnsupportedVersion, ErrUnsupportedSuite, ErrUnknownGeneration, ErrNotForMe,
	ErrWrongRecipient, ErrDecrypt, ErrBadSignature, ErrSenderMismatch, ErrTooLarge, ErrExpired, ErrClockSkew}

// FuzzParseHeader checks the header parser: no panic, and a header that
// parses re-encodes to exactly the bytes it came from.
func FuzzParseHeader(f *testing.F) {
	addVectorSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		h, n, err := parseHeader(data)
		if err != nil {
			if !isOneOf(err, []error{ErrMalformed, ErrUnsupportedVersion, ErrUnsupportedSuite}) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if n > len(data) || !bytes.Equal(h.marshal(), data[:n]) {
			t.Fatalf("header does not re-encode to its %d bytes", n)
		}
	})
}

// FuzzParseInner checks the inner-message parser: no panic, and an inner
// message that parses re-encodes to exactly its bytes (the encoding is
// canonical, so the signature covers one meaning only).
func FuzzParseInner(f *testing.F) {
	alice, bob := vectorid.Identity(f, "alice"), vectorid.Identity(f, "bob")
	for _, m := range []Message{
		{Kind: KindText, Body: []byte("hello")},
		{Kind: KindReceipt, Ref: MessageID{1}, Body: nil},
		{Kind: "file.offer", Body: []byte{0, 1, 2}},
	} {
		f.Add(decryptInner(f, bob, mustSeal(f, alice, recipientOf(bob, 0), m)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, signed, sig, err := parseInner(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		re := appendInner(nil, m)
		if !bytes.Equal(re, signed) || !bytes.Equal(append(re, sig...), data) {
			t.Fatalf("inner message does not re-encode to its bytes")
		}
	})
}
