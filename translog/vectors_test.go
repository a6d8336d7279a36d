package translog_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/merkle/testonly"
	"golang.org/x/mod/sumdb/note"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/translog"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// vectors is the content of testdata/vectors.json and of the vectors
// block of docs/spec/translog.md.
type vectors struct {
	Entries []struct {
		Entry    string `json:"entry"`     // the entry's bytes
		LeafHash string `json:"leaf_hash"` // hex
	} `json:"entries"`
	Size      uint64 `json:"size"`
	Root      string `json:"root"` // hex
	Inclusion struct {
		Index uint64   `json:"index"`
		Size  uint64   `json:"size"`
		Proof []string `json:"proof"` // base64
	} `json:"inclusion"`
	Consistency struct {
		From     uint64   `json:"from"`
		To       uint64   `json:"to"`
		FromRoot string   `json:"from_root"` // hex
		Proof    []string `json:"proof"`     // base64
	} `json:"consistency"`
	NoteSigner   string `json:"note_signer_key"`
	NoteVerifier string `json:"note_verifier_key"`
	Checkpoint   string `json:"checkpoint"` // the signed note of the 7-leaf tree
	BadEntries   []struct {
		Entry  string `json:"entry"`
		Reason string `json:"reason"`
	} `json:"bad_entries"`
}

const vectorOrigin = "example.com/sigchain-log"

// vectorEntries are the entries of the vectors: keys from the ed25519
// seeds SHA-256("translog vector key A"/"… B"), link IDs of the digests
// SHA-256("translog vector link …").
func vectorEntries() []translog.Entry {
	a, b := testKey("translog vector key A"), testKey("translog vector key B")
	id := func(s string) string { return testID("translog vector link " + s) }
	return []translog.Entry{
		{Key: a, Seqno: 1, ID: id("A1")},
		{Key: a, Seqno: 2, ID: id("A2")},
		{Key: b, Seqno: 1, ID: id("B1")},
		{Key: a, Seqno: 3, ID: id("A3")},
		{Key: a}, // A's chain deleted
		{Key: a, Seqno: 1, ID: id("A1 again")},
		{Key: b, Seqno: 2, ID: id("B2")},
	}
}

func makeVectors(t *testing.T) vectors {
	var v vectors
	tree := testonly.New(rfc6962.DefaultHasher)
	for _, e := range vectorEntries() {
		lh := e.LeafHash()
		v.Entries = append(v.Entries, struct {
			Entry    string `json:"entry"`
			LeafHash string `json:"leaf_hash"`
		}{string(e.Marshal()), hex.EncodeToString(lh[:])})
		tree.AppendData(e.Marshal())
	}
	v.Size = tree.Size()
	v.Root = hex.EncodeToString(tree.Hash())
	ip, err := tree.InclusionProof(2, 7)
	if err != nil {
		t.Fatal(err)
	}
	v.Inclusion.Index, v.Inclusion.Size, v.Inclusion.Proof = 2, 7, translog.EncodeHashes(ip)
	cp, err := tree.ConsistencyProof(3, 7)
	if err != nil {
		t.Fatal(err)
	}
	v.Consistency.From, v.Consistency.To, v.Consistency.Proof = 3, 7, translog.EncodeHashes(cp)
	v.Consistency.FromRoot = hex.EncodeToString(tree.HashAt(3))
	v.NoteSigner, v.NoteVerifier = tlogtest.NoteKey("translog vectors", vectorOrigin)
	s, err := note.NewSigner(v.NoteSigner)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Sign(&note.Note{Text: cpText(vectorOrigin, 7, tree.Hash())}, s)
	if err != nil {
		t.Fatal(err)
	}
	v.Checkpoint = string(n)
	good := vectorEntries()[0]
	key, id := good.Key.String(), good.ID
	for _, b := range [][2]string{
		{`{"id":"` + id + `","key":"` + key + `", "seqno":1}`, "whitespace"},
		{`{"key":"` + key + `","id":"` + id + `","seqno":1}`, "keys not sorted"},
		{`{"id":"` + id + `","key":"` + key + `","seqno":01}`, "leading zero"},
		{`{"id":"` + id + `","key":"` + key + `","seqno":0}`, "seqno 0 with a link ID"},
		{`{"id":"","key":"` + key + `","seqno":1}`, "no link ID with seqno 1"},
		{`{"id":"B` + id[1:] + `","key":"` + key + `","seqno":1}`, "upper-case multibase prefix"},
		{`{"id":"` + id + `","key":"` + key + `","seqno":1,"x":0}`, "another field"},
	} {
		v.BadEntries = append(v.BadEntries, struct {
			Entry  string `json:"entry"`
			Reason string `json:"reason"`
		}{b[0], b[1]})
	}
	return v
}

func marshalVectors(t *testing.T, v vectors) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

