package session

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// KEMHybrid is the HPKE KEM identifier (RFC 9180 registry) of
// MLKEM768-X25519, the only KEM a prekey record carries.
const KEMHybrid uint16 = 0x647a

// Errors of prekey records. Each is returned wrapped with detail; test
// with errors.Is.
var (
	// ErrMalformedPrekey reports bytes that are not a prekey record (or a
	// stored private prekey) of the exact layout, or a record whose
	// fields cannot hold (a key of the wrong size, an expiry not after
	// its creation).
	ErrMalformedPrekey = errors.New("session: malformed prekey record")
	// ErrPrekeySignature reports a record whose signature does not verify
	// with its owner's key.
	ErrPrekeySignature = errors.New("session: bad prekey signature")
	// ErrPrekeyExpired reports a record outside its validity window: it
	// expired, or it was made further in the future than the clock skew
	// allowed ([PrekeyClockSkew]).
	ErrPrekeyExpired = errors.New("session: prekey expired or not yet valid")
	// ErrPrekeyOwner reports a record signed for another key than the one
	// it was expected from.
	ErrPrekeyOwner = errors.New("session: prekey belongs to another key")
)

// Sizes of the prekey record (docs/spec/session.md).
const (
	prekeyMagic       = "KEZP"
	prekeyVersion     = 1
	prekeyContext     = "kez/v2 prekey" // the signature context
	kemPublicSize     = 1216            // MLKEM768-X25519 encapsulation key
	ratchetPublicSize = 32
	// prekeyHeaderSize is everything before kem_pk: magic, version,
	// kem_id, prekey_id, created_ms, expires_ms, owner, kem_pk_len.
	prekeyHeaderSize = 4 + 1 + 2 + 4 + 8 + 8 + 32 + 2
	// PrekeyRecordSize is the size of a marshalled prekey record.
	PrekeyRecordSize = prekeyHeaderSize + kemPublicSize + ratchetPublicSize + ed25519.SignatureSize
)

// PrekeyClockSkew is how far in the future a record's creation time may
// be, by the verifier's clock, for [Prekey.Verify] to accept it.
const PrekeyClockSkew = 5 * time.Minute

// Prekey is a signed prekey record: the public half of a
// [PrekeyPrivate], published on the sig-server and fetched by whoever
// opens a session with its owner. It holds the hybrid KEM key the
// handshake encapsulates to and the X25519 key that is the owner's first
// Double Ratchet key.
//
// Its binary form (big-endian integers, see docs/spec/session.md):
//
//	"KEZP" | u8 version=1 | u16 kem_id=0x647a | u32 prekey_id
//	| i64 created_ms | i64 expires_ms | [32] owner | u16 kem_pk_len=1216
//	| kem_pk | [32] ratchet_pk | [64] sig
//
// sig is the owner's ed25519 signature over every byte before it, under
// the context "kez/v2 prekey" ([kez.Identity.Sign]).
type Prekey struct {
	// Owner is the primary key that signed the record.
	Owner kez.PublicKey
	// ID names the prekey among its owner's prekeys; handshakes carry it.
	ID uint32
	// Created and Expires bound the record's validity (millisecond
	// precision, UTC).
	Created, Expires time.Time
	// KEMPublic is the MLKEM768-X25519 public key (1216 bytes).
	KEMPublic []byte
	// RatchetPublic is the X25519 public key that serves as the owner's
	// first Double Ratchet key.
	RatchetPublic [32]byte
	// Sig is the owner's signature (see the type's comment).
	Sig [64]byte
}

// signed appends the record's signed bytes (everything before sig) to b.
func (p *Prekey) signed(b []byte) ([]byte, error) {
	if len(p.KEMPublic) != kemPublicSize {
		return nil, fmt.Errorf("%w: KEM public key of %d bytes, want %d", ErrMalformedPrekey, len(p.KEMPublic), kemPublicSize)
	}
	b = append(b, prekeyMagic...)
	b = append(b, prekeyVersion)
	b = binary.BigEndian.AppendUint16(b, KEMHybrid)
	b = binary.BigEndian.AppendUint32(b, p.ID)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Created.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(p.Expires.UnixMilli()))
	b = append(b, p.Owner[:]...)
	b = binary.BigEndian.AppendUint16(b, kemPublicSize)
	b = append(b, p.KEMPublic...)
	return append(b, p.RatchetPublic[:]...), nil
}

// MarshalBinary returns the record's binary form (see [Prekey]). It fails
// only if KEMPublic is not 1216 bytes.
func (p *Prekey) MarshalBinary() ([]byte, error) {
	b, err := p.signed(make([]byte, 0, PrekeyRecordSize))
	if err != nil {
		return nil, err
	}
	return append(b, p.Sig[:]...), nil
}

