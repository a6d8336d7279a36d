package chat

import (
	"crypto/ecdh"
	"crypto/hpke"
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/kez-lat/kez-chat/kez"
)

// The byte layout below is specified in docs/spec/envelope.md; a change here
// is a change of the wire format and needs a new version byte.

const (
	envelopeMagic   = "KEZM"
	envelopeVersion = 1

	// fixedHeaderLen covers magic, version, suite, generation, both keys
	// and the enc length; enc follows.
	fixedHeaderLen = 4 + 1 + 6 + 4 + 32 + 32 + 2
	// infoFieldsEnd is where the fields bound into the HPKE info end
	// (version through recipient key).
	infoFieldsEnd = fixedHeaderLen - 2
	// hpkeInfoLabel starts the HPKE info string.
	hpkeInfoLabel = "kez/v1 envelope\x00"

	sigLen   = 64
	idLen    = 16
	keyLen   = 32
	tagLen   = 16 // ChaCha20-Poly1305, and every AEAD we may add
	maxKind  = 32
	maxEncSz = 2048 // bounds enc for any suite we may add (X-Wing is 1120)

	// minInnerLen is the smallest inner message: one-byte kind, no
	// reference, empty body.
	minInnerLen = idLen + keyLen + keyLen + 8 + 1 + 1 + 1 + 4 + sigLen
)

// suite is one accepted HPKE cipher suite: the RFC 9180 identifiers and
// the library objects that implement them.
type suite struct {
	kemID, kdfID, aeadID uint16
	encSize              int
	kem                  hpke.KEM
	kdf                  hpke.KDF
	aead                 hpke.AEAD
}

// suiteX25519 is the only suite of format version 1 today:
// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
var suiteX25519 = &suite{
	kemID: 0x0020, kdfID: 0x0001, aeadID: 0x0003, encSize: 32,
	kem: hpke.DHKEM(ecdh.X25519()), kdf: hpke.HKDFSHA256(), aead: hpke.ChaCha20Poly1305(),
}

// lookupSuite returns the accepted suite with these identifiers, or nil.
func lookupSuite(kemID, kdfID, aeadID uint16) *suite {
	if kemID == suiteX25519.kemID && kdfID == suiteX25519.kdfID && aeadID == suiteX25519.aeadID {
		return suiteX25519
	}
	return nil
}

// header is the cleartext part of an envelope. It is not authenticated by
// itself: the HPKE info binds its fields and the AEAD takes all of it as
// associated data, so a change to any byte makes the envelope fail to open.
type header struct {
	suite      *suite
	generation uint32
	from, to   kez.PublicKey
	enc        []byte
}

// appendFixed appends magic, version, suite, generation and both keys:
// the header up to, not including, the enc length.
func (h *header) appendFixed(b []byte) []byte {
	b = append(b, envelopeMagic...)
	b = append(b, envelopeVersion)
	b = binary.BigEndian.AppendUint16(b, h.suite.kemID)
	b = binary.BigEndian.AppendUint16(b, h.suite.kdfID)
	b = binary.BigEndian.AppendUint16(b, h.suite.aeadID)
	b = binary.BigEndian.AppendUint32(b, h.generation)
	b = append(b, h.from[:]...)
	b = append(b, h.to[:]...)
	return b
}

// info returns the HPKE info string: the label followed by the header's
// version, suite, generation, sender key and recipient key.
func (h *header) info() []byte {
	fixed := h.appendFixed(make([]byte, 0, infoFieldsEnd))
	return append([]byte(hpkeInfoLabel), fixed[len(envelopeMagic):]...)
}

// marshal returns the whole header, enc included.
func (h *header) marshal() []byte {
	b := h.appendFixed(make([]byte, 0, fixedHeaderLen+len(h.enc)))
	b = binary.BigEndian.AppendUint16(b, uint16(len(h.enc)))
	return append(b, h.enc...)
}

// parseHeader parses the header at the start of data and returns it with
// its length. The returned enc aliases data.
func parseHeader(data []byte) (*header, int, error) {
	if len(data) < 5 {
		return nil, 0, fmt.Errorf("%w: %d bytes is too short for an envelope", ErrMalformed, len(data))
	}
	if string(data[:4]) != envelopeMagic {
		return nil, 0, fmt.Errorf("%w: the data does not start with the envelope magic %q", ErrMalformed, envelopeMagic)
	}
	if data[4] != envelopeVersion {
		return nil, 0, fmt.Errorf("%w: version %d (this program reads version %d); the sender may use a newer client", ErrUnsupportedVersion, data[4], envelopeVersion)
	}
	if len(data) < fixedHeaderLen {
		return nil, 0, fmt.Errorf("%w: the header is truncated (%d bytes, at least %d needed)", ErrMalformed, len(data), fixedHeaderLen)
	}
	kemID := binary.BigEndian.Uint16(data[5:])
	kdfID := binary.BigEndian.Uint16(data[7:])
	aeadID := binary.BigEndian.Uint16(data[9:])
	s := lookupSuite(kemID, kdfID, aeadID)
	if s == nil {
		return nil, 0, fmt.Errorf("%w: KEM 0x%04x, KDF 0x%04x, AEAD 0x%04x", ErrUnsupportedSuite, kemID, kdfID, aeadID)
	}
	h := &header{suite: s, generation: binary.BigEndian.Uint32(data[11:])}
	copy(h.from[:], data[15:47])
	copy(h.to[:], data[47:79])
	encLen := int(binary.BigEndian.Uint16(data[79:]))
	if encLen != s.encSize {
		return nil, 0, fmt.Errorf("%w: enc is %d bytes, the suite needs %d", ErrMalformed, encLen, s.encSize)
	}
	n := fixedHeaderLen + encLen
	if len(data) < n {
		return nil, 0, fmt.Errorf("%w: the header is truncated inside enc", ErrMalformed)
	}
	h.enc = data[fixedHeaderLen:n:n]
	return h, n, nil
}

