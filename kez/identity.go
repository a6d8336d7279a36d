package kez

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"fmt"
	"strconv"
)

// Derivation labels. They are part of the format (docs/spec/identity.md):
// changing one changes every identity.
const (
	derivationSalt  = "kez/v1 derivation"
	primaryKeyInfo  = "kez/v1 ed25519 primary key"
	encryptionInfoP = "kez/v1 x25519 encryption key "
)

// Identity is a user's private key material: the ed25519 primary key and the
// 64-byte seed that derives it and the X25519 encryption keys. Make one with
// [NewIdentity], [FromMnemonic], [FromWords], [FromSeed] or [LoadIdentity];
// the zero value is not usable. An Identity is immutable and safe for
// concurrent use.
type Identity struct {
	priv ed25519.PrivateKey
	pub  PublicKey
	seed []byte // the BIP-39 seed; derives encryption keys
}

// NewIdentity makes a fresh identity and returns it with its paper backup.
// Show the words to the user once; they are the only way to recover.
func NewIdentity() (*Identity, Mnemonic, error) {
	m, err := NewMnemonic()
	if err != nil {
		return nil, Mnemonic{}, err
	}
	id, err := FromMnemonic(m)
	return id, m, err
}

// FromMnemonic derives the identity of a paper backup. The same words give
// the same identity on every machine. Derivation costs one PBKDF2 run (2048
// rounds of HMAC-SHA512), a few milliseconds.
func FromMnemonic(m Mnemonic) (*Identity, error) {
	if m.IsZero() {
		return nil, fmt.Errorf("kez: empty mnemonic")
	}
	return fromSeed(m.seed())
}

// FromWords parses words with [ParseMnemonic] and derives their identity.
func FromWords(words string) (*Identity, error) {
	m, err := ParseMnemonic(words)
	if err != nil {
		return nil, err
	}
	return FromMnemonic(m)
}

func fromSeed(seed []byte) (*Identity, error) {
	if len(seed) != 64 {
		return nil, fmt.Errorf("kez: seed must be 64 bytes, got %d", len(seed))
	}
	k, err := hkdf.Key(sha256.New, seed, []byte(derivationSalt), primaryKeyInfo, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("kez: deriving primary key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(k)
	var pub PublicKey
	copy(pub[:], priv.Public().(ed25519.PublicKey))
	return &Identity{priv: priv, pub: pub, seed: append([]byte(nil), seed...)}, nil
}

// PublicKey returns the identity's public key.
func (id *Identity) PublicKey() PublicKey { return id.pub }

// EncryptionKey derives the X25519 encryption key of the given generation.
// Generation 0 is the key published in the eldest sigchain link; a rotation
// publishes generation 1, 2, … so that the words still recover every key.
func (id *Identity) EncryptionKey(generation uint32) *ecdh.PrivateKey {
	info := encryptionInfoP + strconv.FormatUint(uint64(generation), 10)
	k, err := hkdf.Key(sha256.New, id.seed, []byte(derivationSalt), info, 32)
	if err != nil {
		panic("kez: hkdf: " + err.Error()) // unreachable: 32 bytes of SHA-256 HKDF cannot fail
	}
	priv, err := ecdh.X25519().NewPrivateKey(k)
	if err != nil {
		panic("kez: x25519: " + err.Error()) // unreachable: any 32 bytes is an X25519 scalar
	}
	return priv
}

// Ed25519PrivateKey returns a copy of the raw primary private key, for
// transports that need it directly (the libp2p host, via
// crypto.UnmarshalEd25519PrivateKey). Treat it as the secret it is: anything
// signed with it outside [Identity.Sign] lacks KEZ's context separation.
func (id *Identity) Ed25519PrivateKey() ed25519.PrivateKey {
	return append(ed25519.PrivateKey(nil), id.priv...)
}

// Seed returns a copy of the 64-byte seed the identity was derived from.
// It is what [SaveIdentity] stores.
func (id *Identity) Seed() []byte { return append([]byte(nil), id.seed...) }

// FromSeed rebuilds an identity from the 64-byte seed returned by
// [Identity.Seed] (the standard BIP-39 seed of the words).
func FromSeed(seed []byte) (*Identity, error) { return fromSeed(seed) }
