package format

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// EncryptReader reads the encryption of a plaintext file under a file key
// at any offset, encrypting only the segments a read touches. The STREAM
// construction is deterministic for a given key and plaintext, so a private
// share needs no encrypted copy on disk: the owner serves ciphertext
// straight from the original file, and the bytes are those [Encrypt] would
// write. It is safe for concurrent use if the underlying ReaderAt is.
type EncryptReader struct {
	src  io.ReaderAt
	a    cipher.AEAD
	size int64 // plaintext
	enc  int64
	nseg int64
}

var segBufs = sync.Pool{New: func() any { b := make([]byte, EncSegmentSize); return &b }}

// NewEncryptReader returns a reader of the encryption under key of the
// size plaintext bytes src holds.
func NewEncryptReader(src io.ReaderAt, size int64, key FileKey) (*EncryptReader, error) {
	if size < 0 || size > MaxBlobSize {
		return nil, fmt.Errorf("files: plaintext size %d is outside 0..%d", size, int64(MaxBlobSize))
	}
	return &EncryptReader{src: src, a: key.aead(), size: size, enc: EncryptedSize(size), nseg: numSegments(size)}, nil
}

// Size returns the size of the encrypted file, [EncryptedSize] of the
// plaintext's.
func (r *EncryptReader) Size() int64 { return r.enc }

// ReadAt implements io.ReaderAt over the encrypted file. A plaintext that
// is shorter than announced gives an error wrapping io.ErrUnexpectedEOF.
func (r *EncryptReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("files: negative offset")
	}
	if off >= r.enc {
		return 0, io.EOF
	}
	bp := segBufs.Get().(*[]byte)
	defer segBufs.Put(bp)
	buf := *bp
	var nonce [chacha20poly1305.NonceSize]byte
	n := 0
	for n < len(p) && off < r.enc {
		seg := off / EncSegmentSize
		plen := int(min(SegmentSize, r.size-seg*SegmentSize))
		if k, err := r.src.ReadAt(buf[:plen], seg*SegmentSize); k < plen {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, fmt.Errorf("files: reading the file to encrypt at %d: %w", seg*SegmentSize, err)
		}
		segmentNonce(&nonce, uint64(seg), seg == r.nseg-1)
		ct := r.a.Seal(buf[:0], nonce[:], buf[:plen], nil)
		k := copy(p[n:], ct[off-seg*EncSegmentSize:])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