// appendInner appends the signed part of the inner message (every field
// except the signature). m must have passed validate.
func appendInner(b []byte, m *Message) []byte {
	b = append(b, m.ID[:]...)
	b = append(b, m.From[:]...)
	b = append(b, m.To[:]...)
	return appendInnerTail(b, m)
}

// appendInnerTail appends the inner fields from sent_at on: sent_at, kind,
// reference and body.
func appendInnerTail(b []byte, m *Message) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(m.SentAt.UnixMilli()))
	b = append(b, byte(len(m.Kind)))
	b = append(b, m.Kind...)
	if m.Ref.IsZero() {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = append(b, m.Ref[:]...)
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.Body)))
	return append(b, m.Body...)
}

// innerLen is the encoded length of m, signature included.
func innerLen(m *Message) int {
	n := idLen + 2*keyLen + 8 + 1 + len(m.Kind) + 1 + 4 + len(m.Body) + sigLen
	if !m.Ref.IsZero() {
		n += idLen
	}
	return n
}

// parseInner parses a decrypted inner message. It returns the message, the
// signed part of b and the signature; Body aliases b. It checks structure
// and the rules of [validate], not the signature.
func parseInner(b []byte) (*Message, []byte, []byte, error) {
	if len(b) < minInnerLen {
		return nil, nil, nil, fmt.Errorf("%w: the inner message is truncated (%d bytes)", ErrMalformed, len(b))
	}
	signed, sig := b[:len(b)-sigLen], b[len(b)-sigLen:]
	r := signed
	m := &Message{}
	copy(m.ID[:], r[:idLen])
	copy(m.From[:], r[idLen:idLen+keyLen])
	copy(m.To[:], r[idLen+keyLen:idLen+2*keyLen])
	if err := parseInnerTail(r[idLen+2*keyLen:], m); err != nil {
		return nil, nil, nil, err
	}
	return m, signed, sig, nil
}

// parseInnerTail parses the inner fields from sent_at to the end of r
// into m (Body aliases r) and checks the rules of [validate].
func parseInnerTail(r []byte, m *Message) error {
	if len(r) < 8+1 {
		return fmt.Errorf("%w: the inner message is truncated (%d bytes after the keys)", ErrMalformed, len(r))
	}
	m.SentAt = time.UnixMilli(int64(binary.BigEndian.Uint64(r))).UTC()
	r = r[8:]
	kl := int(r[0])
	r = r[1:]
	if kl == 0 || kl > maxKind || len(r) < kl+1+4 {
		return fmt.Errorf("%w: bad kind length %d", ErrMalformed, kl)
	}
	m.Kind = Kind(r[:kl])
	r = r[kl:]
	switch r[0] {
	case 0:
		r = r[1:]
	case 1:
		if len(r) < 1+idLen+4 {
			return fmt.Errorf("%w: the reference is truncated", ErrMalformed)
		}
		copy(m.Ref[:], r[1:1+idLen])
		if m.Ref.IsZero() {
			return fmt.Errorf("%w: a present reference must not be the zero ID", ErrMalformed)
		}
		r = r[1+idLen:]
	default:
		return fmt.Errorf("%w: reference flag %d (want 0 or 1)", ErrMalformed, r[0])
	}
	bl := binary.BigEndian.Uint32(r)
	r = r[4:]
	if bl > uint32(maxBodyOf(m.Kind)) {
		return fmt.Errorf("%w: the body is %d bytes, at most %d allowed", ErrTooLarge, bl, maxBodyOf(m.Kind))
	}
	if uint32(len(r)) != bl {
		return fmt.Errorf("%w: body length %d does not match the %d bytes that follow", ErrMalformed, bl, len(r))
	}
	m.Body = r
	return m.validate()
}

// validate checks the rules every inner message keeps, on both sides.
func (m *Message) validate() error {
	if m.ID.IsZero() {
		return fmt.Errorf("%w: the message ID is zero", ErrMalformed)
	}
	if err := m.Kind.check(); err != nil {
		return err
	}
	if len(m.Body) > maxBodyOf(m.Kind) {
		return fmt.Errorf("%w: the body is %d bytes, at most %d allowed", ErrTooLarge, len(m.Body), maxBodyOf(m.Kind))
	}
	switch m.Kind {
	case KindText:
		if !utf8.Valid(m.Body) {
			return fmt.Errorf("%w: a text body must be UTF-8", ErrMalformed)
		}
	case KindReceipt:
		if m.Ref.IsZero() {
			return fmt.Errorf("%w: a receipt must refer to a message ID", ErrMalformed)
		}
	}
	return nil
}

// check reports whether k is a well-formed kind: 1 to 32 bytes of a-z, 0-9,
// '.', '_' or '-', starting with a letter.
func (k Kind) check() error {
	if len(k) == 0 || len(k) > maxKind {
		return fmt.Errorf("%w: a kind must be 1 to %d bytes, got %d", ErrMalformed, maxKind, len(k))
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		letter := c >= 'a' && c <= 'z'
		if !(letter || i > 0 && (c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-')) {
			return fmt.Errorf("%w: kind %q must be lower-case letters, digits, '.', '_' or '-', starting with a letter", ErrMalformed, string(k))
		}
	}
	return nil
}