// ParsePrekey parses a record of the exact layout of [Prekey]: magic,
// version 1, KEM [KEMHybrid], a 1216-byte KEM key and nothing after the
// signature; anything else is [ErrMalformedPrekey]. It verifies nothing:
// call [Prekey.Verify].
func ParsePrekey(b []byte) (*Prekey, error) {
	if len(b) < prekeyHeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrMalformedPrekey, len(b), PrekeyRecordSize)
	}
	if string(b[:4]) != prekeyMagic {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformedPrekey, prekeyMagic)
	}
	if b[4] != prekeyVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformedPrekey, b[4], prekeyVersion)
	}
	if kem := binary.BigEndian.Uint16(b[5:]); kem != KEMHybrid {
		return nil, fmt.Errorf("%w: KEM %#04x, want %#04x (MLKEM768-X25519)", ErrMalformedPrekey, kem, KEMHybrid)
	}
	if n := binary.BigEndian.Uint16(b[prekeyHeaderSize-2:]); n != kemPublicSize {
		return nil, fmt.Errorf("%w: KEM public key length %d, want %d", ErrMalformedPrekey, n, kemPublicSize)
	}
	if len(b) != PrekeyRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrMalformedPrekey, len(b), PrekeyRecordSize)
	}
	p := &Prekey{
		ID:        binary.BigEndian.Uint32(b[7:]),
		Created:   time.UnixMilli(int64(binary.BigEndian.Uint64(b[11:]))).UTC(),
		Expires:   time.UnixMilli(int64(binary.BigEndian.Uint64(b[19:]))).UTC(),
		KEMPublic: bytes.Clone(b[prekeyHeaderSize : prekeyHeaderSize+kemPublicSize]),
	}
	copy(p.Owner[:], b[27:59])
	rest := b[prekeyHeaderSize+kemPublicSize:]
	copy(p.RatchetPublic[:], rest[:ratchetPublicSize])
	copy(p.Sig[:], rest[ratchetPublicSize:])
	return p, nil
}

// Verify checks the record for use by now: that owner signed it (else
// [ErrPrekeyOwner] or [ErrPrekeySignature]), that its keys are valid
// MLKEM768-X25519 and X25519 public keys and it expires after it was
// made (else [ErrMalformedPrekey]), and that now is before Expires and
// no more than [PrekeyClockSkew] before Created (else [ErrPrekeyExpired]).
func (p *Prekey) Verify(owner kez.PublicKey, now time.Time) error {
	if p.Owner != owner {
		return fmt.Errorf("%w: signed by %s, expected %s", ErrPrekeyOwner, p.Owner, owner)
	}
	if err := p.verifySignature(); err != nil {
		return err
	}
	switch {
	case !now.Before(p.Expires):
		return fmt.Errorf("%w: prekey %d expired at %s", ErrPrekeyExpired, p.ID, p.Expires.Format(time.RFC3339))
	case p.Created.After(now.Add(PrekeyClockSkew)):
		return fmt.Errorf("%w: prekey %d is dated %s, in the future", ErrPrekeyExpired, p.ID, p.Created.Format(time.RFC3339))
	}
	return nil
}

// verifySignature checks everything of the record that does not depend
// on a clock or on who is expected to own it.
func (p *Prekey) verifySignature() error {
	msg, err := p.signed(nil)
	if err != nil {
		return err
	}
	if err := p.Owner.Verify(prekeyContext, msg, p.Sig[:]); err != nil {
		return fmt.Errorf("%w: prekey %d of %s: %w", ErrPrekeySignature, p.ID, p.Owner, err)
	}
	if !p.Created.Before(p.Expires) {
		return fmt.Errorf("%w: prekey %d expires (%s) before it is made (%s)", ErrMalformedPrekey, p.ID,
			p.Expires.Format(time.RFC3339), p.Created.Format(time.RFC3339))
	}
	if _, err := hpke.MLKEM768X25519().NewPublicKey(p.KEMPublic); err != nil {
		return fmt.Errorf("%w: prekey %d: KEM public key: %w", ErrMalformedPrekey, p.ID, err)
	}
	if _, err := ecdh.X25519().NewPublicKey(p.RatchetPublic[:]); err != nil {
		return fmt.Errorf("%w: prekey %d: ratchet public key: %w", ErrMalformedPrekey, p.ID, err)
	}
	return nil
}

// PrekeyPrivate is a prekey with its private keys: the device-only half,
// kept in chat.db and deleted when the rotation ring says so ([Ring]).
type PrekeyPrivate struct {
	// Public is the signed record to publish.
	Public Prekey

	kem     hpke.PrivateKey
	ratchet *ecdh.PrivateKey
}

// seedSize is the size of each private key's seed: the MLKEM768-X25519
// private key (draft-ietf-hpke-pq) and the X25519 scalar.
const seedSize = 32

