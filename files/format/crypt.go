package format

import (
	"bufio"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/crypto/chacha20poly1305"
)

// Private files are encrypted with the STREAM construction (as in age):
// the plaintext is cut into SegmentSize segments, each sealed with
// ChaCha20-Poly1305 under a key derived from the file key, with a nonce of
// an 11-byte big-endian segment counter and a final-segment flag byte.
// Segments are independent, so any range can be decrypted alone.
// docs/spec/manifest.md, "Encrypted files".
const (
	// SegmentSize is the plaintext size of every segment but the last.
	SegmentSize = 64 << 10
	// SegmentOverhead is the AEAD tag added to each segment.
	SegmentOverhead = chacha20poly1305.Overhead

	// EncSegmentSize is the size of every segment of an encrypted file
	// but the last: [SegmentSize] bytes of plaintext and the AEAD tag.
	EncSegmentSize = SegmentSize + SegmentOverhead

	payloadKeyLabel = "kez/v1 private file payload"
)

// PartialSuffix is appended to the name of a file being written (by
// [DecryptFile], or by a fetch in package files) until it is complete and
// renamed into place.
const PartialSuffix = ".kez-partial"

// FileKey is the fresh symmetric key of one private file.
type FileKey [32]byte

// ErrDecrypt reports an encrypted file that does not decrypt with the key:
// the wrong key, or bytes that were changed, truncated or reordered.
var ErrDecrypt = errors.New("files: the encrypted file does not decrypt with this key (wrong key, or damaged or truncated data)")

// NewFileKey returns a random file key.
func NewFileKey() (FileKey, error) {
	var k FileKey
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("files: reading randomness: %w", err)
	}
	return k, nil
}

func (k FileKey) aead() cipher.AEAD {
	pk, err := hkdf.Key(sha256.New, k[:], nil, payloadKeyLabel, chacha20poly1305.KeySize)
	if err != nil {
		panic("files: hkdf: " + err.Error()) // unreachable: 32 bytes of SHA-256 HKDF
	}
	a, err := chacha20poly1305.New(pk)
	if err != nil {
		panic("files: chacha20poly1305: " + err.Error()) // unreachable: right key size
	}
	return a
}

func segmentNonce(n *[chacha20poly1305.NonceSize]byte, counter uint64, last bool) {
	*n = [chacha20poly1305.NonceSize]byte{}
	binary.BigEndian.PutUint64(n[3:11], counter)
	if last {
		n[11] = 1
	}
}

func numSegments(plain int64) int64 {
	if plain <= 0 {
		return 1
	}
	return (plain + SegmentSize - 1) / SegmentSize
}

// EncryptedSize returns the size of the encryption of plain bytes.
func EncryptedSize(plain int64) int64 {
	return plain + numSegments(plain)*SegmentOverhead
}

// PlaintextSize returns the plaintext size of an encrypted file of enc
// bytes, or an error if no plaintext encrypts to that size.
func PlaintextSize(enc int64) (int64, error) {
	if enc < SegmentOverhead || enc > MaxBlobSize {
		return 0, fmt.Errorf("%w: %d bytes is not the size of an encrypted file", ErrDecrypt, enc)
	}
	nseg := (enc + EncSegmentSize - 1) / EncSegmentSize
	last := enc - (nseg-1)*EncSegmentSize
	if last == SegmentOverhead && nseg > 1 {
		return 0, fmt.Errorf("%w: %d bytes is not the size of an encrypted file", ErrDecrypt, enc)
	}
	return enc - nseg*SegmentOverhead, nil
}

// Encrypt encrypts everything src holds to dst under key and returns the
// number of plaintext bytes read.
func Encrypt(dst io.Writer, src io.Reader, key FileKey) (int64, error) {
	a := key.aead()
	buf := make([]byte, SegmentSize+1, EncSegmentSize+1) // one byte of look-ahead
	var nonce [chacha20poly1305.NonceSize]byte
	var total int64
	n, err := io.ReadFull(src, buf[:SegmentSize+1])
	for counter := uint64(0); ; counter++ {
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			return total, fmt.Errorf("files: reading the file to encrypt: %w", err)
		}
		last := n <= SegmentSize
		seg := min(n, SegmentSize)
		if total += int64(seg); total > MaxBlobSize {
			return total, fmt.Errorf("files: the file is larger than %d bytes", int64(MaxBlobSize))
		}
		segmentNonce(&nonce, counter, last)
		extra := buf[SegmentSize] // the look-ahead byte, sealed next time
		out := a.Seal(buf[:0], nonce[:], buf[:seg], nil)
		if _, werr := dst.Write(out); werr != nil {
			return total, fmt.Errorf("files: writing the encrypted file: %w", werr)
		}
		if last {
			return total, nil
		}
		buf = buf[:SegmentSize+1]
		buf[0] = extra
		n, err = io.ReadFull(src, buf[1:SegmentSize+1])
		n++
	}
}

