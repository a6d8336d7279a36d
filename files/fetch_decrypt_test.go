package files

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/files/format"
)

// privateBlob is an encrypted file served by an owner, and its plaintext.
type privateBlob struct {
	pair
	plain string
	key   format.FileKey
	size  int64 // plaintext
	tree  *format.Tree
}

func newPrivateBlob(t *testing.T, size int64) privateBlob {
	t.Helper()
	p := newPair(t, "tcp", nil)
	plain := writePattern(t, p.dir, "plain", size)
	enc := filepath.Join(p.dir, "enc")
	key, n, err := format.EncryptFile(enc, plain)
	must(t, err)
	tree, err := p.src.AddFile(enc)
	must(t, err)
	return privateBlob{pair: p, plain: plain, key: key, size: n, tree: tree}
}

func (b privateBlob) fetch(ctx context.Context, dst string, opts ...FetchOption) error {
	return b.fetcher.Fetch(ctx, b.owner.AddrInfo(), b.tree.CID(), dst, append(opts, WithDecryption(b.key, b.size))...)
}

// The plaintext lands at dst, decrypted as it streams: no ciphertext file,
// whatever the sizes of the segments and chunks.
func TestFetchDecrypting(t *testing.T) {
	for _, size := range []int64{0, 1, format.SegmentSize - 1, format.SegmentSize, format.ChunkSize,
		format.ChunkSize + 1, 3*format.ChunkSize + 12345, 64*format.SegmentSize + 3} {
		b := newPrivateBlob(t, size)
		dst := filepath.Join(b.dir, "dst")
		var last, total int64
		must(t, b.fetch(context.Background(), dst, WithProgress(func(v, tot int64) { last, total = v, tot })))
		sameFile(t, b.plain, dst)
		if enc := format.EncryptedSize(size); last != enc || total != enc {
			t.Errorf("size %d: progress ended at %d/%d, want the %d encrypted bytes", size, last, total, enc)
		}
		if ents, _ := os.ReadDir(b.dir); len(ents) != 3 {
			t.Errorf("size %d: the folder holds %d files, want plain, enc and dst", size, len(ents))
		}
	}
}

// An interrupted private fetch keeps plaintext of whole segments; the
// next one re-verifies it by encrypting it again and fetches the rest.
func TestFetchDecryptingResumes(t *testing.T) {
	const size = 16*format.ChunkSize + 777
	b := newPrivateBlob(t, size)
	dst := filepath.Join(b.dir, "dst")
	ctx, cancel := context.WithCancel(context.Background())
	err := b.fetch(ctx, dst, WithProgress(func(v, _ int64) {
		if v >= 5*format.ChunkSize {
			cancel()
		}
	}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	noFile(t, dst)
	// Five chunks verified: the segments they hold whole are decrypted.
	segs := int64(5*format.ChunkSize) / format.EncSegmentSize
	part, err := os.ReadFile(dst + PartialSuffix)
	must(t, err)
	if want := pattern(size)[:segs*format.SegmentSize]; !bytes.Equal(part, want) {
		t.Fatalf("the partial file holds %d bytes, want the %d of %d whole segments", len(part), len(want), segs)
	}
	kept := int(segs * format.EncSegmentSize / format.ChunkSize)
	before := b.owner.Stats().BytesServed
	first := int64(-1)
	must(t, b.fetch(context.Background(), dst, WithProgress(func(v, _ int64) {
		if first < 0 {
			first = v
		}
	})))
	sameFile(t, b.plain, dst)
	if first != int64(kept)*format.ChunkSize {
		t.Errorf("the resumed fetch started at %d, want %d", first, int64(kept)*format.ChunkSize)
	}
	if got, want := b.owner.Stats().BytesServed-before, format.EncryptedSize(size)-int64(kept)*format.ChunkSize; got != want {
		t.Errorf("the resumed fetch moved %d bytes, want %d", got, want)
	}
	noFile(t, dst+PartialSuffix)
	noFile(t, dst+StateSuffix)
}

// A damaged byte in the kept plaintext: the re-verification stops at the
// chunk whose encryption it changes, and that part is fetched again.
func TestFetchDecryptingDamagedPartial(t *testing.T) {
	const size = 16 * format.ChunkSize
	b := newPrivateBlob(t, size)
	dst := filepath.Join(b.dir, "dst")
	ctx, cancel := context.WithCancel(context.Background())
	if err := b.fetch(ctx, dst, WithProgress(func(v, _ int64) {
		if v >= 10*format.ChunkSize {
			cancel()
		}
	})); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	const seg = 20 // a segment the partial file holds, in chunk 5 of the ciphertext
	f, err := os.OpenFile(dst+PartialSuffix, os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt([]byte{0xee}, seg*format.SegmentSize+100)
	must(t, err)
	must(t, f.Close())
	first := int64(-1)
	must(t, b.fetch(context.Background(), dst, WithProgress(func(v, _ int64) {
		if first < 0 {
			first = v
		}
	})))
	sameFile(t, b.plain, dst)
	if want := seg * format.EncSegmentSize / format.ChunkSize * format.ChunkSize; first != int64(want) {
		t.Errorf("re-verified %d bytes, want %d (up to the damaged segment's first chunk)", first, want)
	}
}

// The wrong key: the first segment does not decrypt, and no plaintext, no
// partial file and no state file are left.
func TestFetchDecryptingWrongKey(t *testing.T) {
	b := newPrivateBlob(t, 3*format.ChunkSize)
	dst := filepath.Join(b.dir, "dst")
	b.key[0] ^= 1
	if err := b.fetch(context.Background(), dst); !errors.Is(err, format.ErrDecrypt) {
		t.Fatalf("err = %v, want format.ErrDecrypt", err)
	}
	noFile(t, dst)
	noFile(t, dst+PartialSuffix)
	noFile(t, dst+StateSuffix)
}

// A plaintext size that does not match the blob is refused as soon as the
// owner says the blob's size, before any chunk is kept.
func TestFetchDecryptingWrongSize(t *testing.T) {
	b := newPrivateBlob(t, 3*format.ChunkSize)
	dst := filepath.Join(b.dir, "dst")
	b.size++
	if err := b.fetch(context.Background(), dst); !errors.Is(err, format.ErrDecrypt) {
		t.Fatalf("err = %v, want format.ErrDecrypt", err)
	}
	noFile(t, dst)
	noFile(t, dst+PartialSuffix)
	b.size = -1
	if err := b.fetch(context.Background(), dst); !errors.Is(err, format.ErrDecrypt) {
		t.Fatalf("a negative size: %v", err)
	}
}

// Tampered ciphertext fails the chunk check, before it is decrypted: no
// plaintext of it is written.
func TestFetchDecryptingTampered(t *testing.T) {
	b := newPrivateBlob(t, 3*format.ChunkSize)
	f, err := os.OpenFile(filepath.Join(b.dir, "enc"), os.O_RDWR, 0)
	must(t, err)
	_, err = f.WriteAt([]byte{0xee}, 17)
	must(t, err)
	must(t, f.Close())
	dst := filepath.Join(b.dir, "dst")
	if err := b.fetch(context.Background(), dst); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("err = %v, want ErrCorrupt", err)
	}
	noFile(t, dst)
	noFile(t, dst+PartialSuffix)
	noFile(t, dst+StateSuffix)
}
