package kez

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nkeys"
)

// PublicKey is an ed25519 primary public key. Its text form is the NATS
// user nkey ("U…", 56 characters), which is also how it appears in subjects,
// URLs and sigchains. The zero value is not a valid key.
type PublicKey [ed25519.PublicKeySize]byte

// ErrBadKey reports text that is not a KEZ public key.
var ErrBadKey = errors.New("kez: not a public key")

// ParsePublicKey parses the "U…" nkey form of a public key.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	if len(s) != 56 || s[0] != 'U' {
		return k, fmt.Errorf("%w: want a 56-character key starting with U, got %q", ErrBadKey, truncate(s, 60))
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(s))
	if err != nil {
		return k, fmt.Errorf("%w: %q: %w", ErrBadKey, s, err)
	}
	if len(raw) != ed25519.PublicKeySize {
		return k, fmt.Errorf("%w: %q decodes to %d bytes", ErrBadKey, s, len(raw))
	}
	copy(k[:], raw)
	return k, nil
}

// PublicKeyFromEd25519 wraps a raw ed25519 public key.
func PublicKeyFromEd25519(pub ed25519.PublicKey) (PublicKey, error) {
	var k PublicKey
	if len(pub) != ed25519.PublicKeySize {
		return k, fmt.Errorf("%w: ed25519 key of %d bytes", ErrBadKey, len(pub))
	}
	copy(k[:], pub)
	return k, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// String returns the NATS user nkey form ("U…").
func (k PublicKey) String() string {
	s, err := nkeys.Encode(nkeys.PrefixByteUser, k[:])
	if err != nil {
		panic("kez: nkey encode: " + err.Error()) // unreachable: fixed-size input
	}
	return string(s)
}

// NKey is the same as String: the key as a NATS user nkey.
func (k PublicKey) NKey() string { return k.String() }

// MarshalText implements encoding.TextMarshaler with the nkey form.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// IsZero reports whether k is the zero value.
func (k PublicKey) IsZero() bool { return k == PublicKey{} }

// Ed25519 returns the key as a standard library ed25519 key.
func (k PublicKey) Ed25519() ed25519.PublicKey { return append(ed25519.PublicKey(nil), k[:]...) }

// PeerID returns the libp2p peer ID of the key (identity multihash of the
// protobuf-encoded ed25519 key, as go-libp2p computes it).
func (k PublicKey) PeerID() peer.ID {
	pk, err := crypto.UnmarshalEd25519PublicKey(k[:])
	if err != nil {
		panic("kez: libp2p key: " + err.Error()) // unreachable: fixed-size input
	}
	id, err := peer.IDFromPublicKey(pk)
	if err != nil {
		panic("kez: peer id: " + err.Error())
	}
	return id
}

// PublicKeyFromPeerID recovers the KEZ key from a libp2p peer ID made by
// [PublicKey.PeerID].
func PublicKeyFromPeerID(id peer.ID) (PublicKey, error) {
	pk, err := id.ExtractPublicKey()
	if err != nil {
		return PublicKey{}, fmt.Errorf("%w: peer ID %s: %w", ErrBadKey, truncate(id.String(), 60), err)
	}
	if pk.Type() != crypto.Ed25519 {
		return PublicKey{}, fmt.Errorf("%w: peer ID %s is not an ed25519 key", ErrBadKey, truncate(id.String(), 60))
	}
	raw, err := pk.Raw()
	if err != nil {
		return PublicKey{}, err
	}
	return PublicKeyFromEd25519(raw)
}

// fingerprintDomain separates fingerprint hashing from every other use.
const fingerprintDomain = "kez/v1 fingerprint\x00"

// Fingerprint returns a short text two people can compare aloud: six
// groups of five digits (about 100 bits), each group a 40-bit big-endian slice of
// SHA-256(domain || key) reduced mod 100000, e.g.
// "05827 33104 …". See docs/spec/identity.md.
func (k PublicKey) Fingerprint() string {
	h := sha256.Sum256(append([]byte(fingerprintDomain), k[:]...))
	return digitGroups(h[:30])
}

// digitGroups writes each 5-byte slice of b as a big-endian integer mod
// 100000, five digits zero-padded, the groups separated by one space.
func digitGroups(b []byte) string {
	var s strings.Builder
	for i := 0; i+5 <= len(b); i += 5 {
		var buf [8]byte
		copy(buf[3:], b[i:i+5])
		if i > 0 {
			s.WriteByte(' ')
		}
		fmt.Fprintf(&s, "%05d", binary.BigEndian.Uint64(buf[:])%100000)
	}
	return s.String()
}
