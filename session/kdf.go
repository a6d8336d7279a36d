package session

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"

	"golang.org/x/crypto/chacha20poly1305"
)

// The Double Ratchet's key derivations (docs/spec/session.md §5).

var zeroSalt [sha256.Size]byte

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
	h := hmac.New(sha256.New, ck[:])
	h.Write([]byte{1})
	h.Sum(mk[:0])
	h.Reset()
	h.Write([]byte{2})
	h.Sum(next[:0])
	return next, mk
}

// messageAEAD expands a message key into the ChaCha20-Poly1305 key and
// nonce that seal exactly one message.
func messageAEAD(mk *[keyLen]byte) (aead cipher.AEAD, nonce []byte) {
	out, err := hkdf.Key(sha256.New, mk[:], zeroSalt[:], messageInfo, chacha20poly1305.KeySize+chacha20poly1305.NonceSize)
	if err != nil {
		panic("session: HKDF: " + err.Error())
	}
	a, err := chacha20poly1305.New(out[:chacha20poly1305.KeySize])
	if err != nil {
		panic("session: ChaCha20-Poly1305: " + err.Error()) // only for a wrong key size
	}
	clear(out[:chacha20poly1305.KeySize])
	return a, out[chacha20poly1305.KeySize:]
}

// associatedData is the AEAD's associated data: the label, both primary
// keys and the message header.
func associatedData(sender, recipient, header []byte) []byte {
	ad := make([]byte, 0, len(adLabel)+2*keyLen+len(header))
	ad = append(ad, adLabel...)
	ad = append(ad, sender...)
	ad = append(ad, recipient...)
	return append(ad, header...)
}
