package session

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// The stored form of a session (docs/spec/session.md §11).
const (
	stateMagic   = "KEZS"
	stateVersion = 1

	flagInitiator   = 1 << 0
	flagEstablished = 1 << 1
	flagCKs         = 1 << 2
	flagCKr         = 1 << 3
	flagDHr         = 1 << 4
	flagsKnown      = flagInitiator | flagEstablished | flagCKs | flagCKr | flagDHr

	// stateFixedLen covers magic through prefix_len.
	stateFixedLen   = 4 + 1 + 1 + 3*keyLen + 6*keyLen + 3*4 + 2
	skippedEntryLen = keyLen + 4 + keyLen + 8
)

// MarshalBinary returns the session's state, secrets included, for its
// owner's database. [ParseSession] reads it back.
func (s *Session) MarshalBinary() ([]byte, error) {
	b := make([]byte, 0, stateFixedLen+len(s.prefix)+2+len(s.earlier)*keyLen+2+len(s.skipped)*skippedEntryLen)
	b = append(b, stateMagic...)
	var flags byte
	for _, f := range []struct {
		on  bool
		bit byte
	}{{s.initiator, flagInitiator}, {s.established, flagEstablished}, {s.hasCKs, flagCKs}, {s.hasCKr, flagCKr}, {s.hasDHr, flagDHr}} {
		if f.on {
			flags |= f.bit
		}
	}
	b = append(b, stateVersion, flags)
	for _, k := range [][]byte{s.me[:], s.peer[:], s.hsHash[:], s.dhsPriv[:], s.dhsPub[:], s.dhr[:], s.rk[:], s.cks[:], s.ckr[:]} {
		b = append(b, k...)
	}
	b = binary.BigEndian.AppendUint32(b, s.ns)
	b = binary.BigEndian.AppendUint32(b, s.nr)
	b = binary.BigEndian.AppendUint32(b, s.pn)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.prefix)))
	b = append(b, s.prefix...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.earlier)))
	for i := range s.earlier {
		b = append(b, s.earlier[i][:]...)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.skipped)))
	for i := range s.skipped {
		k := &s.skipped[i]
		b = append(b, k.dh[:]...)
		b = binary.BigEndian.AppendUint32(b, k.n)
		b = append(b, k.mk[:]...)
		b = binary.BigEndian.AppendUint64(b, uint64(k.at))
	}
	return b, nil
}

// ParseSession reads a session stored by [Session.MarshalBinary]. It
// refuses (ErrMalformed) anything but the exact layout of a consistent
// state.
func ParseSession(b []byte) (*Session, error) {
	bad := func(what string) (*Session, error) {
		return nil, fmt.Errorf("%w: session state: %s", ErrMalformed, what)
	}
	if len(b) < stateFixedLen || string(b[:4]) != stateMagic {
		return bad("not a stored session")
	}
	if b[4] != stateVersion {
		return bad(fmt.Sprintf("version %d", b[4]))
	}
	flags := b[5]
	if flags&^flagsKnown != 0 {
		return bad(fmt.Sprintf("unknown flags 0x%02x", flags))
	}
	s := &Session{
		initiator: flags&flagInitiator != 0, established: flags&flagEstablished != 0,
		hasCKs: flags&flagCKs != 0, hasCKr: flags&flagCKr != 0, hasDHr: flags&flagDHr != 0,
	}
	r := b[6:]
	for _, k := range [][]byte{s.me[:], s.peer[:], s.hsHash[:], s.dhsPriv[:], s.dhsPub[:], s.dhr[:], s.rk[:], s.cks[:], s.ckr[:]} {
		r = r[copy(k, r):]
	}
	s.ns = binary.BigEndian.Uint32(r)
	s.nr = binary.BigEndian.Uint32(r[4:])
	s.pn = binary.BigEndian.Uint32(r[8:])
	pl := int(binary.BigEndian.Uint16(r[12:]))
	r = r[14:]

	switch {
	case pl != 0 && pl != hybridSuite.prefixLen():
		return bad(fmt.Sprintf("handshake prefix of %d bytes", pl))
	case pl != 0 && (!s.initiator || s.established):
		return bad("a handshake prefix kept by a responder or an established session")
	case pl == 0 && s.initiator && !s.established:
		return bad("an initiator that is not established has no handshake prefix")
	case !s.hasDHr:
		return bad("no peer ratchet key")
	case !s.hasCKs && s.ns != 0:
		return bad("messages counted on an absent sending chain")
	case !s.hasCKr && s.nr != 0:
		return bad("messages counted on an absent receiving chain")
	case !s.hasCKs && !s.hasCKr:
		return bad("neither chain")
	}
	for _, f := range []struct {
		present bool
		k       []byte
	}{{s.hasCKs, s.cks[:]}, {s.hasCKr, s.ckr[:]}, {s.hasDHr, s.dhr[:]}} {
		if !f.present && !isZero(f.k) {
			return bad("a field flagged absent is not zero")
		}
	}
	if len(r) < pl+2 {
		return bad("cut in the handshake prefix")
	}
	if pl != 0 {
		if h := sha256.Sum256(r[:pl]); !hmac.Equal(h[:], s.hsHash[:]) {
			return bad("the handshake prefix does not match the session ID")
		}
		if string(r[offSender:offRecipient]) != string(s.me[:]) || string(r[offRecipient:offRecipient+keyLen]) != string(s.peer[:]) {
			return bad("the handshake prefix names other keys")
		}
		s.prefix = append([]byte(nil), r[:pl]...)
	}
	r = r[pl:]
	h := int(binary.BigEndian.Uint16(r))
	r = r[2:]
	if h > maxEarlierDHr || len(r) < h*keyLen+2 {
		return bad(fmt.Sprintf("%d earlier ratchet keys", h))
	}
	if h > 0 {
		s.earlier = make([][keyLen]byte, h)
		for i := range s.earlier {
			r = r[copy(s.earlier[i][:], r):]
		}
	}
	k := int(binary.BigEndian.Uint16(r))
	r = r[2:]
	if k > MaxSkippedKeys || len(r) != k*skippedEntryLen {
		return bad(fmt.Sprintf("%d skipped keys in %d bytes", k, len(r)))
	}
	if k > 0 {
		s.skipped = make([]skippedKey, k)
		for i := range s.skipped {
			e := &s.skipped[i]
			r = r[copy(e.dh[:], r):]
			e.n = binary.BigEndian.Uint32(r)
			r = r[4+copy(e.mk[:], r[4:]):]
			e.at = int64(binary.BigEndian.Uint64(r))
			r = r[8:]
		}
	}
	return s, nil
}

func isZero(b []byte) bool {
	var acc byte
	for _, c := range b {
		acc |= c
	}
	return acc == 0
}
