package chat

import (
	"crypto/ecdh"
	"crypto/hpke"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
)

// recipientOf is what a sender reads from id's verified sigchain.
func recipientOf(id *kez.Identity, gen uint32) Recipient {
	return Recipient{Key: id.PublicKey(), EncryptionKey: id.EncryptionKey(gen).PublicKey(), Generation: gen}
}

func mustSeal(tb testing.TB, from *kez.Identity, to Recipient, m Message) []byte {
	tb.Helper()
	env, err := Seal(from, to, m)
	if err != nil {
		tb.Fatalf("Seal: %v", err)
	}
	return env
}

func mustOpener(tb testing.TB, id *kez.Identity, gens ...uint32) *Opener {
	tb.Helper()
	o, err := NewOpener(id, &OpenOptions{Generations: gens})
	if err != nil {
		tb.Fatal(err)
	}
	return o
}

// rawEnvelope builds envelopes that Seal refuses to make, for the negative
// tests and the fail_* vectors. It uses the same encoders as Seal, with
// every check left out.
type rawEnvelope struct {
	gen      uint32
	from, to kez.PublicKey       // header keys
	encKey   *ecdh.PublicKey     // the key HPKE seals to
	signer   kez.Signer          // signs the inner message
	msg      Message             // encoded as given (no defaults, no checks)
	inner    []byte              // if set, the complete inner plaintext, used as is
	mutate   func([]byte) []byte // applied to the inner plaintext after signing
}

func (r rawEnvelope) seal(tb testing.TB) []byte {
	tb.Helper()
	h := &header{suite: suiteX25519, generation: r.gen, from: r.from, to: r.to}
	pk, err := hpke.NewDHKEMPublicKey(r.encKey)
	if err != nil {
		tb.Fatal(err)
	}
	enc, s, err := hpke.NewSender(pk, h.suite.kdf, h.suite.aead, h.info())
	if err != nil {
		tb.Fatal(err)
	}
	h.enc = enc
	hdr := h.marshal()
	inner := r.inner
	if inner == nil {
		signed := appendInner(append([]byte(nil), hdr...), &r.msg)
		sig, err := r.signer.Sign(kez.ContextMessage, signed)
		if err != nil {
			tb.Fatal(err)
		}
		inner = append(signed[len(hdr):], sig...)
	}
	if r.mutate != nil {
		inner = r.mutate(append([]byte(nil), inner...))
	}
	ct, err := s.Seal(hdr, inner)
	if err != nil {
		tb.Fatal(err)
	}
	return append(hdr, ct...)
}

// decryptInner returns the inner plaintext of env, decrypted with id's key
// of the header's generation, as a recipient who wants to re-use it would.
func decryptInner(tb testing.TB, id *kez.Identity, env []byte) []byte {
	tb.Helper()
	h, n, err := parseHeader(env)
	if err != nil {
		tb.Fatal(err)
	}
	k, err := hpke.NewDHKEMPrivateKey(id.EncryptionKey(h.generation))
	if err != nil {
		tb.Fatal(err)
	}
	r, err := hpke.NewRecipient(h.enc, k, h.suite.kdf, h.suite.aead, h.info())
	if err != nil {
		tb.Fatal(err)
	}
	inner, err := r.Open(env[:n], env[n:])
	if err != nil {
		tb.Fatal(err)
	}
	return inner
}

// flip returns a copy of b with byte i inverted.
func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 0xff
	return c
}
