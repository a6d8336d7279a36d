package session

// TEMPORARY stand-in for prekey.go (another change writes the real one):
// just the agreed API, so that the session code builds and its tests run.
// Deleted when prekey.go lands.

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// KEMHybrid is the HPKE KEM identifier of MLKEM768-X25519.
const KEMHybrid uint16 = 0x647a

// Prekey record errors.
var (
	// ErrMalformedPrekey reports bytes that are not a prekey record.
	ErrMalformedPrekey = errors.New("session: malformed prekey record")
	// ErrPrekeySignature reports a record whose signature does not verify.
	ErrPrekeySignature = errors.New("session: bad prekey signature")
	// ErrPrekeyExpired reports a record outside its validity window.
	ErrPrekeyExpired = errors.New("session: prekey expired or not yet valid")
	// ErrPrekeyOwner reports a record of another key.
	ErrPrekeyOwner = errors.New("session: prekey belongs to another key")
)

const standinRecordLen = 4 + 1 + 2 + 4 + 8 + 8 + 32 + 2 + 1216 + 32 + 64

// Prekey is a signed prekey record.
type Prekey struct {
	Owner            kez.PublicKey
	ID               uint32
	Created, Expires time.Time
	KEMPublic        []byte
	RatchetPublic    [32]byte
	Sig              [64]byte
}

func (p *Prekey) standinSigned() []byte {
	b := []byte("KEZP\x01")
	b = binary.BigEndian.AppendUint16(b, KEMHybrid)
	b = binary.BigEndian.AppendUint32(b, p.ID)
	b = binary.BigEndian.AppendUint64(b, uint64(p.Created.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(p.Expires.UnixMilli()))
	b = append(b, p.Owner[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(p.KEMPublic)))
	b = append(b, p.KEMPublic...)
	return append(b, p.RatchetPublic[:]...)
}

// MarshalBinary returns the record.
func (p *Prekey) MarshalBinary() ([]byte, error) {
	return append(p.standinSigned(), p.Sig[:]...), nil
}

// ParsePrekey parses a record.
func ParsePrekey(b []byte) (*Prekey, error) {
	if len(b) != standinRecordLen || string(b[:5]) != "KEZP\x01" {
		return nil, ErrMalformedPrekey
	}
	p := &Prekey{ID: binary.BigEndian.Uint32(b[7:])}
	p.Created = time.UnixMilli(int64(binary.BigEndian.Uint64(b[11:]))).UTC()
	p.Expires = time.UnixMilli(int64(binary.BigEndian.Uint64(b[19:]))).UTC()
	copy(p.Owner[:], b[27:])
	p.KEMPublic = append([]byte(nil), b[61:61+1216]...)
	copy(p.RatchetPublic[:], b[1277:])
	copy(p.Sig[:], b[1309:])
	return p, nil
}

// Verify checks the record.
func (p *Prekey) Verify(owner kez.PublicKey, now time.Time) error {
	if p.Owner != owner {
		return ErrPrekeyOwner
	}
	if err := owner.Verify("kez/v2 prekey", p.standinSigned(), p.Sig[:]); err != nil {
		return ErrPrekeySignature
	}
	if !now.Before(p.Expires) {
		return ErrPrekeyExpired
	}
	return nil
}

// PrekeyPrivate is the device-only half.
type PrekeyPrivate struct {
	Public  Prekey
	seeds   [64]byte
	kem     hpke.PrivateKey
	ratchet *ecdh.PrivateKey
}

// NewPrekey makes a prekey from 64 bytes of rand (KEM seed, ratchet key).
func NewPrekey(rnd io.Reader, id *kez.Identity, prekeyID uint32, created time.Time, lifetime time.Duration) (*PrekeyPrivate, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	k := &PrekeyPrivate{}
	if _, err := io.ReadFull(rnd, k.seeds[:]); err != nil {
		return nil, err
	}
	if err := k.standinKeys(); err != nil {
		return nil, err
	}
	created = time.UnixMilli(created.UnixMilli()).UTC()
	k.Public.Owner, k.Public.ID, k.Public.Created, k.Public.Expires = id.PublicKey(), prekeyID, created, created.Add(lifetime.Truncate(time.Millisecond))
	sig, err := id.Sign("kez/v2 prekey", k.Public.standinSigned())
	if err != nil {
		return nil, err
	}
	copy(k.Public.Sig[:], sig)
	return k, nil
}

func (k *PrekeyPrivate) standinKeys() error {
	var err error
	if k.kem, err = hpke.MLKEM768X25519().NewPrivateKey(k.seeds[:32]); err != nil {
		return err
	}
	if k.ratchet, err = ecdh.X25519().NewPrivateKey(k.seeds[32:]); err != nil {
		return err
	}
	k.Public.KEMPublic = k.kem.PublicKey().Bytes()
	copy(k.Public.RatchetPublic[:], k.ratchet.PublicKey().Bytes())
	return nil
}

// MarshalBinary returns the seeds and the record.
func (k *PrekeyPrivate) MarshalBinary() ([]byte, error) {
	rec, _ := k.Public.MarshalBinary()
	return append(k.seeds[:], rec...), nil
}

// ParsePrekeyPrivate reverses MarshalBinary.
func ParsePrekeyPrivate(b []byte) (*PrekeyPrivate, error) {
	if len(b) != 64+standinRecordLen {
		return nil, ErrMalformedPrekey
	}
	p, err := ParsePrekey(b[64:])
	if err != nil {
		return nil, err
	}
	k := &PrekeyPrivate{Public: *p}
	copy(k.seeds[:], b)
	if err := k.standinKeys(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedPrekey, err)
	}
	return k, nil
}

// KEMKey returns the hybrid KEM private key.
func (k *PrekeyPrivate) KEMKey() hpke.PrivateKey { return k.kem }

// RatchetKey returns the X25519 ratchet private key.
func (k *PrekeyPrivate) RatchetKey() *ecdh.PrivateKey { return k.ratchet }
