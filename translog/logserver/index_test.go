package logserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
)

// inIndex reads the newest row of key from index.db itself, past the
// cache.
func inIndex(t testing.TB, l *Log, key kez.PublicKey) newest {
	t.Helper()
	var idx, seqno int64
	var id string
	err := l.db.QueryRow(`SELECT idx, seqno, id FROM entries WHERE key = ? ORDER BY idx DESC LIMIT 1`, key.String()).Scan(&idx, &seqno, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return newest{}
	}
	if err != nil {
		t.Fatal(err)
	}
	return newest{e: translog.Entry{Key: key, Seqno: uint64(seqno), ID: id}, idx: uint64(idx), ok: true}
}

// wantCoherent checks that every key the cache holds is held as index.db
// says, and that Logged of each of keys answers what index.db holds.
func wantCoherent(t testing.TB, what string, l *Log, keys ...kez.PublicKey) {
	t.Helper()
	l.newest.mu.Lock()
	cached := make(map[kez.PublicKey]newest, len(l.newest.m))
	for k, n := range l.newest.m {
		cached[k] = n
	}
	l.newest.mu.Unlock()
	for k, n := range cached {
		if want := inIndex(t, l, k); n != want {
			t.Fatalf("%s: the cache holds %+v for %s, index.db %+v", what, n, k, want)
		}
	}
	for _, k := range keys {
		e, idx, ok, err := l.Logged(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := (newest{e: e, idx: idx, ok: ok}), inIndex(t, l, k); got != want {
			t.Fatalf("%s: Logged(%s) = %+v, index.db %+v", what, k, got, want)
		}
	}
}

// Hundreds of appends at once across many keys, several to each key, are
// recorded by group commits: each gets its row (Logged, Proof) and a proof
// that verifies, the cache agrees with index.db, and so does a log opened
// again (its cache empty).
func TestGroupCommit(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, _ := openTest(t, dir)
	const n, keys = 400, 50
	es := make([]translog.Entry, n)
	idx := make([]uint64, n)
	var wg sync.WaitGroup
	for i := range n {
		es[i] = entry(t, byte(i%keys), uint64(i/keys+1), fmt.Sprint("g", i))
		wg.Go(func() {
			x, err := l.Append(ctx, es[i])
			if err != nil {
				t.Error(err)
			}
			idx[i] = x
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	seen := map[uint64]bool{}
	newestOf := map[kez.PublicKey]int{} // key → i of its entry at the highest index
	for i, x := range idx {
		if seen[x] || x >= n {
			t.Fatalf("index %d given twice or out of range", x)
		}
		seen[x] = true
		checkProof(t, l, es[i], x)
		if j, ok := newestOf[es[i].Key]; !ok || idx[j] < x {
			newestOf[es[i].Key] = i
		}
	}
	var all []kez.PublicKey
	for k := range newestOf {
		all = append(all, k)
	}
	check := func(what string, l *Log) {
		for k, i := range newestOf {
			if e, x, ok, err := l.Logged(ctx, k); err != nil || !ok || e != es[i] || x != idx[i] {
				t.Fatalf("%s: Logged(%s) = %v at %d %v %v, want %v at %d", what, k, e, x, ok, err, es[i], idx[i])
			}
		}
		wantCoherent(t, what, l, all...)
	}
	check("after the appends", l)
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	l, _ = openTest(t, dir)
	check("reopened", l)
}

// The cache never answers an entry index.db does not hold: not after
// Open dropped the rows past the published checkpoint (the log's files
// restored from an older copy), whatever the log that wrote them had
// cached, and not for keys with no entry.
func TestCacheAfterOpenCleanup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	logDir, backup := filepath.Join(dir, "log"), filepath.Join(dir, "backup")
	l, _ := openTest(t, dir)
	a, b := entry(t, 1, 1, "a1"), entry(t, 2, 1, "b1")
	if _, err := l.Append(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", logDir, backup).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	l, _ = openTest(t, dir)
	if _, err := l.AppendAll(ctx, []translog.Entry{entry(t, 1, 2, "a2"), b}); err != nil {
		t.Fatal(err)
	}
	wantCoherent(t, "before the restore", l, a.Key, b.Key)
	if e, _, ok, _ := l.Logged(ctx, b.Key); !ok || e != b {
		t.Fatalf("Logged(b) before the restore = %v %v", e, ok)
	}
	if err := l.Close(ctx); err != nil {
		t.Fatal(err)
	}
	restoreKeepingIndex(t, dir, logDir, backup)
	l, _ = openTest(t, dir)
	if e, x, ok, err := l.Logged(ctx, a.Key); err != nil || !ok || e != a || x != 0 {
		t.Fatalf("Logged(a) after the restore = %v at %d %v %v, want %v at 0", e, x, ok, err, a)
	}
	if e, _, ok, err := l.Logged(ctx, b.Key); err != nil || ok {
		t.Fatalf("Logged(b) after the restore = %v %v %v, want none: its row was past the log", e, ok, err)
	}
	wantCoherent(t, "after the restore", l, a.Key, b.Key)
	// The key with no entry was cached as such; its first append updates it.
	x, err := l.Append(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if e, at, ok, _ := l.Logged(ctx, b.Key); !ok || e != b || at != x {
		t.Fatalf("Logged(b) after its append = %v at %d %v, want at %d", e, at, ok, x)
	}
	wantCoherent(t, "after appending again", l, a.Key, b.Key)
}

// The cache keeps the newest entry by index whatever the order of the
// commits, drops fills read before a commit, and after evicting a key never
// takes an older entry of it for the newest.
func TestNewestEntries(t *testing.T) {
	k1, k2, k3 := testKey(t, 1), testKey(t, 2), testKey(t, 3)
	e := func(k kez.PublicKey, seqno uint64) translog.Entry {
		return translog.Entry{Key: k, Seqno: seqno, ID: testID(t, fmt.Sprint(k, seqno))}
	}
	c := &newestEntries{limit: 2}
	want := func(what string, k kez.PublicKey, wantHit bool, wantIdx uint64) {
		t.Helper()
		n, hit, _ := c.get(k)
		if hit != wantHit || hit && n.idx != wantIdx {
			t.Fatalf("%s: %+v hit %v, want hit %v at %d", what, n, hit, wantHit, wantIdx)
		}
	}
	// Commits out of index order: the newest by index stays.
	c.recorded(e(k1, 2), 9)
	c.recorded(e(k1, 1), 5)
	want("commits out of order", k1, true, 9)
	// A read that raced a commit is not cached.
	_, _, gen := c.get(k2)
	c.recorded(e(k3, 1), 10)
	c.put(k2, newest{}, gen)
	want("a fill read before a commit", k2, false, 0)
	_, _, gen = c.get(k2)
	c.put(k2, newest{}, gen)
	want("a fill with no commit since", k2, true, 0)
	// One key at most: k2's entry evicts k1's newest (index 9); k1's
	// older entry (index 5), committed after, is not cached (the next
	// read asks index.db); one newer than everything evicted is.
	c = &newestEntries{limit: 1}
	c.recorded(e(k1, 2), 9)
	c.recorded(e(k2, 1), 10)
	want("evicted", k1, false, 0)
	c.recorded(e(k1, 1), 5)
	want("an older entry after an eviction", k1, false, 0)
	want("the other key", k2, true, 10)
	c.recorded(e(k1, 3), 12)
	want("a newer entry after an eviction", k1, true, 12)
}
