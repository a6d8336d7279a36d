package format

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/bits"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// The content-addressing constants. They are part of the format
// (docs/spec/blobs.md): changing one changes every CID.
const (
	// ChunkSize is the size of every chunk of a blob but the last.
	ChunkSize = 256 << 10

	// MaxBlobSize bounds the size of a blob (1 TiB, 4 Mi chunks).
	MaxBlobSize = 1 << 40

	// BlobCodec is the multicodec of a KEZ blob CID, from the multicodec
	// private-use range. The CID's multihash is the SHA-256 of the blob's
	// 41-byte root block, which binds the size and the hash-tree root.
	BlobCodec = 0x306b62

	leafPrefix = 0x00 // leaf hash = SHA-256(0x00 || chunk)
	nodePrefix = 0x01 // node hash = SHA-256(0x01 || left || right)
	rootPrefix = 0x02 // root block = 0x02 || uint64be(size) || tree root

	rootBlockLen = 1 + 8 + HashSize

	// MaxChunks is the number of chunks of a blob of MaxBlobSize.
	MaxChunks = MaxBlobSize / ChunkSize
)

// HashSize is the size of a leaf or node hash.
const HashSize = sha256.Size

// Hash is a SHA-256 leaf or node hash of a blob's hash tree.
type Hash [HashSize]byte

// String returns the hash in lower-case hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ErrBadCID reports a CID that is not a KEZ blob CID.
var ErrBadCID = errors.New("files: not a KEZ blob CID (want CIDv1, codec 0x306b62, sha2-256)")

// ErrProof reports chunk data, leaf hashes or a proof that do not verify
// against a blob's CID and size.
var ErrProof = errors.New("files: the data does not match the blob's CID")

// NumChunks returns the number of chunks of a blob of the given size: an
// empty blob has one empty chunk.
func NumChunks(size int64) int {
	if size <= 0 {
		return 1
	}
	return int((size + ChunkSize - 1) / ChunkSize)
}

// ChunkLen returns the length of chunk i of a blob of the given size, or -1
// if i is out of range.
func ChunkLen(size int64, i int) int {
	n := NumChunks(size)
	if i < 0 || i >= n {
		return -1
	}
	if i < n-1 {
		return ChunkSize
	}
	return int(size - int64(n-1)*ChunkSize)
}

// LeafHash returns the leaf hash of one chunk: SHA-256(0x00 || chunk).
func LeafHash(chunk []byte) Hash { return NewLeafHasher().Sum(chunk) }

var leafPrefixBytes = []byte{leafPrefix}

// LeafHasher computes leaf hashes with one reusable SHA-256 state, so the
// hot path does not allocate. It is not safe for concurrent use.
type LeafHasher struct{ h hash.Hash }

// NewLeafHasher returns a LeafHasher with its own SHA-256 state.
func NewLeafHasher() LeafHasher { return LeafHasher{sha256.New()} }

// Sum returns the leaf hash of chunk, as [LeafHash] does.
func (l LeafHasher) Sum(chunk []byte) Hash {
	l.h.Reset()
	l.h.Write(leafPrefixBytes)
	l.h.Write(chunk)
	var out Hash
	l.h.Sum(out[:0])
	return out
}

// nodeHash returns SHA-256(0x01 || left || right) without allocating.
func nodeHash(l, r *Hash) Hash {
	var b [1 + 2*HashSize]byte
	b[0] = nodePrefix
	copy(b[1:], l[:])
	copy(b[1+HashSize:], r[:])
	return sha256.Sum256(b[:])
}

// rootBlock returns the 41-byte block whose SHA-256 is the CID's digest.
func rootBlock(size int64, root Hash) [rootBlockLen]byte {
	var b [rootBlockLen]byte
	b[0] = rootPrefix
	binary.BigEndian.PutUint64(b[1:9], uint64(size))
	copy(b[9:], root[:])
	return b
}

// blobCID returns the CID of a blob from its size and tree root.
func blobCID(size int64, root Hash) cid.Cid {
	b := rootBlock(size, root)
	d := sha256.Sum256(b[:])
	m, _ := mh.Encode(d[:], mh.SHA2_256) // never fails
	return cid.NewCidV1(BlobCodec, m)
}

