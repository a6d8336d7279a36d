package translog_test

import (
	"crypto/sha256"
	"testing"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/translog"
)

// benchProof returns an entry, its index in a tree of 1,000,000 leaves, an
// inclusion proof of it (20 hashes) and a checkpoint of that tree.
// The sibling hashes are arbitrary; the root is the one they and the
// entry determine, so the proof is valid for it.
func benchProof(b *testing.B) (translog.Entry, uint64, [][]byte, *translog.Checkpoint) {
	const size, index = 1_000_000, 765_432
	e := chainEntries("bench", 1)[0]
	lh := e.LeafHash()
	var p [][]byte
	var root []byte
	for n := 1; root == nil && n < 64; n++ { // the proof's length for (index, size)
		p = make([][]byte, n)
		for i := range p {
			h := sha256.Sum256([]byte{byte(i)})
			p[i] = h[:]
		}
		root, _ = proof.RootFromInclusionProof(rfc6962.DefaultHasher, index, size, lh[:], p)
	}
	skey, vkey := tlogtest.NoteKey("bench", origin)
	s, _ := note.NewSigner(skey)
	signed, err := note.Sign(&note.Note{Text: cpText(origin, size, root)}, s)
	if err != nil {
		b.Fatal(err)
	}
	cp, err := translog.ParseCheckpoint(signed, vkey)
	if err != nil {
		b.Fatal(err)
	}
	return e, index, p, cp
}

// BenchmarkVerifyInclusion: checking the inclusion proof of a chain's head
// in a log of a million entries (the entry's leaf hash and 20 hashes up
// the tree), the proof part of what a client adds to every chain fetch.
func BenchmarkVerifyInclusion(b *testing.B) {
	e, index, p, cp := benchProof(b)
	if len(p) != 20 {
		b.Fatalf("%d hashes", len(p))
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := translog.VerifyInclusion(e, index, p, cp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkParseCheckpoint: verifying a checkpoint's note signature, the
// other part of what a client adds to a chain fetch (once per checkpoint).
func BenchmarkParseCheckpoint(b *testing.B) {
	_, _, _, cp := benchProof(b)
	_, vkey := tlogtest.NoteKey("bench", origin)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := translog.ParseCheckpoint(cp.Note, vkey); err != nil {
			b.Fatal(err)
		}
	}
}
