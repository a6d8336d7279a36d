package translog_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/translog"
)

// chainEntries returns n link entries of key name: seqno 1 … n.
func chainEntries(name string, n int) []translog.Entry {
	es := make([]translog.Entry, n)
	for i := range es {
		es[i] = translog.Entry{Key: testKey(name), Seqno: uint64(i + 1), ID: testID(fmt.Sprintf("%s%d", name, i+1))}
	}
	return es
}

func mustDecode(t testing.TB, ss []string) [][]byte {
	t.Helper()
	hs, err := translog.DecodeHashes(ss)
	if err != nil {
		t.Fatal(err)
	}
	return hs
}

// TestProofs: inclusion and consistency proofs of a real tessera log
// verify, and every forgery of them is refused.
func TestProofs(t *testing.T) {
	l := tlogtest.New(t, tlogtest.Options{})
	es := chainEntries("a", 7)
	l.Append(t, es[:3]...)
	cp3 := l.Checkpoint(t)
	l.Append(t, es[3:]...)
	cp7 := l.Checkpoint(t)
	hp := l.HeadProof(t, 2)
	proof := mustDecode(t, hp.Proof)
	if err := translog.VerifyInclusion(es[2], 2, proof, cp7); err != nil {
		t.Fatal(err)
	}
	flipped := clone(proof)
	flipped[0][0] ^= 1
	for name, f := range map[string]func() error{
		"other entry":  func() error { return translog.VerifyInclusion(es[3], 2, proof, cp7) },
		"other index":  func() error { return translog.VerifyInclusion(es[2], 3, proof, cp7) },
		"index ≥ size": func() error { return translog.VerifyInclusion(es[2], 7, proof, cp7) },
		"huge index":   func() error { return translog.VerifyInclusion(es[2], 1<<63, proof, cp7) },
		"short proof":  func() error { return translog.VerifyInclusion(es[2], 2, proof[:len(proof)-1], cp7) },
		"long proof":   func() error { return translog.VerifyInclusion(es[2], 2, append(clone(proof), proof[0]), cp7) },
		"forged hash":  func() error { return translog.VerifyInclusion(es[2], 2, flipped, cp7) },
		"short hash":   func() error { p := clone(proof); p[0] = p[0][:31]; return translog.VerifyInclusion(es[2], 2, p, cp7) },
		"old tree":     func() error { return translog.VerifyInclusion(es[2], 2, proof, cp3) },
		"no tree":      func() error { return translog.VerifyInclusion(es[2], 2, proof, nil) },
	} {
		if err := f(); !errors.Is(err, translog.ErrBadProof) {
			t.Errorf("%s: %v, want ErrBadProof", name, err)
		}
	}

	cons, err := l.Consistency(context.Background(), 3, 7)
	if err != nil {
		t.Fatal(err)
	}
	cproof := mustDecode(t, cons.Proof)
	if err := translog.VerifyConsistency(cp3, cp7, cproof); err != nil {
		t.Fatal(err)
	}
	if err := translog.VerifyConsistency(cp7, cp7, nil); err != nil {
		t.Fatal(err)
	}
	cflipped := clone(cproof)
	cflipped[len(cflipped)-1][5] ^= 1
	other := *cp3
	other.Root[0] ^= 1
	otherOrigin := *cp7
	otherOrigin.Origin = "other.test/log"
	for name, f := range map[string]func() error{
		"reversed":     func() error { return translog.VerifyConsistency(cp7, cp3, cproof) },
		"forged hash":  func() error { return translog.VerifyConsistency(cp3, cp7, cflipped) },
		"short":        func() error { return translog.VerifyConsistency(cp3, cp7, cproof[1:]) },
		"long":         func() error { return translog.VerifyConsistency(cp3, cp7, append(clone(cproof), cproof[0])) },
		"empty":        func() error { return translog.VerifyConsistency(cp3, cp7, nil) },
		"other root":   func() error { return translog.VerifyConsistency(&other, cp7, cproof) },
		"other origin": func() error { return translog.VerifyConsistency(cp3, &otherOrigin, cproof) },
		"same size, a proof": func() error {
			return translog.VerifyConsistency(cp7, cp7, cproof)
		},
		"nil": func() error { return translog.VerifyConsistency(nil, cp7, cproof) },
	} {
		if err := f(); !errors.Is(err, translog.ErrInconsistent) {
			t.Errorf("%s: %v, want ErrInconsistent", name, err)
		}
	}
	if _, err := translog.DecodeHashes([]string{"AAAA"}); err == nil {
		t.Error("DecodeHashes took a 3-byte hash")
	}
	if _, err := translog.DecodeHashes(make([]string, 65)); err == nil {
		t.Error("DecodeHashes took 65 hashes")
	}
}

func clone(p [][]byte) [][]byte {
	out := make([][]byte, len(p))
	for i, h := range p {
		out[i] = bytes.Clone(h)
	}
	return out
}
