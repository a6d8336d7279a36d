package format

import (
	"crypto/cipher"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// SegmentOpener decrypts an encrypted file one segment at a time, for a
// reader that receives the file in order and decrypts it as it arrives (a
// fetch that never stores the ciphertext). Segment i is the encrypted
// bytes [i*EncSegmentSize, i*EncSegmentSize+SegmentLen(i)) of the file.
// It is not safe for concurrent use.
type SegmentOpener struct {
	a     cipher.AEAD
	enc   int64
	nseg  int64
	nonce [chacha20poly1305.NonceSize]byte
}

// NewSegmentOpener returns an opener of the segments of an encrypted file
// of encSize bytes under key, or an error wrapping [ErrDecrypt] if no
// plaintext encrypts to that size.
func NewSegmentOpener(key FileKey, encSize int64) (*SegmentOpener, error) {
	plain, err := PlaintextSize(encSize)
	if err != nil {
		return nil, err
	}
	return &SegmentOpener{a: key.aead(), enc: encSize, nseg: numSegments(plain)}, nil
}

// NumSegments returns how many segments the file has.
func (o *SegmentOpener) NumSegments() int64 { return o.nseg }

// SegmentLen returns the encrypted length of segment i.
func (o *SegmentOpener) SegmentLen(i int64) int {
	return int(min(EncSegmentSize, o.enc-i*EncSegmentSize))
}

// Open authenticates and decrypts segment i, the SegmentLen(i) bytes of
// seg, in place, and returns the plaintext (a prefix of seg). A segment
// that does not authenticate under the key is an error wrapping
// [ErrDecrypt], and seg's contents are then unspecified.
func (o *SegmentOpener) Open(seg []byte, i int64) ([]byte, error) {
	if i < 0 || i >= o.nseg || len(seg) != o.SegmentLen(i) {
		return nil, fmt.Errorf("%w: segment %d of %d bytes", ErrDecrypt, i, len(seg))
	}
	segmentNonce(&o.nonce, uint64(i), i == o.nseg-1)
	pt, err := o.a.Open(seg[:0], o.nonce[:], seg, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: segment %d", ErrDecrypt, i)
	}
	return pt, nil
}
