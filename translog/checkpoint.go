package translog

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"unicode"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// MaxNoteSize bounds a signed checkpoint note (its text and signatures).
const MaxNoteSize = 4096

// Checkpoint is a verified checkpoint of a log (C2SP tlog-checkpoint): the
// log's origin, its size and the Merkle tree hash of its first Size
// entries.
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [32]byte
	Note   []byte // the whole signed note
}

// ParseCheckpoint verifies a signed checkpoint note with the note verifier
// key vkey ("origin+hash+base64key") and parses it. The checkpoint's origin
// must be the key's name; its text has exactly the three lines origin, size
// and base64 root (no extension lines), each in its one canonical form.
// Signatures by other keys (cosignatures) are ignored. Anything else is
// [ErrBadCheckpoint].
func ParseCheckpoint(signed []byte, vkey string) (*Checkpoint, error) {
	if len(signed) > MaxNoteSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrBadCheckpoint, len(signed))
	}
	// A checkpoint is shown to people as evidence (kez audit, split-view
	// warnings): no control, format or line-separator character anywhere,
	// cosignature lines included.
	for _, r := range string(signed) {
		if r != '\n' && !unicode.IsPrint(r) {
			return nil, fmt.Errorf("%w: the character %+q", ErrBadCheckpoint, r)
		}
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("%w: log key: %w", ErrBadCheckpoint, err)
	}
	lc, rest, _, err := log.ParseCheckpoint(signed, v.Name(), v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%w: extension lines", ErrBadCheckpoint)
	}
	if len(lc.Hash) != 32 {
		return nil, fmt.Errorf("%w: root of %d bytes", ErrBadCheckpoint, len(lc.Hash))
	}
	// One text per checkpoint: the canonical lines, nothing else.
	canon := lc.Marshal()
	if !bytes.HasPrefix(signed, canon) || !bytes.HasPrefix(signed[len(canon):], []byte("\n")) {
		return nil, fmt.Errorf("%w: not in canonical form", ErrBadCheckpoint)
	}
	if lc.Size == 0 && !bytes.Equal(lc.Hash, rfc6962.DefaultHasher.EmptyRoot()) {
		return nil, fmt.Errorf("%w: an empty tree with a root other than the empty hash", ErrBadCheckpoint)
	}
	cp := &Checkpoint{Origin: lc.Origin, Size: lc.Size, Note: bytes.Clone(signed)}
	copy(cp.Root[:], lc.Hash)
	return cp, nil
}

// DecodeHashes decodes the hashes of a proof ([HeadProof.Proof],
// [ConsistencyProof.Proof]): standard base64, 32 bytes each, at most 64.
func DecodeHashes(in []string) ([][]byte, error) {
	if len(in) > 64 {
		return nil, fmt.Errorf("%d hashes", len(in))
	}
	out := make([][]byte, len(in))
	for i, s := range in {
		h, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil || len(h) != 32 {
			return nil, fmt.Errorf("hash %d is not 32 bytes of base64", i)
		}
		out[i] = h
	}
	return out, nil
}

// EncodeHashes encodes the hashes of a proof in standard base64, the
// inverse of [DecodeHashes].
func EncodeHashes(in [][]byte) []string {
	out := make([]string, len(in))
	for i, h := range in {
		out[i] = base64.StdEncoding.EncodeToString(h)
	}
	return out
}

// VerifyInclusion checks that e is the leaf at index of the tree cp
// commits to, by the inclusion proof proof (RFC 6962 §2.1.1). Anything
// else is [ErrBadProof].
func VerifyInclusion(e Entry, index uint64, p [][]byte, cp *Checkpoint) error {
	if cp == nil || index >= cp.Size {
		return fmt.Errorf("%w: index beyond the checkpoint", ErrBadProof)
	}
	lh := e.LeafHash()
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, lh[:], p, cp.Root[:]); err != nil {
		return fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	return nil
}

// VerifyConsistency checks that the tree of new extends the tree of old,
// by the consistency proof proof (RFC 6962 §2.1.2). Both must be of the
// same origin and old no bigger than new. Anything else is
// [ErrInconsistent], wrapping the reason.
func VerifyConsistency(old, new *Checkpoint, p [][]byte) error {
	if old == nil || new == nil {
		return fmt.Errorf("%w: missing checkpoint", ErrInconsistent)
	}
	if old.Origin != new.Origin {
		return fmt.Errorf("%w: origins %q and %q", ErrInconsistent, old.Origin, new.Origin)
	}
	if old.Size > new.Size {
		return fmt.Errorf("%w: size %d after size %d", ErrInconsistent, new.Size, old.Size)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, new.Size, p, old.Root[:], new.Root[:]); err != nil {
		return fmt.Errorf("%w: %w", ErrInconsistent, err)
	}
	return nil
}
