package files

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
)

// testIdentity returns a deterministic identity; i picks which.
func testIdentity(t testing.TB, i byte) *kez.Identity {
	t.Helper()
	seed := bytes.Repeat([]byte{i}, 64)
	id, err := kez.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func listenAddrs(transport string) []string {
	if transport == "quic" {
		return []string{"/ip4/127.0.0.1/udp/0/quic-v1"}
	}
	return []string{"/ip4/127.0.0.1/tcp/0"}
}

func startNode(t testing.TB, cfg NodeConfig, transport string) *Node {
	t.Helper()
	if cfg.ListenAddrs == nil {
		cfg.ListenAddrs = listenAddrs(transport)
	}
	n, err := NewNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// writePattern writes size pattern bytes to a new file under dir.
func writePattern(t testing.TB, dir, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pattern(size), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type pair struct {
	owner, fetcher *Node
	src            *FileSource
	dir            string
}

func newPair(t testing.TB, transport string, policy Policy) pair {
	t.Helper()
	src := NewFileSource()
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: src, Policy: policy}, transport)
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2)}, transport)
	return pair{owner: owner, fetcher: fetcher, src: src, dir: t.TempDir()}
}

func sameFile(t testing.TB, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ (%d and %d bytes)", a, b, len(x), len(y))
	}
}

func noFile(t testing.TB, p string) {
	t.Helper()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s exists (err %v); it should not", p, err)
	}
}

func TestFetch64MiB(t *testing.T) {
	for _, tr := range []string{"tcp", "quic"} {
		t.Run(tr, func(t *testing.T) {
			p := newPair(t, tr, nil)
			src := writePattern(t, p.dir, "src", 64<<20)
			tree, err := p.src.AddFile(src)
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(p.dir, "dst")
			var last, total atomic.Int64
			err = p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst,
				WithProgress(func(v, tot int64) { last.Store(v); total.Store(tot) }))
			if err != nil {
				t.Fatal(err)
			}
			sameFile(t, src, dst)
			if last.Load() != 64<<20 || total.Load() != 64<<20 {
				t.Errorf("last progress = %d/%d", last.Load(), total.Load())
			}
			noFile(t, dst+PartialSuffix)
			noFile(t, dst+StateSuffix)
			if st := p.owner.Stats(); st.BytesServed != 64<<20 || st.ChunksServed != 256 {
				t.Errorf("owner stats %+v", st)
			}
		})
	}
}

func TestFetchSmallSizes(t *testing.T) {
	p := newPair(t, "tcp", nil)
	for _, size := range []int64{0, 1, format.ChunkSize - 1, format.ChunkSize, format.ChunkSize + 1, 5*format.ChunkSize + 17} {
		src := writePattern(t, p.dir, "src", size)
		tree, err := p.src.AddFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(p.dir, "dst")
		if err := p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		sameFile(t, src, dst)
	}
}

func TestFetchUnknownCID(t *testing.T) {
	p := newPair(t, "tcp", nil)
	other := treeOf(t, []byte("never shared"))
	dst := filepath.Join(p.dir, "dst")
	err := p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), other.CID(), dst)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	noFile(t, dst)
	noFile(t, dst+PartialSuffix) // a refused fetch leaves nothing behind
	noFile(t, dst+StateSuffix)
}

func TestFetchBadCID(t *testing.T) {
	p := newPair(t, "tcp", nil)
	c, err := cid.Decode("bafkqaaa")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), c, filepath.Join(p.dir, "x")); !errors.Is(err, format.ErrBadCID) {
		t.Fatalf("err = %v, want ErrBadCID", err)
	}
}

// TestFetchCorrupt: the owner's file changes on disk after it was hashed,
// so it serves a chunk that does not match the CID.
func TestFetchCorrupt(t *testing.T) {
	p := newPair(t, "tcp", nil)
	src := writePattern(t, p.dir, "src", 8*format.ChunkSize+100)
	tree, err := p.src.AddFile(src)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, 5*format.ChunkSize+3); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dst := filepath.Join(p.dir, "dst")
	err = p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || ce.Index != 5 {
		t.Fatalf("err = %v, want a CorruptError at chunk 5", err)
	}
	noFile(t, dst)
	// What is kept is exactly the verified prefix.
	part, err := os.ReadFile(dst + PartialSuffix)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(part, pattern(5*format.ChunkSize)) {
		t.Fatalf("partial file holds %d bytes, not the 5 verified chunks", len(part))
	}
	// Once the owner's file is right again, the fetch resumes and completes.
	writePattern(t, p.dir, "src", 8*format.ChunkSize+100)
	before := servedWhenIdle(t, p.owner)
	if err := p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst); err != nil {
		t.Fatal(err)
	}
	sameFile(t, src, dst)
	if got := p.owner.Stats().BytesServed - before; got != 3*format.ChunkSize+100 {
		t.Errorf("resumed fetch served %d bytes, want %d", got, 3*format.ChunkSize+100)
	}
}

