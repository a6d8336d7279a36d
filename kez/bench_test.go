package kez

import (
	"crypto/ed25519"
	"testing"
)

// Benchmarks set KEZ's costs beside the raw primitives in the same run:
// FromWords is dominated by BIP-39's PBKDF2 (2048 × HMAC-SHA512); Sign and
// Verify add a 12-byte prefix and the context to a plain ed25519 operation.

var benchMsg = make([]byte, 256)

func BenchmarkFromWords(b *testing.B) {
	for b.Loop() {
		if _, err := FromWords(countingWords); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseMnemonic(b *testing.B) {
	for b.Loop() {
		if _, err := ParseMnemonic(countingWords); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFromSeed(b *testing.B) {
	seed := mustIdentity(b, countingWords).Seed()
	for b.Loop() {
		if _, err := FromSeed(seed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncryptionKey(b *testing.B) {
	id := mustIdentity(b, countingWords)
	for b.Loop() {
		id.EncryptionKey(1)
	}
}

func BenchmarkSign(b *testing.B) {
	id := mustIdentity(b, countingWords)
	for b.Loop() {
		if _, err := id.Sign(ContextMessage, benchMsg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawEd25519Sign(b *testing.B) {
	priv := mustIdentity(b, countingWords).Ed25519PrivateKey()
	for b.Loop() {
		ed25519.Sign(priv, benchMsg)
	}
}

func BenchmarkVerify(b *testing.B) {
	id := mustIdentity(b, countingWords)
	sig, _ := id.Sign(ContextMessage, benchMsg)
	k := id.PublicKey()
	for b.Loop() {
		if err := k.Verify(ContextMessage, benchMsg, sig); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawEd25519Verify(b *testing.B) {
	id := mustIdentity(b, countingWords)
	sig := ed25519.Sign(id.Ed25519PrivateKey(), benchMsg)
	pub := id.PublicKey().Ed25519()
	for b.Loop() {
		if !ed25519.Verify(pub, benchMsg, sig) {
			b.Fatal("bad signature")
		}
	}
}

func BenchmarkPeerID(b *testing.B) {
	k := mustIdentity(b, countingWords).PublicKey()
	for b.Loop() {
		k.PeerID()
	}
}

func BenchmarkParsePublicKey(b *testing.B) {
	s := mustIdentity(b, countingWords).PublicKey().String()
	for b.Loop() {
		if _, err := ParsePublicKey(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFingerprint(b *testing.B) {
	k := mustIdentity(b, countingWords).PublicKey()
	for b.Loop() {
		k.Fingerprint()
	}
}
