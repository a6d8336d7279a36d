package format

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the test vectors under testdata/")

// pattern returns the deterministic test bytes of docs/spec/blobs.md:
// byte i is i mod 251.
func pattern(n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

type blobVector struct {
	Name      string   `json:"name"`
	Size      int64    `json:"size"`
	Leaves    []string `json:"leaves"`
	TreeRoot  string   `json:"tree_root"`
	RootBlock string   `json:"root_block"`
	CID       string   `json:"cid"`
}

// proofVector checks one chunk (Chunk: the pattern chunk of ChunkOf's
// blob, or ChunkHex) or a range of leaf hashes (Leaves) against a CID.
type proofVector struct {
	Name     string   `json:"name"`
	CID      string   `json:"cid"`
	Size     int64    `json:"size"`
	Start    int      `json:"start"`
	ChunkOf  *chunkOf `json:"chunk,omitempty"`
	ChunkHex *string  `json:"chunk_hex,omitempty"`
	Leaves   []string `json:"leaves,omitempty"`
	Proof    []string `json:"proof"`
	Valid    bool     `json:"valid"`
}

type chunkOf struct {
	BlobSize int64 `json:"blob_size"`
	Index    int   `json:"index"`
}

type blobVectors struct {
	Comment   string        `json:"comment"`
	ChunkSize int           `json:"chunk_size"`
	Blobs     []blobVector  `json:"blobs"`
	Proofs    []proofVector `json:"proofs"`
}

const blobVectorsPath = "testdata/blob_vectors.json"

func hexes(hs []Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func unhexes(t *testing.T, ss []string) []Hash {
	t.Helper()
	out := make([]Hash, len(ss))
	for i, s := range ss {
		b, err := hex.DecodeString(s)
		if err != nil || len(b) != HashSize {
			t.Fatalf("bad hash %q in vectors", s)
		}
		copy(out[i][:], b)
	}
	return out
}

func treeOf(t testing.TB, data []byte) *Tree {
	t.Helper()
	tr, err := BuildTree(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func makeBlobVectors(t *testing.T) blobVectors {
	v := blobVectors{
		Comment:   "KEZ blob content addresses, see docs/spec/blobs.md. Blob data: byte i is i mod 251.",
		ChunkSize: ChunkSize,
	}
	sizes := []struct {
		name string
		size int64
	}{
		{"empty", 0},
		{"one_byte", 1},
		{"one_chunk", ChunkSize},
		{"one_chunk_plus_one", ChunkSize + 1},
		{"five_chunks", 4*ChunkSize + 1000},
		{"eight_chunks", 8 * ChunkSize},
	}
	trees := map[string]*Tree{}
	for _, s := range sizes {
		tr := treeOf(t, pattern(s.size))
		trees[s.name] = tr
		rb := rootBlock(tr.Size(), tr.Root())
		v.Blobs = append(v.Blobs, blobVector{
			Name: s.name, Size: s.size, Leaves: hexes(tr.Leaves(0, tr.NumChunks())),
			TreeRoot: tr.Root().String(), RootBlock: hex.EncodeToString(rb[:]), CID: tr.CID().String(),
		})
	}
	five := trees["five_chunks"]
	fiveSize := five.Size()
	proof := func(tr *Tree, a, b int) []string {
		p, err := tr.Proof(a, b)
		if err != nil {
			t.Fatal(err)
		}
		return hexes(p)
	}
	chunk := func(size int64, i int) *chunkOf { return &chunkOf{BlobSize: size, Index: i} }
	for i := 0; i < 5; i++ {
		v.Proofs = append(v.Proofs, proofVector{
			Name: "five_chunks_chunk_" + string(rune('0'+i)), CID: five.CID().String(), Size: fiveSize,
			Start: i, ChunkOf: chunk(fiveSize, i), Proof: proof(five, i, i+1), Valid: true,
		})
	}
	v.Proofs = append(v.Proofs,
		proofVector{Name: "empty_chunk_0", CID: trees["empty"].CID().String(), Size: 0, Start: 0,
			ChunkOf: chunk(0, 0), Proof: []string{}, Valid: true},
		proofVector{Name: "five_chunks_leaves_1_to_4", CID: five.CID().String(), Size: fiveSize, Start: 1,
			Leaves: hexes(five.Leaves(1, 4)), Proof: proof(five, 1, 4), Valid: true},
		proofVector{Name: "eight_chunks_leaves_2_to_6", CID: trees["eight_chunks"].CID().String(), Size: 8 * ChunkSize, Start: 2,
			Leaves: hexes(trees["eight_chunks"].Leaves(2, 6)), Proof: proof(trees["eight_chunks"], 2, 6), Valid: true},
	)
	// fail_*: each is a valid vector with one thing changed.
	p5, _ := five.Proof(2, 3)
	p5[1][0] ^= 1
	wrongSibling := hexes(p5)
	two := trees["one_chunk_plus_one"]
	l := two.Leaves(0, 2)
	nodeAsLeaf := hex.EncodeToString(append(l[0][:], l[1][:]...))
	v.Proofs = append(v.Proofs,
		proofVector{Name: "fail_wrong_sibling", CID: five.CID().String(), Size: fiveSize, Start: 2,
			ChunkOf: chunk(fiveSize, 2), Proof: wrongSibling},
		proofVector{Name: "fail_wrong_index", CID: five.CID().String(), Size: fiveSize, Start: 3,
			ChunkOf: chunk(fiveSize, 2), Proof: proof(five, 2, 3)},
		proofVector{Name: "fail_wrong_size", CID: five.CID().String(), Size: fiveSize + 1, Start: 2,
			ChunkOf: chunk(fiveSize, 2), Proof: proof(five, 2, 3)},
		proofVector{Name: "fail_wrong_size_same_chunk_count", CID: five.CID().String(), Size: fiveSize - 1, Start: 1,
			ChunkOf: chunk(fiveSize, 1), Proof: proof(five, 1, 2)},
		proofVector{Name: "fail_wrong_chunk", CID: five.CID().String(), Size: fiveSize, Start: 1,
			ChunkOf: chunk(fiveSize, 2), Proof: proof(five, 1, 2)},
		proofVector{Name: "fail_short_last_chunk", CID: five.CID().String(), Size: fiveSize, Start: 4,
			ChunkOf: chunk(fiveSize-1, 4), Proof: proof(five, 4, 5)},
		proofVector{Name: "fail_missing_proof_hash", CID: five.CID().String(), Size: fiveSize, Start: 2,
			ChunkOf: chunk(fiveSize, 2), Proof: proof(five, 2, 3)[1:]},
		proofVector{Name: "fail_extra_proof_hash", CID: five.CID().String(), Size: fiveSize, Start: 2,
			ChunkOf: chunk(fiveSize, 2), Proof: append(proof(five, 2, 3), proof(five, 2, 3)[0])},
		proofVector{Name: "fail_index_out_of_range", CID: five.CID().String(), Size: fiveSize, Start: 5,
			ChunkOf: chunk(fiveSize, 4), Proof: proof(five, 4, 5)},
		proofVector{Name: "fail_node_as_leaf", CID: two.CID().String(), Size: 2 * HashSize, Start: 0,
			ChunkHex: &nodeAsLeaf, Proof: []string{}},
		proofVector{Name: "fail_swapped_leaves", CID: five.CID().String(), Size: fiveSize, Start: 1,
			Leaves: hexes([]Hash{five.Leaf(2), five.Leaf(1), five.Leaf(3)}), Proof: proof(five, 1, 4)},
	)
	return v
}

func TestBlobVectors(t *testing.T) {
	if *update {
		v := makeBlobVectors(t)
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(blobVectorsPath, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := os.ReadFile(blobVectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var v blobVectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if v.ChunkSize != ChunkSize {
		t.Fatalf("vectors use chunk size %d, code %d", v.ChunkSize, ChunkSize)
	}
	spec, err := os.ReadFile("../../docs/spec/blobs.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, bv := range v.Blobs {
		t.Run(bv.Name, func(t *testing.T) {
			tr := treeOf(t, pattern(bv.Size))
			if got := hexes(tr.Leaves(0, tr.NumChunks())); strings.Join(got, ",") != strings.Join(bv.Leaves, ",") {
				t.Errorf("leaves = %v, want %v", got, bv.Leaves)
			}
			if tr.Root().String() != bv.TreeRoot {
				t.Errorf("tree root = %s, want %s", tr.Root(), bv.TreeRoot)
			}
			rb := rootBlock(tr.Size(), tr.Root())
			if hex.EncodeToString(rb[:]) != bv.RootBlock {
				t.Errorf("root block = %x, want %s", rb, bv.RootBlock)
			}
			if tr.CID().String() != bv.CID {
				t.Errorf("CID = %s, want %s", tr.CID(), bv.CID)
			}
			if !bytes.Contains(spec, []byte(bv.CID)) {
				t.Errorf("docs/spec/blobs.md does not list the CID %s of %s", bv.CID, bv.Name)
			}
			if _, err := ParseCID(bv.CID); err != nil {
				t.Error(err)
			}
			// The tree built from the leaf hashes alone agrees.
			tr2, err := NewTree(bv.Size, unhexes(t, bv.Leaves))
			if err != nil || !tr2.CID().Equals(tr.CID()) {
				t.Errorf("NewTree from leaves: %v, %v", tr2, err)
			}
		})
	}
	nfail := 0
	for _, pv := range v.Proofs {
		t.Run(pv.Name, func(t *testing.T) {
			if strings.HasPrefix(pv.Name, "fail_") == pv.Valid {
				t.Fatalf("vector %s: valid=%v disagrees with its name", pv.Name, pv.Valid)
			}
			if !pv.Valid {
				nfail++
			}
			c, err := ParseCID(pv.CID)
			if err != nil {
				t.Fatal(err)
			}
			proof := unhexes(t, pv.Proof)
			switch {
			case pv.Leaves != nil:
				err = VerifyRange(c, pv.Size, pv.Start, unhexes(t, pv.Leaves), proof)
			default:
				var chunk []byte
				if pv.ChunkHex != nil {
					chunk, _ = hex.DecodeString(*pv.ChunkHex)
				} else {
					data := pattern(pv.ChunkOf.BlobSize)
					lo := int64(pv.ChunkOf.Index) * ChunkSize
					chunk = data[lo:min(lo+ChunkSize, int64(len(data)))]
				}
				err = VerifyChunk(c, pv.Size, pv.Start, chunk, proof)
			}
			if pv.Valid && err != nil {
				t.Errorf("valid vector rejected: %v", err)
			}
			if !pv.Valid && !errors.Is(err, ErrProof) {
				t.Errorf("fail vector: err = %v, want ErrProof", err)
			}
		})
	}
	if nfail < 5 {
		t.Errorf("only %d fail_* vectors", nfail)
	}
}

// TestProofsEverySize checks that every range of every small tree shape
// proves, and that a proof for one range never verifies another.
func TestProofsEverySize(t *testing.T) {
	for n := 1; n <= 17; n++ {
		leaves := make([]Hash, n)
		for i := range leaves {
			leaves[i] = LeafHash([]byte{byte(i), byte(n)})
		}
		size := int64(n-1)*ChunkSize + 1
		tr, err := NewTree(size, leaves)
		if err != nil {
			t.Fatal(err)
		}
		for a := 0; a < n; a++ {
			for b := a + 1; b <= n; b++ {
				p, err := tr.Proof(a, b)
				if err != nil {
					t.Fatal(err)
				}
				if len(p) > 2*bitsLen(n) {
					t.Errorf("n=%d [%d,%d): proof of %d hashes", n, a, b, len(p))
				}
				if err := VerifyRange(tr.CID(), size, a, leaves[a:b], p); err != nil {
					t.Errorf("n=%d [%d,%d): %v", n, a, b, err)
				}
				if b < n {
					if err := VerifyRange(tr.CID(), size, a+1, leaves[a:b], p); err == nil {
						t.Errorf("n=%d [%d,%d): shifted range verified", n, a, b)
					}
				}
			}
		}
	}
}

func bitsLen(n int) int {
	l := 0
	for n > 0 {
		l++
		n >>= 1
	}
	return l
}

func TestBuildTreeMatchesNewTree(t *testing.T) {
	for _, size := range []int64{0, 1, ChunkSize - 1, ChunkSize, 3*ChunkSize + 5} {
		data := pattern(size)
		tr := treeOf(t, data)
		var leaves []Hash
		for i := 0; i < NumChunks(size); i++ {
			lo := int64(i) * ChunkSize
			leaves = append(leaves, LeafHash(data[lo:min(lo+ChunkSize, size)]))
		}
		tr2, err := NewTree(size, leaves)
		if err != nil || !tr.CID().Equals(tr2.CID()) {
			t.Fatalf("size %d: BuildTree and NewTree disagree (%v)", size, err)
		}
		tr3, err := HashReaderAt(bytes.NewReader(data), size)
		if err != nil || !tr.CID().Equals(tr3.CID()) {
			t.Fatalf("size %d: BuildTree and HashReaderAt disagree (%v)", size, err)
		}
		if _, err := HashReaderAt(bytes.NewReader(data), size+1); err == nil {
			t.Fatalf("size %d: HashReaderAt of a short reader succeeded", size)
		}
	}
}

func TestBadCIDs(t *testing.T) {
	for _, s := range []string{
		"",
		"bafkqaaa", // identity raw CID
		"QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",              // CIDv0
		"bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", // dag-pb
		strings.Repeat("b", 200),
	} {
		if _, err := ParseCID(s); !errors.Is(err, ErrBadCID) {
			t.Errorf("ParseCID(%q) = %v, want ErrBadCID", s, err)
		}
	}
}