// TestFetchResume cancels a fetch at about half way and checks that the
// second fetch transfers only what was missing.
func TestFetchResume(t *testing.T) {
	const size = 16 << 20
	p := newPair(t, "tcp", nil)
	src := writePattern(t, p.dir, "src", size)
	tree, err := p.src.AddFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(p.dir, "dst")
	ctx, cancel := context.WithCancel(context.Background())
	var atCancel int64
	err = p.fetcher.Fetch(ctx, p.owner.AddrInfo(), tree.CID(), dst, WithProgress(func(v, total int64) {
		if v >= total/2 && atCancel == 0 {
			atCancel = v
			cancel()
		}
	}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	noFile(t, dst)
	if atCancel != size/2 {
		t.Fatalf("cancelled at %d", atCancel)
	}
	part, err := os.Stat(dst + PartialSuffix)
	if err != nil || part.Size() != atCancel {
		t.Fatalf("partial file: %v, %v; want %d bytes", part, err, atCancel)
	}
	before := servedWhenIdle(t, p.owner)
	var first int64 = -1
	err = p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst, WithProgress(func(v, total int64) {
		if first < 0 {
			first = v
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, src, dst)
	if first != atCancel {
		t.Errorf("resumed progress started at %d, want %d", first, atCancel)
	}
	if got := p.owner.Stats().BytesServed - before; got != size-atCancel {
		t.Errorf("resumed fetch served %d bytes, want %d", got, size-atCancel)
	}
}

// TestResumeAfterOwnerRestart: the owner goes away mid-transfer; a retry
// while it is unreachable leaves the partial file alone; once the owner is
// back (new process, new addresses, same key) the fetch resumes.
func TestResumeAfterOwnerRestart(t *testing.T) {
	const size = 8 << 20
	p := newPair(t, "tcp", nil)
	src := writePattern(t, p.dir, "src", size)
	tree, err := p.src.AddFile(src)
	must(t, err)
	dst := filepath.Join(p.dir, "dst")
	ctx, cancel := context.WithCancel(context.Background())
	err = p.fetcher.Fetch(ctx, p.owner.AddrInfo(), tree.CID(), dst, WithProgress(func(v, total int64) {
		if v >= 3*format.ChunkSize {
			cancel()
		}
	}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	state, err := os.ReadFile(dst + StateSuffix)
	must(t, err)
	info := p.owner.AddrInfo()
	p.owner.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := p.fetcher.Fetch(ctx2, info, tree.CID(), dst); err == nil {
		t.Fatal("fetched from a closed owner")
	}
	if st, err := os.Stat(dst + PartialSuffix); err != nil || st.Size() != 3*format.ChunkSize {
		t.Fatalf("partial file after a failed retry: %v, %v", st, err)
	}
	if again, _ := os.ReadFile(dst + StateSuffix); !bytes.Equal(again, state) {
		t.Fatalf("state file changed: %q -> %q", state, again)
	}
	owner2 := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: p.src}, "tcp")
	must(t, p.fetcher.Fetch(context.Background(), owner2.AddrInfo(), tree.CID(), dst))
	sameFile(t, src, dst)
	if got := owner2.Stats().BytesServed; got != size-3*format.ChunkSize {
		t.Errorf("restarted owner served %d bytes, want %d", got, size-3*format.ChunkSize)
	}
}

func TestFetchSameDestinationTwice(t *testing.T) {
	p := newPair(t, "tcp", nil)
	release, err := p.fetcher.claimDest(filepath.Join(p.dir, "dst"))
	must(t, err)
	defer release()
	tree := treeOf(t, []byte("x"))
	if err := p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), filepath.Join(p.dir, "dst")); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("err = %v", err)
	}
}
