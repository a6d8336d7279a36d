package format

import (
	"bytes"
	"errors"
	"io"
	mrand "math/rand/v2"
	"testing"
)

// The encrypting reader gives, at every offset, the bytes Encrypt writes.
func TestEncryptReaderMatchesEncrypt(t *testing.T) {
	rnd := mrand.New(mrand.NewPCG(1, 2))
	key := FileKey{7}
	for _, size := range []int64{0, 1, SegmentSize - 1, SegmentSize, SegmentSize + 1, 3*SegmentSize + 17, ChunkSize * 2} {
		plain := make([]byte, size)
		for i := range plain {
			plain[i] = byte(rnd.Uint32())
		}
		var want bytes.Buffer
		if _, err := Encrypt(&want, bytes.NewReader(plain), key); err != nil {
			t.Fatal(err)
		}
		r, err := NewEncryptReader(bytes.NewReader(plain), size, key)
		if err != nil {
			t.Fatal(err)
		}
		if r.Size() != int64(want.Len()) {
			t.Fatalf("size %d: Size %d, want %d", size, r.Size(), want.Len())
		}
		all := make([]byte, r.Size())
		if n, err := r.ReadAt(all, 0); n != len(all) || (err != nil && err != io.EOF) || !bytes.Equal(all, want.Bytes()) {
			t.Fatalf("size %d: whole read differs (%d, %v)", size, n, err)
		}
		for i := 0; i < 50; i++ {
			off := rnd.Int64N(r.Size() + 1)
			l := rnd.Int64N(r.Size() - off + 10)
			buf := make([]byte, l)
			n, err := r.ReadAt(buf, off)
			end := min(off+l, r.Size())
			if int64(n) != end-off || !bytes.Equal(buf[:n], want.Bytes()[off:end]) {
				t.Fatalf("size %d: ReadAt(%d, %d) = %d, %v", size, l, off, n, err)
			}
			if end < off+l && err != io.EOF {
				t.Fatalf("size %d: short read without io.EOF: %v", size, err)
			}
		}
		// The tree of the reader is the tree of the encrypted file.
		t1, err := HashReaderAt(r, r.Size())
		if err != nil {
			t.Fatal(err)
		}
		t2, _ := BuildTree(bytes.NewReader(want.Bytes()))
		if !t1.CID().Equals(t2.CID()) {
			t.Fatalf("size %d: CIDs differ", size)
		}
	}
	// A plaintext shorter than announced is an error, not zeros.
	r, _ := NewEncryptReader(bytes.NewReader(make([]byte, 10)), 100, key)
	if _, err := r.ReadAt(make([]byte, 50), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short source: %v", err)
	}
}

// BenchmarkEncryptReader compares serving a private file (encrypting on
// the fly) with reading the plaintext and with Encrypt's streaming speed.
func BenchmarkEncryptReader(b *testing.B) {
	const size = 16 << 20
	plain := bytes.Repeat([]byte{0x5a}, size)
	buf := make([]byte, 4*ChunkSize)
	b.Run("plain_readat", func(b *testing.B) {
		r := bytes.NewReader(plain)
		b.SetBytes(size)
		for b.Loop() {
			for off := int64(0); off < size; off += int64(len(buf)) {
				r.ReadAt(buf, off)
			}
		}
	})
	b.Run("encrypt_readat", func(b *testing.B) {
		r, _ := NewEncryptReader(bytes.NewReader(plain), size, FileKey{1})
		b.SetBytes(size)
		for b.Loop() {
			for off := int64(0); off < r.Size(); off += int64(len(buf)) {
				r.ReadAt(buf, off)
			}
		}
	})
	b.Run("encrypt_stream", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			Encrypt(io.Discard, bytes.NewReader(plain), FileKey{1})
		}
	})
}
