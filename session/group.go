package session

import (
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/kez-lat/kez-chat/kez"
)

// The group envelope, format version 3 (docs/spec/senderkeys.md §5): one
// ciphertext for every member of a group, sealed with the sender's sender
// key ([SenderKey]) and signed with that sender key's signing key.
const (
	// GroupVersion is the format version of a group envelope.
	GroupVersion uint8 = 3
	// TypeGroupMessage is the only envelope type of format version 3.
	TypeGroupMessage uint8 = 1

	// GroupHeaderLen is the length of a group envelope's cleartext
	// header, magic through iteration; it is also the AEAD's associated
	// data.
	GroupHeaderLen = offGroupCT // 82
	// MaxGroupPlaintextSize is the largest plaintext a group envelope of
	// at most [MaxEnvelopeSize] bytes carries.
	MaxGroupPlaintextSize = MaxEnvelopeSize - groupMinLen

	// MaxSenderKeySkip bounds how far ahead of the next expected
	// iteration a group message may be, and how many skipped message keys
	// a [ReceiverKey] keeps (the lowest iterations are dropped first).
	MaxSenderKeySkip = 2000
)

const (
	groupVersion = GroupVersion

	offGroupGID       = 6
	offGroupEpoch     = offGroupGID + 32             // 38
	offGroupDevice    = offGroupEpoch + 8            // 46
	offGroupIteration = offGroupDevice + keyLen      // 78
	offGroupCT        = offGroupIteration + 4        // 82
	groupMinLen       = offGroupCT + tagLen + sigLen // 162

	groupMessageInfo = "kez/v3 sender key message" // HKDF info of the AEAD key and nonce
	groupSigContext  = "kez/v3 group message"      // the envelope signature's context
	groupAEADLen     = chacha20poly1305.KeySize + chacha20poly1305.NonceSize
)

// GroupHeader is the cleartext header of a group envelope, read by
// [ParseGroupHeader] without any key.
type GroupHeader struct {
	// GID names the group: the SHA-256 digest of its membership chain's
	// first link (docs/spec/group.md).
	GID [32]byte
	// Epoch is the membership epoch the sender key belongs to.
	Epoch uint64
	// Device is the sending device's key.
	Device kez.PublicKey
	// Iteration is the message's index in its sender key's chain.
	Iteration uint32
}

// ParseGroupHeader reads the cleartext header of a version-3 envelope and
// checks its structure (docs/spec/senderkeys.md §7, checks 1–5) without
// any key: to find the group and the receiver key that opens it. Errors
// wrap [ErrTooLarge], [ErrMalformed] or [ErrUnsupportedVersion].
func ParseGroupHeader(envelope []byte) (GroupHeader, error) {
	b := envelope
	if len(b) > MaxEnvelopeSize {
		return GroupHeader{}, fmt.Errorf("%w: %d bytes, at most %d allowed", ErrTooLarge, len(b), MaxEnvelopeSize)
	}
	if len(b) < offGroupGID || string(b[:4]) != magic {
		return GroupHeader{}, fmt.Errorf("%w: not a KEZ envelope", ErrMalformed)
	}
	if b[4] != groupVersion {
		return GroupHeader{}, fmt.Errorf("%w: version %d, want %d", ErrUnsupportedVersion, b[4], groupVersion)
	}
	if b[5] != TypeGroupMessage {
		return GroupHeader{}, fmt.Errorf("%w: group envelope type %d", ErrUnsupportedVersion, b[5])
	}
	if len(b) < groupMinLen {
		return GroupHeader{}, fmt.Errorf("%w: group envelope of %d bytes, at least %d needed", ErrMalformed, len(b), groupMinLen)
	}
	var h GroupHeader
	copy(h.GID[:], b[offGroupGID:])
	h.Epoch = binary.BigEndian.Uint64(b[offGroupEpoch:])
	copy(h.Device[:], b[offGroupDevice:])
	h.Iteration = binary.BigEndian.Uint32(b[offGroupIteration:])
	if h.Iteration == math.MaxUint32 {
		return GroupHeader{}, fmt.Errorf("%w: iteration %d is never used", ErrMalformed, h.Iteration)
	}
	return h, nil
}

// appendGroupHeader appends the envelope header, magic through iteration.
func appendGroupHeader(b []byte, gid *[32]byte, epoch uint64, device kez.PublicKey, iteration uint32) []byte {
	b = append(b, magic...)
	b = append(b, groupVersion, TypeGroupMessage)
	b = append(b, gid[:]...)
	b = binary.BigEndian.AppendUint64(b, epoch)
	b = append(b, device[:]...)
	return binary.BigEndian.AppendUint32(b, iteration)
}

// groupAEAD derives the AEAD key and nonce of one group message from its
// message key: HKDF-SHA256(ikm = mk, salt = none, info = "kez/v3 sender
// key message"), 44 bytes, the key then the nonce.
func groupAEAD(mk *[keyLen]byte) (aead cipher.AEAD, nonce []byte) {
	okm, err := hkdf.Key(sha256.New, mk[:], nil, groupMessageInfo, groupAEADLen)
	if err != nil {
		panic("session: HKDF: " + err.Error()) // only for lengths over 255*32
	}
	a, err := chacha20poly1305.New(okm[:chacha20poly1305.KeySize])
	if err != nil {
		panic("session: ChaCha20-Poly1305: " + err.Error())
	}
	nonce = okm[chacha20poly1305.KeySize:]
	clear(okm[:chacha20poly1305.KeySize])
	return a, nonce
}

// signGroup appends the signature of the envelope so far.
func signGroup(priv ed25519.PrivateKey, env []byte) []byte {
	m, err := kez.SignedMessage(groupSigContext, env)
	if err != nil {
		panic("session: " + err.Error()) // the context is a valid constant
	}
	return append(env, ed25519.Sign(priv, m)...)
}
