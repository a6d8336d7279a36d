package logserver

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"
)

// testKey returns a deterministic KEZ key numbered n.
func testKey(t testing.TB, n byte) kez.PublicKey {
	t.Helper()
	seed := sha256.Sum256([]byte{'k', n})
	k, err := kez.PublicKeyFromEd25519(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// testID returns a link ID (raw sha2-256 CIDv1 text) of some bytes.
func testID(t testing.TB, s string) string {
	t.Helper()
	mh, err := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, mh).String()
}

// entry returns the link entry of key n at seqno, its ID made of tag.
func entry(t testing.TB, n byte, seqno uint64, tag string) translog.Entry {
	return translog.Entry{Key: testKey(t, n), Seqno: seqno, ID: testID(t, tag)}
}

// openTest opens a log in dir with the test checkpoint interval and a
// registry of its own, closed by t.Cleanup.
func openTest(t testing.TB, dir string) (*Log, *prometheus.Registry) {
	t.Helper()
	signer, _, err := LoadOrCreateKey(filepath.Join(dir, "log.key"), "kez.test/sigchain-log")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	l, err := Open(context.Background(), Config{
		Dir: filepath.Join(dir, "log"), Signer: signer, CheckpointInterval: MinCheckpointInterval,
		Logger: slog.New(slog.DiscardHandler), Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l, reg
}

// checkProof verifies the proof l gives for e against l's key.
func checkProof(t testing.TB, l *Log, e translog.Entry, wantIndex uint64) *translog.Checkpoint {
	t.Helper()
	p, err := l.Proof(context.Background(), e.Key, e.Seqno)
	if err != nil {
		t.Fatalf("Proof(%v): %v", e, err)
	}
	if p.Index != wantIndex {
		t.Fatalf("Proof(%v) index %d, want %d", e, p.Index, wantIndex)
	}
	cp, err := translog.ParseCheckpoint([]byte(p.Checkpoint), l.Info().Key)
	if err != nil {
		t.Fatal(err)
	}
	if err := translog.VerifyInclusion(e, p.Index, decode(t, p.Proof), cp); err != nil {
		t.Fatalf("VerifyInclusion(%v): %v", e, err)
	}
	return cp
}
