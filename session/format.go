package session

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// The byte layouts below are specified in docs/spec/session.md; a change
// here is a change of the wire format and needs a new version byte.

// Limits of format version 2 (docs/spec/session.md §3, §7).
const (
	// MaxEnvelopeSize bounds a sealed envelope: the NATS stream's maximum
	// message size, as for version 1.
	MaxEnvelopeSize = 64 << 10
	// MaxPlaintextSize is the largest plaintext that fits an envelope of
	// either type (a handshake's header is the larger).
	MaxPlaintextSize = MaxEnvelopeSize - handshakeMinLen

	// MaxSkip bounds how far ahead of the last message received in its
	// chain a message may be: at most MaxSkip message keys are skipped
	// (derived and stored for messages not yet received) by one message.
	MaxSkip = 1000
	// MaxSkippedKeys bounds the skipped keys a session stores; the oldest
	// are dropped first.
	MaxSkippedKeys = 2000
	// SkippedKeyLifetime is how long a skipped key is kept.
	SkippedKeyLifetime = 30 * 24 * time.Hour

	// maxEarlierDHr bounds the peer's earlier ratchet keys remembered to
	// refuse replays from chains that are over.
	maxEarlierDHr = 32
)

// Envelope types of format version 2.
const (
	// TypeHandshake is the type of the first messages of a session, from
	// its initiator, until the peer's first message arrives.
	TypeHandshake uint8 = 1
	// TypeMessage is the type of every other message of a session.
	TypeMessage uint8 = 2
)

const (
	magic   = "KEZM"
	version = 2

	keyLen = 32
	sidLen = 16
	sigLen = 64
	tagLen = 16

	offSender    = 6
	offRecipient = offSender + keyLen // 38
	// type 1
	offPrekeyID = offRecipient + keyLen // 70
	offKEMID    = offPrekeyID + 4       // 74
	offEncLen   = offKEMID + 2          // 76
	offEnc      = offEncLen + 2         // 78, also the end of the fields in the HPKE info
	// type 2
	offSessionID  = offRecipient + keyLen  // 70
	offDH2        = offSessionID + sidLen  // 86
	msgHeaderLen  = offDH2 + ratchetHdrLen // 126
	msgMinLen     = msgHeaderLen + tagLen  // 142
	ratchetHdrLen = keyLen + 4 + 4         // dh_pub, pn, n

	hybridEncLen    = 1120
	handshakeMinLen = offEnc + hybridEncLen + keyLen + sigLen + ratchetHdrLen + tagLen // 1350

	handshakeContext = "kez/v2 handshake" // the signature context, and the HPKE info label
	rootExportLabel  = "kez/v2 root"
	ratchetInfo      = "kez/v2 ratchet"
	adLabel          = "kez/v2\x00"
)

// kemSuite is the handshake's HPKE KEM. Format version 2 accepts only
// MLKEM768-X25519; the type lets the benchmarks measure the same
// handshake with DHKEM(X25519) for comparison.
type kemSuite struct {
	id     uint16
	encLen int
	kem    hpke.KEM
}

var hybridSuite = &kemSuite{id: KEMHybrid, encLen: hybridEncLen, kem: hpke.MLKEM768X25519()}

// prefixLen is the length of the handshake prefix (through sig).
func (k *kemSuite) prefixLen() int { return offEnc + k.encLen + keyLen + sigLen }

// Header is the cleartext routing part of a version-2 envelope, read by
// [ParseHeader] without any key.
type Header struct {
	Version, Type     uint8
	Sender, Recipient kez.PublicKey
	// SessionID names the session: carried by a message (type 2),
	// computed from the handshake prefix for a handshake (type 1).
	SessionID [16]byte
}

// parsed is a structurally checked envelope; its slices alias the input.
type parsed struct {
	typ               uint8
	sender, recipient kez.PublicKey
	sessionID         [sidLen]byte

	// type 1 only
	prefix   []byte // envelope[:prefixLen]
	prekeyID uint32
	enc      []byte
	initDH   [keyLen]byte
	sig      []byte
	hsHash   [sha256.Size]byte

	// the ratchet message
	dh     [keyLen]byte
	pn, n  uint32
	header []byte // every byte before the ciphertext
	ct     []byte
}

// ParseHeader reads the cleartext header of a version-2 envelope and checks
// its structure (docs/spec/session.md §8, checks 1–5), without any key
// work: for routing, and to refuse junk before a session is looked up. For
// a handshake it computes the session ID (a SHA-256 of the prefix).
func ParseHeader(envelope []byte) (Header, error) {
	var p parsed
	if err := parse(envelope, hybridSuite, &p); err != nil {
		return Header{}, err
	}
	return Header{Version: version, Type: p.typ, Sender: p.sender, Recipient: p.recipient, SessionID: p.sessionID}, nil
}

