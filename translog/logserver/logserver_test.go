package logserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kez-lat/kez-chat/translog"
	"github.com/prometheus/client_golang/prometheus"
)

func decode(t testing.TB, in []string) [][]byte {
	t.Helper()
	out, err := translog.DecodeHashes(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// metric returns the value of the metric name (without labels) in reg.
func metric(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		m := mf.GetMetric()[0]
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// Appended entries are proven at the published checkpoint, newer
// checkpoints are consistent with older ones, and Logged says the newest
// entry of a key.
func TestAppendProofConsistency(t *testing.T) {
	ctx := context.Background()
	l, reg := openTest(t, t.TempDir())
	if _, _, ok, err := l.Logged(ctx, testKey(t, 1)); ok || err != nil {
		t.Fatalf("Logged of an empty log: %v %v", ok, err)
	}
	if _, err := l.Proof(ctx, testKey(t, 1), 1); !errors.Is(err, translog.ErrNotLogged) {
		t.Fatalf("Proof of nothing: %v, want ErrNotLogged", err)
	}
	var cps []*translog.Checkpoint
	var entries []translog.Entry
	for i := range 5 {
		e := entry(t, 1, uint64(i+1), fmt.Sprint("link", i))
		idx, err := l.Append(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		if idx != uint64(i) {
			t.Fatalf("entry %d at index %d", i, idx)
		}
		entries = append(entries, e)
		cps = append(cps, checkProof(t, l, e, idx))
	}
	// Every earlier entry is still proven at the newest checkpoint.
	for i, e := range entries {
		checkProof(t, l, e, uint64(i))
	}
	got, idx, ok, err := l.Logged(ctx, testKey(t, 1))
	if err != nil || !ok || got != entries[4] || idx != 4 {
		t.Fatalf("Logged = %v %d %v %v, want %v at 4", got, idx, ok, err, entries[4])
	}
	last := cps[len(cps)-1]
	// Between every two checkpoints seen, also older ones than the newest.
	for i, old := range cps {
		for _, nu := range cps[i:] {
			p, err := l.Consistency(ctx, old.Size, nu.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := translog.VerifyConsistency(old, nu, decode(t, p.Proof)); err != nil {
				t.Fatalf("consistency %d → %d: %v", old.Size, nu.Size, err)
			}
		}
	}
	for _, r := range [][2]uint64{{0, 1}, {0, 0}, {3, 2}, {1, last.Size + 1}, {^uint64(0), ^uint64(0)}} {
		if _, err := l.Consistency(ctx, r[0], r[1]); !errors.Is(err, ErrBadRange) {
			t.Errorf("Consistency(%d, %d) = %v, want ErrBadRange", r[0], r[1], err)
		}
	}
	if n := metric(t, reg, "kez_sig_log_entries_total"); n != 5 {
		t.Errorf("kez_sig_log_entries_total = %v, want 5", n)
	}
	if n := metric(t, reg, "kez_sig_log_size"); n != 5 {
		t.Errorf("kez_sig_log_size = %v, want 5", n)
	}
	if n := metric(t, reg, "kez_sig_log_append_seconds"); n != 5 {
		t.Errorf("kez_sig_log_append_seconds has %v samples, want 5", n)
	}
}

// A deletion entry is logged like any other; the key's newest entry is
// then the deletion, and its history starts again at seqno 1, whose
// proof names the new entry, not the one before the deletion.
func TestDeletionEntry(t *testing.T) {
	ctx := context.Background()
	l, _ := openTest(t, t.TempDir())
	old := entry(t, 2, 1, "old eldest")
	if _, err := l.Append(ctx, old); err != nil {
		t.Fatal(err)
	}
	del := translog.Entry{Key: old.Key}
	if _, err := l.Append(ctx, del); err != nil {
		t.Fatal(err)
	}
	if got, idx, ok, _ := l.Logged(ctx, old.Key); !ok || got != del || idx != 1 {
		t.Fatalf("Logged after the deletion = %v %d %v", got, idx, ok)
	}
	nu := entry(t, 2, 1, "new eldest")
	if _, err := l.Append(ctx, nu); err != nil {
		t.Fatal(err)
	}
	checkProof(t, l, nu, 2)
}

// Entries that are not valid are refused before they reach the log.
func TestAppendRefusesBadEntries(t *testing.T) {
	l, _ := openTest(t, t.TempDir())
	for _, e := range []translog.Entry{
		{Key: testKey(t, 1), Seqno: 1},                           // a link without an ID
		{Key: testKey(t, 1), Seqno: 0, ID: testID(t, "x")},       // a deletion with an ID
		{Key: testKey(t, 1), Seqno: 1, ID: "b../../index.db"},    // not an ID
		{Key: testKey(t, 1), Seqno: 1 << 60, ID: testID(t, "x")}, // past canonical JSON's integers
	} {
		if _, err := l.Append(context.Background(), e); !errors.Is(err, translog.ErrBadEntry) {
			t.Errorf("Append(%v) = %v, want ErrBadEntry", e, err)
		}
	}
}

// Concurrent appends are all logged, each at its own index, each proven.
func TestConcurrentAppends(t *testing.T) {
	ctx := context.Background()
	l, _ := openTest(t, t.TempDir())
	const n = 40
	idx := make([]uint64, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			var err error
			idx[i], err = l.Append(ctx, entry(t, byte(i), 1, fmt.Sprint("c", i)))
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for i, x := range idx {
		if seen[x] || x >= n {
			t.Fatalf("index %d given twice or out of range", x)
		}
		seen[x] = true
		checkProof(t, l, entry(t, byte(i), 1, fmt.Sprint("c", i)), x)
	}
}

// A log reopened keeps its entries and index; a log reopened with another
// key is refused, so its clients never see the key change.
func TestReopen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	e := entry(t, 3, 1, "kept")
	if _, err := l.Append(ctx, e); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l2, _ := openTest(t, dir)
	if got, idx, ok, err := l2.Logged(ctx, e.Key); err != nil || !ok || got != e || idx != 0 {
		t.Fatalf("Logged after reopening = %v %d %v %v", got, idx, ok, err)
	}
	checkProof(t, l2, e, 0)
	e2 := entry(t, 3, 2, "after")
	if _, err := l2.Append(ctx, e2); err != nil {
		t.Fatal(err)
	}
	checkProof(t, l2, e2, 1)
	l2.Close(ctx)

	os.Remove(filepath.Join(dir, "log.key"))
	signer, _, err := LoadOrCreateKey(filepath.Join(dir, "log.key"), "kez.test/sigchain-log")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, Config{Dir: filepath.Join(dir, "log"), Signer: signer, CheckpointInterval: MinCheckpointInterval}); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("Open with another key: %v, want ErrKeyMismatch", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	signer, _, err := LoadOrCreateKey(filepath.Join(dir, "log.key"), "o")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := LoadOrCreateKey(filepath.Join(dir, "other.key"), "o")
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]Config{
		"no dir":            {Signer: signer},
		"no signer":         {Dir: dir},
		"short interval":    {Dir: dir, Signer: signer, CheckpointInterval: MinCheckpointInterval / 2},
		"another key's key": {Dir: dir, Signer: signer, VerifierKey: other.(verifierKeyer).VerifierKey()},
		"not a key":         {Dir: dir, Signer: signer, VerifierKey: "nonsense"},
	} {
		if l, err := Open(ctx, c); err == nil {
			l.Close(ctx)
			t.Errorf("%s: Open succeeded", name)
		}
	}
}

// AppendAll keeps the order it was given, even with other appends racing
// it, and records every entry.
func TestAppendAllKeepsOrder(t *testing.T) {
	ctx := context.Background()
	l, _ := openTest(t, t.TempDir())
	var chain []translog.Entry
	for i := range 30 {
		chain = append(chain, entry(t, 7, uint64(i+1), fmt.Sprint("o", i)))
	}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := l.Append(ctx, entry(t, 8, uint64(i+1), fmt.Sprint("r", i))); err != nil {
				t.Error(err)
			}
		})
	}
	idx, err := l.AppendAll(ctx, chain)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for i := range idx {
		if i > 0 && idx[i] <= idx[i-1] {
			t.Fatalf("entry %d at %d, after entry %d at %d", i, idx[i], i-1, idx[i-1])
		}
		checkProof(t, l, chain[i], idx[i])
	}
	if got, x, ok, _ := l.Logged(ctx, chain[0].Key); !ok || got != chain[29] || x != idx[29] {
		t.Fatalf("Logged = %v at %d", got, x)
	}
	if idx, err := l.AppendAll(ctx, nil); err != nil || len(idx) != 0 {
		t.Fatalf("AppendAll(nil) = %v %v", idx, err)
	}
	bad := append(chain[:1:1], translog.Entry{Key: chain[0].Key, Seqno: 2})
	if _, err := l.AppendAll(ctx, bad); !errors.Is(err, translog.ErrBadEntry) {
		t.Fatalf("a bad entry among good ones: %v", err)
	}
}