// Decrypt decrypts the encrypted file src holds to dst and returns the
// number of plaintext bytes written. Each segment is authenticated before
// it is written; a damaged, truncated or extended file returns an error
// wrapping [ErrDecrypt], after writing the segments before the damage.
func Decrypt(dst io.Writer, src io.Reader, key FileKey) (int64, error) {
	a := key.aead()
	br := bufio.NewReaderSize(src, EncSegmentSize+1)
	buf := make([]byte, EncSegmentSize)
	var nonce [chacha20poly1305.NonceSize]byte
	var total int64
	for counter := uint64(0); ; counter++ {
		n, err := io.ReadFull(br, buf)
		if err != nil && err != io.ErrUnexpectedEOF && !(err == io.EOF && counter == 0) {
			if err == io.EOF {
				return total, fmt.Errorf("%w: the file ends without its final segment", ErrDecrypt)
			}
			return total, fmt.Errorf("files: reading the encrypted file: %w", err)
		}
		last := n < EncSegmentSize
		if !last {
			if _, perr := br.Peek(1); perr == io.EOF {
				last = true
			}
		}
		segmentNonce(&nonce, counter, last)
		pt, oerr := a.Open(buf[:0], nonce[:], buf[:n], nil)
		if oerr != nil || last && len(pt) == 0 && counter > 0 {
			return total, fmt.Errorf("%w: segment %d", ErrDecrypt, counter)
		}
		if _, werr := dst.Write(pt); werr != nil {
			return total, fmt.Errorf("files: writing the decrypted file: %w", werr)
		}
		total += int64(len(pt))
		if last {
			return total, nil
		}
	}
}

// DecryptReader reads the plaintext of an encrypted file at any offset,
// decrypting and authenticating only the segments a read touches (for a
// file fetched in part, or streamed). It is safe for concurrent use if the
// underlying ReaderAt is.
type DecryptReader struct {
	src  io.ReaderAt
	a    cipher.AEAD
	enc  int64
	size int64
	nseg int64
}

// NewDecryptReader returns a reader of the plaintext of the encrypted file
// of encSize bytes that src holds. It authenticates the final segment first,
// so that Size is trustworthy.
func NewDecryptReader(src io.ReaderAt, encSize int64, key FileKey) (*DecryptReader, error) {
	size, err := PlaintextSize(encSize)
	if err != nil {
		return nil, err
	}
	r := &DecryptReader{src: src, a: key.aead(), enc: encSize, size: size, nseg: numSegments(size)}
	buf := make([]byte, EncSegmentSize)
	if _, err := r.segment(buf, r.nseg-1); err != nil {
		return nil, err
	}
	return r, nil
}

// Size returns the plaintext size.
func (r *DecryptReader) Size() int64 { return r.size }

// segment decrypts segment i into buf (of EncSegmentSize bytes).
func (r *DecryptReader) segment(buf []byte, i int64) ([]byte, error) {
	off := i * EncSegmentSize
	n := min(int64(EncSegmentSize), r.enc-off)
	if k, err := r.src.ReadAt(buf[:n], off); int64(k) < n {
		return nil, fmt.Errorf("files: reading the encrypted file: %w", err)
	}
	var nonce [chacha20poly1305.NonceSize]byte
	segmentNonce(&nonce, uint64(i), i == r.nseg-1)
	pt, err := r.a.Open(buf[:0], nonce[:], buf[:n], nil)
	if err != nil {
		return nil, fmt.Errorf("%w: segment %d", ErrDecrypt, i)
	}
	return pt, nil
}

// ReadAt implements io.ReaderAt over the plaintext.
func (r *DecryptReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("files: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	buf := make([]byte, EncSegmentSize)
	n := 0
	for n < len(p) && off < r.size {
		seg := off / SegmentSize
		pt, err := r.segment(buf, seg)
		if err != nil {
			return n, err
		}
		k := copy(p[n:], pt[off-seg*SegmentSize:])
		n += k
		off += int64(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// EncryptFile encrypts the file at src to a new file at dst (mode 0600)
// under a fresh key, which it returns with the plaintext size.
func EncryptFile(dst, src string) (FileKey, int64, error) {
	key, err := NewFileKey()
	if err != nil {
		return key, 0, err
	}
	in, err := os.Open(src)
	if err != nil {
		return key, 0, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return key, 0, err
	}
	bw := bufio.NewWriterSize(out, 4*EncSegmentSize)
	n, err := Encrypt(bw, in, key)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(dst)
		return key, 0, err
	}
	return key, n, nil
}

// DecryptFile decrypts the encrypted file at src to dst, writing dst only
// if every segment authenticates (via a temporary file renamed into place).
func DecryptFile(dst, src string, key FileKey) (int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	tmp := dst + PartialSuffix
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(out, 4*SegmentSize)
	n, err := Decrypt(bw, in, key)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, err
	}
	return n, nil
}