// parse checks 1–5 of the spec's table into p.
func parse(b []byte, ks *kemSuite, p *parsed) error {
	if len(b) > MaxEnvelopeSize {
		return fmt.Errorf("%w: %d bytes, at most %d allowed", ErrTooLarge, len(b), MaxEnvelopeSize)
	}
	if len(b) < offSender || string(b[:4]) != magic {
		return fmt.Errorf("%w: not a KEZ envelope", ErrMalformed)
	}
	if b[4] != version {
		return fmt.Errorf("%w: version %d, want %d", ErrUnsupportedVersion, b[4], version)
	}
	p.typ = b[5]
	var rm []byte // the ratchet message: dh_pub, pn, n, ciphertext
	switch p.typ {
	case TypeHandshake:
		if len(b) < offEnc {
			return fmt.Errorf("%w: handshake of %d bytes cut inside its header", ErrMalformed, len(b))
		}
		if id := binary.BigEndian.Uint16(b[offKEMID:]); id != ks.id {
			return fmt.Errorf("%w: handshake to KEM 0x%04x", ErrUnsupportedVersion, id)
		}
		if n := binary.BigEndian.Uint16(b[offEncLen:]); int(n) != ks.encLen {
			return fmt.Errorf("%w: enc length %d, want %d", ErrMalformed, n, ks.encLen)
		}
		pl := ks.prefixLen()
		if len(b) < pl+ratchetHdrLen+tagLen {
			return fmt.Errorf("%w: handshake of %d bytes, at least %d needed", ErrMalformed, len(b), pl+ratchetHdrLen+tagLen)
		}
		p.prefix = b[:pl]
		p.prekeyID = binary.BigEndian.Uint32(b[offPrekeyID:])
		p.enc = b[offEnc : offEnc+ks.encLen]
		copy(p.initDH[:], b[offEnc+ks.encLen:])
		p.sig = b[pl-sigLen : pl]
		p.hsHash = sha256.Sum256(p.prefix)
		copy(p.sessionID[:], p.hsHash[:])
		rm = b[pl:]
	case TypeMessage:
		if len(b) < msgMinLen {
			return fmt.Errorf("%w: message of %d bytes, at least %d needed", ErrMalformed, len(b), msgMinLen)
		}
		copy(p.sessionID[:], b[offSessionID:])
		rm = b[offDH2:]
	default:
		return fmt.Errorf("%w: envelope type %d", ErrUnsupportedVersion, p.typ)
	}
	copy(p.sender[:], b[offSender:])
	copy(p.recipient[:], b[offRecipient:])
	copy(p.dh[:], rm)
	p.pn = binary.BigEndian.Uint32(rm[keyLen:])
	p.n = binary.BigEndian.Uint32(rm[keyLen+4:])
	hl := len(b) - len(rm) + ratchetHdrLen
	p.header, p.ct = b[:hl], b[hl:]
	if p.typ == TypeHandshake && p.dh != p.initDH {
		return fmt.Errorf("%w: the handshake's first message is not under its initiator's ratchet key", ErrMalformed)
	}
	return nil
}

// appendHandshakeFields appends the handshake's fields from magic through
// enc_len.
func appendHandshakeFields(b []byte, ks *kemSuite, from, to kez.PublicKey, prekeyID uint32) []byte {
	b = append(b, magic...)
	b = append(b, version, TypeHandshake)
	b = append(b, from[:]...)
	b = append(b, to[:]...)
	b = binary.BigEndian.AppendUint32(b, prekeyID)
	b = binary.BigEndian.AppendUint16(b, ks.id)
	return binary.BigEndian.AppendUint16(b, uint16(ks.encLen))
}

// handshakeInfo is the HPKE info: the label, a zero byte, the fields from
// version through enc_len, and the initiator's ratchet key. enc cannot be
// part of it (HPKE's setup makes enc); the signature binds it.
func handshakeInfo(fields []byte, initDH []byte) []byte {
	info := make([]byte, 0, len(handshakeContext)+1+len(fields)-4+keyLen)
	info = append(info, handshakeContext...)
	info = append(info, 0)
	info = append(info, fields[4:offEnc]...)
	return append(info, initDH...)
}

// appendRatchetHeader appends dh_pub, pn and n.
func appendRatchetHeader(b []byte, dh *[keyLen]byte, pn, n uint32) []byte {
	b = append(b, dh[:]...)
	b = binary.BigEndian.AppendUint32(b, pn)
	return binary.BigEndian.AppendUint32(b, n)
}

// x25519 returns DH(priv, pub); a low-order pub is an error.
func x25519(priv, pub *[keyLen]byte) ([]byte, error) {
	sk, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return nil, err
	}
	pk, err := ecdh.X25519().NewPublicKey(pub[:])
	if err != nil {
		return nil, err
	}
	return sk.ECDH(pk)
}