// cidDigest returns the SHA-256 digest inside a KEZ blob CID.
func cidDigest(c cid.Cid) (Hash, error) {
	var d Hash
	if !c.Defined() || c.Version() != 1 || c.Type() != BlobCodec {
		return d, ErrBadCID
	}
	dec, err := mh.Decode(c.Hash())
	if err != nil || dec.Code != mh.SHA2_256 || len(dec.Digest) != HashSize {
		return d, ErrBadCID
	}
	copy(d[:], dec.Digest)
	return d, nil
}

// CheckCID reports whether c is a KEZ blob CID; it returns nil or an error
// wrapping [ErrBadCID].
func CheckCID(c cid.Cid) error {
	_, err := cidDigest(c)
	return err
}

// ParseCID parses the text form of a KEZ blob CID and checks it.
func ParseCID(s string) (cid.Cid, error) {
	if len(s) > 128 {
		return cid.Undef, fmt.Errorf("%w: %d characters is too long", ErrBadCID, len(s))
	}
	c, err := cid.Decode(s)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %w", ErrBadCID, err)
	}
	if err := CheckCID(c); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// CastCID parses the binary form of a KEZ blob CID, insisting the bytes are
// the canonical encoding.
func CastCID(b []byte) (cid.Cid, error) {
	c, err := cid.Cast(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %w", ErrBadCID, err)
	}
	if err := CheckCID(c); err != nil {
		return cid.Undef, err
	}
	if !bytes.Equal(c.Bytes(), b) {
		return cid.Undef, fmt.Errorf("%w: not canonically encoded", ErrBadCID)
	}
	return c, nil
}

// split returns the size of the left subtree of a node over n > 1 leaves:
// the largest power of two strictly less than n (the RFC 6962 shape).
func split(n int) int {
	return 1 << (bits.Len(uint(n-1)) - 1)
}

// Tree is the hash tree of one blob: its size, leaf hashes and the hashes of
// every complete subtree, so that proofs cost O(log n) to produce. A Tree is
// immutable once built and safe for concurrent use.
type Tree struct {
	size   int64
	levels [][]Hash // levels[l][i] = hash of leaves [i<<l, (i+1)<<l)
	root   Hash
	cid    cid.Cid
}

// NewTree builds the tree of a blob of the given size from its leaf hashes
// (one per chunk, see [NumChunks] and [LeafHash]). It copies leaves.
func NewTree(size int64, leaves []Hash) (*Tree, error) {
	if size < 0 || size > MaxBlobSize {
		return nil, fmt.Errorf("files: blob size %d is outside 0..%d", size, int64(MaxBlobSize))
	}
	if len(leaves) != NumChunks(size) {
		return nil, fmt.Errorf("files: a blob of %d bytes has %d chunks, got %d leaf hashes", size, NumChunks(size), len(leaves))
	}
	t := &Tree{size: size}
	level := append([]Hash(nil), leaves...)
	t.levels = append(t.levels, level)
	for len(level) > 1 {
		next := make([]Hash, len(level)/2)
		for i := range next {
			next[i] = nodeHash(&level[2*i], &level[2*i+1])
		}
		t.levels = append(t.levels, next)
		level = next
	}
	t.root = t.node(0, len(leaves))
	t.cid = blobCID(size, t.root)
	return t, nil
}

// BuildTree reads a whole blob from r and returns its tree. It reads with a
// ChunkSize buffer and fails if r holds more than [MaxBlobSize] bytes.
func BuildTree(r io.Reader) (*Tree, error) {
	buf := make([]byte, ChunkSize)
	var leaves []Hash
	var size int64
	lh := NewLeafHasher()
	for {
		n, err := io.ReadFull(r, buf)
		if err == io.EOF { // nothing more
			if len(leaves) == 0 {
				leaves = append(leaves, lh.Sum(nil))
			}
			break
		}
		if err != nil && err != io.ErrUnexpectedEOF {
			return nil, fmt.Errorf("files: reading the blob: %w", err)
		}
		if size += int64(n); size > MaxBlobSize {
			return nil, fmt.Errorf("files: the blob is larger than %d bytes", int64(MaxBlobSize))
		}
		leaves = append(leaves, lh.Sum(buf[:n]))
		if err == io.ErrUnexpectedEOF {
			break
		}
	}
	return NewTree(size, leaves)
}

// Size returns the blob's size in bytes.
func (t *Tree) Size() int64 { return t.size }

// NumChunks returns the number of chunks (and leaf hashes).
func (t *Tree) NumChunks() int { return len(t.levels[0]) }

// CID returns the blob's content address.
func (t *Tree) CID() cid.Cid { return t.cid }

// Root returns the hash-tree root (not the CID digest, which hashes the
// root block that binds the size to this root).
func (t *Tree) Root() Hash { return t.root }