// NewPrekey makes a prekey for id from 64 bytes of rand (nil means
// crypto/rand): the seeds of a fresh MLKEM768-X25519 key pair and of an
// X25519 key pair, never derived from the identity's words. The record
// is numbered prekeyID, made at created (rounded down to the
// millisecond) and valid for lifetime, and signed by id.
func NewPrekey(rnd io.Reader, id *kez.Identity, prekeyID uint32, created time.Time, lifetime time.Duration) (*PrekeyPrivate, error) {
	if id == nil {
		return nil, errors.New("session: NewPrekey needs an identity")
	}
	if lifetime < time.Millisecond {
		return nil, fmt.Errorf("session: a prekey's lifetime must be at least a millisecond, got %v", lifetime)
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	var seeds [2 * seedSize]byte
	if _, err := io.ReadFull(rnd, seeds[:]); err != nil {
		return nil, fmt.Errorf("session: reading randomness for a prekey: %w", err)
	}
	k, err := newPrivate(seeds[:seedSize], seeds[seedSize:])
	if err != nil {
		return nil, err
	}
	created = time.UnixMilli(created.UnixMilli()).UTC()
	k.Public.Owner = id.PublicKey()
	k.Public.ID = prekeyID
	k.Public.Created = created
	k.Public.Expires = created.Add(lifetime.Truncate(time.Millisecond))
	msg, err := k.Public.signed(nil)
	if err != nil {
		return nil, err
	}
	sig, err := id.Sign(prekeyContext, msg)
	if err != nil {
		return nil, fmt.Errorf("session: signing a prekey: %w", err)
	}
	copy(k.Public.Sig[:], sig)
	return k, nil
}

// newPrivate makes the two key pairs from their seeds and fills in the
// public keys of k.Public.
func newPrivate(kemSeed, ratchetSeed []byte) (*PrekeyPrivate, error) {
	kem, err := hpke.MLKEM768X25519().NewPrivateKey(kemSeed)
	if err != nil {
		return nil, fmt.Errorf("%w: KEM private key: %w", ErrMalformedPrekey, err)
	}
	ratchet, err := ecdh.X25519().NewPrivateKey(ratchetSeed)
	if err != nil {
		return nil, fmt.Errorf("%w: ratchet private key: %w", ErrMalformedPrekey, err)
	}
	k := &PrekeyPrivate{kem: kem, ratchet: ratchet}
	k.Public.KEMPublic = kem.PublicKey().Bytes()
	copy(k.Public.RatchetPublic[:], ratchet.PublicKey().Bytes())
	return k, nil
}

// The stored form of a private prekey.
const (
	privateMagic   = "KEZp"
	privateVersion = 1
	privateSize    = 4 + 1 + 2*seedSize + PrekeyRecordSize
)

// MarshalBinary returns the stored form of the private prekey, to keep on
// the device only (chat.db, mode 0600):
//
//	"KEZp" | u8 version=1 | [32] KEM seed | [32] ratchet seed | record
//
// where record is [Prekey.MarshalBinary] of Public.
func (k *PrekeyPrivate) MarshalBinary() ([]byte, error) {
	if k.kem == nil || k.ratchet == nil {
		return nil, errors.New("session: the private prekey has no keys")
	}
	kemSeed, err := k.kem.Bytes()
	if err != nil {
		return nil, fmt.Errorf("session: KEM private key: %w", err)
	}
	rec, err := k.Public.MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, privateSize)
	b = append(b, privateMagic...)
	b = append(b, privateVersion)
	b = append(b, kemSeed...)
	b = append(b, k.ratchet.Bytes()...)
	return append(b, rec...), nil
}

// ParsePrekeyPrivate parses what [PrekeyPrivate.MarshalBinary] made. It
// checks that the seeds give the record's public keys and that the
// record's signature verifies with its owner's key (not its dates: an
// expired prekey is still needed during the grace period), else
// [ErrMalformedPrekey] or [ErrPrekeySignature].
func ParsePrekeyPrivate(b []byte) (*PrekeyPrivate, error) {
	if len(b) != privateSize {
		return nil, fmt.Errorf("%w: private prekey of %d bytes, want %d", ErrMalformedPrekey, len(b), privateSize)
	}
	if string(b[:4]) != privateMagic || b[4] != privateVersion {
		return nil, fmt.Errorf("%w: not a version %d private prekey", ErrMalformedPrekey, privateVersion)
	}
	seeds := b[5 : 5+2*seedSize]
	pub, err := ParsePrekey(b[5+2*seedSize:])
	if err != nil {
		return nil, err
	}
	k, err := newPrivate(seeds[:seedSize], seeds[seedSize:])
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(k.Public.KEMPublic, pub.KEMPublic) || k.Public.RatchetPublic != pub.RatchetPublic {
		return nil, fmt.Errorf("%w: the private keys do not match prekey %d's public keys", ErrMalformedPrekey, pub.ID)
	}
	if err := pub.verifySignature(); err != nil {
		return nil, err
	}
	k.Public = *pub
	return k, nil
}

// KEMKey returns the MLKEM768-X25519 private key, which opens handshakes
// sealed to Public.KEMPublic.
func (k *PrekeyPrivate) KEMKey() hpke.PrivateKey { return k.kem }

// RatchetKey returns the X25519 private key of Public.RatchetPublic, the
// owner's first Double Ratchet key pair.
func (k *PrekeyPrivate) RatchetKey() *ecdh.PrivateKey { return k.ratchet }
