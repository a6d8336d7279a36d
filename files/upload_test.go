package files

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/kez-lat/kez-chat/files/format"
	"golang.org/x/time/rate"
)

// countingLimiter is a real token bucket that also records what it was
// asked for.
type countingLimiter struct {
	*rate.Limiter
	mu    sync.Mutex
	calls []int
}

func (c *countingLimiter) WaitN(ctx context.Context, n int) error {
	c.mu.Lock()
	c.calls = append(c.calls, n)
	c.mu.Unlock()
	return c.Limiter.WaitN(ctx, n)
}

// NodeConfig.MaxUploadRate becomes a token bucket of that rate holding one
// chunk; zero is none; a negative rate is refused.
func TestMaxUploadRateConfig(t *testing.T) {
	n := startNode(t, NodeConfig{Identity: testIdentity(t, 1), MaxUploadRate: 3 << 20}, "tcp")
	l, ok := n.upload.(*rate.Limiter)
	if !ok || l.Limit() != 3<<20 || l.Burst() != format.ChunkSize {
		t.Fatalf("upload limiter %#v", n.upload)
	}
	if n := startNode(t, NodeConfig{Identity: testIdentity(t, 2)}, "tcp"); n.upload != nil {
		t.Errorf("no rate, yet a limiter %#v", n.upload)
	}
	if _, err := NewNode(NodeConfig{Identity: testIdentity(t, 3), MaxUploadRate: -1, ListenAddrs: listenAddrs("tcp")}); err == nil {
		t.Error("a negative rate was accepted")
	}
}

// Every chunk a node serves is taken from its upload bucket first, chunk
// by chunk; the leaf hashes of a re-verification are not.
func TestMaxUploadRatePacesEveryChunk(t *testing.T) {
	const size = 9*format.ChunkSize + 17
	p := newPair(t, "tcp", nil)
	lim := &countingLimiter{Limiter: rate.NewLimiter(rate.Inf, format.ChunkSize)}
	p.owner.upload = lim
	tree, err := p.src.AddFile(writePattern(t, p.dir, "src", size))
	must(t, err)
	must(t, p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), filepath.Join(p.dir, "dst")))
	var sum int64
	for _, n := range lim.calls {
		if n > format.ChunkSize {
			t.Errorf("took %d bytes at once, more than a chunk", n)
		}
		sum += int64(n)
	}
	if len(lim.calls) != format.NumChunks(size) || sum != size {
		t.Errorf("the bucket was asked %d times for %d bytes, want %d times for %d", len(lim.calls), sum, format.NumChunks(size), size)
	}
}

// A node out of tokens sends nothing more: a fetch from it waits, and
// ends with its context.
func TestMaxUploadRateHoldsBack(t *testing.T) {
	p := newPair(t, "tcp", nil)
	lim := rate.NewLimiter(1, format.ChunkSize) // one chunk, then a byte a second
	p.owner.upload = lim
	tree, err := p.src.AddFile(writePattern(t, p.dir, "src", 4*format.ChunkSize))
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	var got int64
	err = p.fetcher.Fetch(ctx, p.owner.AddrInfo(), tree.CID(), filepath.Join(p.dir, "dst"), WithProgress(func(v, _ int64) {
		if got = v; v == format.ChunkSize {
			cancel()
		}
	}))
	if err == nil || got != format.ChunkSize {
		t.Fatalf("err = %v after %d bytes; want the fetch held back after one chunk", err, got)
	}
}
