package session

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"

	"golang.org/x/crypto/chacha20poly1305"
)

// The Double Ratchet's key derivations (docs/spec/session.md §5).

// kdfRK is KDF_RK: HKDF-SHA256 with the root key as salt and the DH output
// as input keying material; it returns the next root key and a chain key.
func kdfRK(rk *[keyLen]byte, dh []byte) (nextRK, ck [keyLen]byte) {
	out, err := hkdf.Key(sha256.New, dh, rk[:], ratchetInfo, 2*keyLen)
	if err != nil {
		panic("session: HKDF: " + err.Error()) // only for lengths over 255*32
	}
	copy(nextRK[:], out)
	copy(ck[:], out[keyLen:])
	clear(out)
	return nextRK, ck
}

// kdfCK is KDF_CK: the next chain key is HMAC(ck, 0x02), the message key
// HMAC(ck, 0x01).
func kdfCK(ck *[keyLen]byte) (next, mk [keyLen]byte) {
	var out [2 * keyLen]byte // one buffer for both sums: one allocation, not two
	h := hmac.New(sha256.New, ck[:])
	h.Write(ckMessage)
	h.Sum(out[:0])
	h.Reset()
	h.Write(ckChain)
	h.Sum(out[:keyLen])
	copy(mk[:], out[:keyLen])
	copy(next[:], out[keyLen:])
	clear(out[:])
	return next, mk
}

// The KDF_CK inputs.
var ckMessage, ckChain = []byte{1}, []byte{2}

// messageNonce is the nonce of every message: each message key seals
// exactly one message (docs/spec/session.md §5).
var messageNonce [chacha20poly1305.NonceSize]byte

// messageAEAD is the ChaCha20-Poly1305 instance keyed with the message key
// mk itself; it seals exactly one message, with [messageNonce].
func messageAEAD(mk *[keyLen]byte) cipher.AEAD {
	a, err := chacha20poly1305.New(mk[:])
	if err != nil {
		panic("session: ChaCha20-Poly1305: " + err.Error()) // only for a wrong key size
	}
	return a
}

// appendAssociatedData appends the AEAD's associated data to ad: the label,
// both primary keys and the message header.
func appendAssociatedData(ad, sender, recipient, header []byte) []byte {
	ad = append(ad, adLabel...)
	ad = append(ad, sender...)
	ad = append(ad, recipient...)
	return append(ad, header...)
}

// adLen is the length of the associated data before the header.
const adLen = len(adLabel) + 2*keyLen