func readVectors(t *testing.T, b []byte) vectors {
	t.Helper()
	var v vectors
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestVectors checks testdata/vectors.json with the package's code, and
// that it is what the generator writes (go test -run TestVectors -update
// rewrites it).
func TestVectors(t *testing.T) {
	want := marshalVectors(t, makeVectors(t))
	if *update {
		if err := os.WriteFile("testdata/vectors.json", want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("testdata/vectors.json differs from the generator (run with -update and review)")
	}
	checkVectors(t, readVectors(t, got))
}

// TestSpecVectors checks the vectors printed in docs/spec/translog.md:
// they are those of testdata/vectors.json and they verify.
func TestSpecVectors(t *testing.T) {
	doc, err := os.ReadFile("../docs/spec/translog.md")
	if err != nil {
		t.Fatal(err)
	}
	marker := []byte("<!-- vectors:translog -->\n```json\n")
	i := bytes.Index(doc, marker)
	if i < 0 {
		t.Fatal("the spec page has no vectors block")
	}
	rest := doc[i+len(marker):]
	end := bytes.Index(rest, []byte("```"))
	if end < 0 {
		t.Fatal("the vectors block is not closed")
	}
	page := rest[:end]
	file, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(page, file) {
		t.Fatal("the spec page's vectors differ from testdata/vectors.json")
	}
	checkVectors(t, readVectors(t, page))
	// The entries printed in §1, each with its leaf hash.
	v := readVectors(t, page)
	for _, i := range []int{0, 2, 4} {
		if !bytes.Contains(doc, []byte(v.Entries[i].Entry+"\n"+v.Entries[i].LeafHash+"\n")) {
			t.Errorf("the page does not show entry %d with its leaf hash", i)
		}
	}
	// The checkpoint as printed on its own in the page.
	if !bytes.Contains(doc, []byte("```\n"+readVectors(t, page).Checkpoint+"```")) {
		t.Error("the page does not show the signed checkpoint as a block")
	}
}

func checkVectors(t *testing.T, v vectors) {
	t.Helper()
	rf := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	r := rf.NewEmptyRange(0)
	var roots [][]byte
	var es []translog.Entry
	for i, ve := range v.Entries {
		e, err := translog.ParseEntry([]byte(ve.Entry))
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		es = append(es, e)
		lh := e.LeafHash()
		h := sha256.Sum256(append([]byte{0}, ve.Entry...))
		if hex.EncodeToString(lh[:]) != ve.LeafHash || h != lh {
			t.Errorf("entry %d: leaf hash %x, vector %s", i, lh, ve.LeafHash)
		}
		if err := r.Append(lh[:], nil); err != nil {
			t.Fatal(err)
		}
		root, _ := r.GetRootHash(nil)
		roots = append(roots, root)
	}
	if uint64(len(es)) != v.Size || hex.EncodeToString(roots[v.Size-1]) != v.Root {
		t.Fatalf("root %x, vector %s", roots[v.Size-1], v.Root)
	}
	cp, err := translog.ParseCheckpoint([]byte(v.Checkpoint), v.NoteVerifier)
	if err != nil {
		t.Fatal(err)
	}
	if cp.Origin != vectorOrigin || cp.Size != v.Size || hex.EncodeToString(cp.Root[:]) != v.Root {
		t.Fatalf("checkpoint %+v", cp)
	}
	// Ed25519 note signatures are deterministic: the printed signer key
	// signs the printed checkpoint exactly.
	s, err := note.NewSigner(v.NoteSigner)
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Sign(&note.Note{Text: cpText(vectorOrigin, v.Size, roots[v.Size-1])}, s)
	if err != nil || string(n) != v.Checkpoint {
		t.Fatalf("signing again: %q, %v", n, err)
	}
	ip, err := translog.DecodeHashes(v.Inclusion.Proof)
	if err != nil {
		t.Fatal(err)
	}
	if v.Inclusion.Size != v.Size {
		t.Fatal("the inclusion proof is for another size")
	}
	if err := translog.VerifyInclusion(es[v.Inclusion.Index], v.Inclusion.Index, ip, cp); err != nil {
		t.Fatal(err)
	}
	old := &translog.Checkpoint{Origin: vectorOrigin, Size: v.Consistency.From}
	copy(old.Root[:], roots[v.Consistency.From-1])
	if hex.EncodeToString(old.Root[:]) != v.Consistency.FromRoot || v.Consistency.To != v.Size {
		t.Fatalf("consistency roots")
	}
	cons, err := translog.DecodeHashes(v.Consistency.Proof)
	if err != nil {
		t.Fatal(err)
	}
	if err := translog.VerifyConsistency(old, cp, cons); err != nil {
		t.Fatal(err)
	}
	for _, b := range v.BadEntries {
		if _, err := translog.ParseEntry([]byte(b.Entry)); !errors.Is(err, translog.ErrBadEntry) {
			t.Errorf("bad entry (%s) accepted: %v", b.Reason, err)
		}
	}
}

// TestVectorsTessera: tessera, appending the vectors' entries, reaches the
// vectors' root, and its proofs are the vectors' proofs.
func TestVectorsTessera(t *testing.T) {
	v := makeVectors(t)
	l := tlogtest.New(t, tlogtest.Options{Seed: "translog vectors", Origin: vectorOrigin})
	l.Append(t, vectorEntries()...)
	cp := l.Checkpoint(t)
	if hex.EncodeToString(cp.Root[:]) != v.Root || cp.Size != 7 {
		t.Fatalf("tessera's root %x, vector %s", cp.Root, v.Root)
	}
	if string(cp.Note) != v.Checkpoint {
		t.Errorf("tessera's checkpoint %q, vector %q", cp.Note, v.Checkpoint)
	}
	if hp := l.HeadProof(t, 2); fmt.Sprint(hp.Proof) != fmt.Sprint(v.Inclusion.Proof) {
		t.Errorf("tessera's inclusion proof %v", hp.Proof)
	}
	c, err := l.Consistency(context.Background(), 3, 7)
	if err != nil || fmt.Sprint(c.Proof) != fmt.Sprint(v.Consistency.Proof) {
		t.Errorf("tessera's consistency proof %v, %v", c, err)
	}
}