// Leaf returns the leaf hash of chunk i. It panics if i is out of range.
func (t *Tree) Leaf(i int) Hash { return t.levels[0][i] }

// Leaves returns the leaf hashes of chunks [start, end). The slice aliases
// the tree: do not modify it.
func (t *Tree) Leaves(start, end int) []Hash { return t.levels[0][start:end:end] }

// node returns the hash of the subtree over leaves [lo, hi), which must be
// a node of the tree's shape.
func (t *Tree) node(lo, hi int) Hash {
	n := hi - lo
	if n&(n-1) == 0 { // a complete subtree, stored
		return t.levels[bits.TrailingZeros(uint(n))][lo/n]
	}
	k := split(n)
	l, r := t.node(lo, lo+k), t.node(lo+k, hi)
	return nodeHash(&l, &r)
}

// Proof returns the sibling hashes that, with the leaf hashes of chunks
// [start, end), recompute the tree root (see [VerifyRange]). For one chunk
// it is the classic audit path, top-down.
func (t *Tree) Proof(start, end int) ([]Hash, error) {
	n := t.NumChunks()
	if start < 0 || end > n || start >= end {
		return nil, fmt.Errorf("files: chunk range [%d, %d) is outside the blob's %d chunks", start, end, n)
	}
	var out []Hash
	t.proof(0, n, start, end, &out)
	return out, nil
}

func (t *Tree) proof(lo, hi, a, b int, out *[]Hash) {
	switch {
	case hi <= a || b <= lo:
		*out = append(*out, t.node(lo, hi))
	case a <= lo && hi <= b:
	default:
		k := split(hi - lo)
		t.proof(lo, lo+k, a, b, out)
		t.proof(lo+k, hi, a, b, out)
	}
}

// VerifyRange checks the leaf hashes of chunks [start, start+len(leaves))
// of the blob c of the given size, with proof from [Tree.Proof]. The size
// is bound into c, so a wrong size fails too. It returns nil or an error
// wrapping [ErrProof] or [ErrBadCID]. It does not allocate.
func VerifyRange(c cid.Cid, size int64, start int, leaves, proof []Hash) error {
	want, err := cidDigest(c)
	if err != nil {
		return err
	}
	if size < 0 || size > MaxBlobSize {
		return fmt.Errorf("%w: size %d is outside 0..%d", ErrProof, size, int64(MaxBlobSize))
	}
	n := NumChunks(size)
	end := start + len(leaves)
	if start < 0 || len(leaves) == 0 || end > n {
		return fmt.Errorf("%w: chunk range [%d, %d) is outside the blob's %d chunks", ErrProof, start, end, n)
	}
	v := rangeVerifier{a: start, b: end, leaves: leaves, proof: proof}
	root := v.node(0, n)
	if v.bad || v.used != len(proof) {
		return fmt.Errorf("%w: the proof has the wrong number of hashes", ErrProof)
	}
	blk := rootBlock(size, root)
	if sha256.Sum256(blk[:]) != want {
		return fmt.Errorf("%w: chunks [%d, %d) do not hash to the root", ErrProof, start, end)
	}
	return nil
}

type rangeVerifier struct {
	a, b   int
	leaves []Hash
	proof  []Hash
	used   int
	bad    bool
}

func (v *rangeVerifier) node(lo, hi int) Hash {
	switch {
	case hi <= v.a || v.b <= lo:
		if v.used >= len(v.proof) {
			v.bad = true
			return Hash{}
		}
		v.used++
		return v.proof[v.used-1]
	case hi-lo == 1:
		return v.leaves[lo-v.a]
	default:
		k := split(hi - lo)
		l, r := v.node(lo, lo+k), v.node(lo+k, hi)
		return nodeHash(&l, &r)
	}
}

// VerifyChunk checks the bytes of chunk index of the blob c of the given
// size against c alone, with the chunk's proof ([Tree.Proof] of
// [index, index+1)). It returns nil or an error wrapping [ErrProof].
func VerifyChunk(c cid.Cid, size int64, index int, chunk []byte, proof []Hash) error {
	if want := ChunkLen(size, index); want < 0 || want != len(chunk) {
		return fmt.Errorf("%w: chunk %d of a %d-byte blob cannot be %d bytes", ErrProof, index, size, len(chunk))
	}
	leaf := [1]Hash{LeafHash(chunk)}
	return VerifyRange(c, size, index, leaf[:], proof)
}
