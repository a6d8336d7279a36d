package files

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/libp2p/go-libp2p/core/peer"
)

// writeCounter counts the writes of each chunk to the partial file.
type writeCounter struct {
	mu sync.Mutex
	n  map[int]int
}

func (w *writeCounter) option() FetchOption {
	return func(c *fetchConfig) {
		c.onWrite = func(idx int) {
			w.mu.Lock()
			defer w.mu.Unlock()
			if w.n == nil {
				w.n = map[int]int{}
			}
			w.n[idx]++
		}
	}
}

// once checks that each of the blob's nchunks chunks was written exactly
// once.
func (w *writeCounter) once(t *testing.T, nchunks int) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	for i := range nchunks {
		if w.n[i] != 1 {
			t.Errorf("chunk %d written %d times", i, w.n[i])
		}
	}
	if len(w.n) != nchunks {
		t.Errorf("%d chunks written, of %d", len(w.n), nchunks)
	}
}

// stallSource serves its blobs' requests but, where stall says, goes
// silent until stop is closed: before its answer (opening the blob) or
// after the leaf hashes (reading the bytes), where it first lets pass
// the first reads (of up to 4 chunks each).
type stallSource struct {
	BlobSource
	beforeAnswer bool
	pass         int
	stop         <-chan struct{}
}

func (s stallSource) OpenBlob(ctx context.Context, c cid.Cid) (Blob, error) {
	if s.beforeAnswer {
		<-s.stop
	}
	b, err := s.BlobSource.OpenBlob(ctx, c)
	if err != nil {
		return nil, err
	}
	var reads atomic.Int64
	return readerBlob{b, func(b Blob, p []byte, off int64) (int, error) {
		if reads.Add(1) > int64(s.pass) {
			<-s.stop
		}
		return b.ReadAt(p, off)
	}}, nil
}

// endGameCase is an owner and one holder of a 40-chunk blob, each serving
// it through a wrapper of the test's, and a fetcher whose StallTimeout is
// an hour, so that only the end game can end a fetch stalled by a source
// within the test's guard. stop is closed when the test ends.
type endGameCase struct {
	owner, holder, fetcher *Node
	src, dst               string
	c                      cid.Cid
	stop                   chan struct{}
	got                    byPeer
	writes                 writeCounter
	onRoute                func(p peer.ID, n int64) // also called as chunks land
}

const endGameSize = 40 * format.ChunkSize

func newEndGameCase(t *testing.T, owner, holder func(fs BlobSource, stop <-chan struct{}) BlobSource) *endGameCase {
	t.Helper()
	dir := t.TempDir()
	e := &endGameCase{src: writePattern(t, dir, "src", endGameSize), dst: filepath.Join(dir, "dst"), stop: make(chan struct{})}
	fs := NewFileSource()
	tree, err := fs.AddFile(e.src)
	must(t, err)
	e.c = tree.CID()
	e.owner = startNode(t, NodeConfig{Identity: testIdentity(t, 10), Source: owner(fs, e.stop)}, "tcp")
	e.holder = startNode(t, NodeConfig{Identity: testIdentity(t, 11), Source: holder(fs, e.stop)}, "tcp")
	e.fetcher = startNode(t, NodeConfig{Identity: testIdentity(t, 9), StallTimeout: time.Hour}, "tcp")
	t.Cleanup(func() { close(e.stop) }) // runs before the nodes close
	return e
}

// gated returns the sources of an owner whose requests after its first
// wait for gate, and of a holder that releases it when first asked.
func gated() (owner, holder func(BlobSource, <-chan struct{}) BlobSource, gate *sync.WaitGroup) {
	gate = new(sync.WaitGroup)
	gate.Add(1)
	owner = func(fs BlobSource, _ <-chan struct{}) BlobSource { return &gatedSource{BlobSource: fs, others: gate} }
	holder = func(s BlobSource, _ <-chan struct{}) BlobSource {
		return &gatedSource{BlobSource: s, once: new(sync.Once), done: gate.Done}
	}
	return owner, holder, gate
}

// fetch fetches the blob from the owner and the holder and checks the
// file and that every chunk was written once.
func (e *endGameCase) fetch(t *testing.T, opts ...FetchOption) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // a guard: an hour without the end game
	defer cancel()
	opts = append(opts, WithSources(e.holder.AddrInfo()), e.writes.option(), WithRoutes(func(p peer.ID, r Route, n int64) {
		e.got.add(p, r, n)
		if e.onRoute != nil {
			e.onRoute(p, n)
		}
	}))
	must(t, e.fetcher.Fetch(ctx, e.owner.AddrInfo(), e.c, e.dst, opts...))
	sameFile(t, e.src, e.dst)
	e.writes.once(t, format.NumChunks(endGameSize))
}

// A holder that takes a task and then goes silent, before its answer or
// after its leaf hashes, costs the fetch no timeout: once the owner has
// nothing left to do it copies the holder's task and finishes it, the
// holder's stream is reset, and nothing of it is kept.
func TestFetchSilentHolder(t *testing.T) {
	for _, before := range []bool{true, false} {
		t.Run(map[bool]string{true: "before the answer", false: "after the leaf hashes"}[before], func(t *testing.T) {
			owner, holder, _ := gated()
			e := newEndGameCase(t, owner, func(fs BlobSource, stop <-chan struct{}) BlobSource {
				return holder(stallSource{BlobSource: fs, beforeAnswer: before, stop: stop}, stop)
			})
			e.fetch(t)
			if e.got.bytes[e.holder.ID()] != 0 || e.got.bytes[e.owner.ID()] != endGameSize {
				t.Errorf("bytes by source %v; want all from the owner", e.got.bytes)
			}
			if st := e.fetcher.Stats(); st.Stalls != 0 || st.EndGameCopies != 1 {
				t.Errorf("fetcher stats %+v, want no stall and one task copied", st)
			}
			if st := e.owner.Stats(); st.Requests != 3 {
				t.Errorf("owner stats %+v, want 3 requests (its two tasks and the copy)", st)
			}
		})
	}
}

// A holder that trickles (here: one read of 4 chunks, then nothing) costs
// no timeout either: the owner copies its task from the first chunk it
// did not send, and what it sent is kept.
func TestFetchTricklingHolder(t *testing.T) {
	owner, _, gate := gated() // the owner's second request waits for the holder's 4 chunks
	e := newEndGameCase(t, owner, func(fs BlobSource, stop <-chan struct{}) BlobSource {
		return stallSource{BlobSource: fs, pass: 1, stop: stop}
	})
	var kept atomic.Int64
	e.onRoute = func(p peer.ID, n int64) {
		if p == e.holder.ID() && kept.Add(n) == 4*format.ChunkSize {
			gate.Done()
		}
	}
	e.fetch(t)
	if h, o := e.got.bytes[e.holder.ID()], e.got.bytes[e.owner.ID()]; h != 4*format.ChunkSize || o != endGameSize-h {
		t.Errorf("bytes by source %v; want 4 chunks from the holder, the rest from the owner", e.got.bytes)
	}
	if st := e.fetcher.Stats(); st.Stalls != 0 || st.EndGameCopies != 1 {
		t.Errorf("fetcher stats %+v, want no stall and one task copied", st)
	}
}

// Two honest sources both fetch the last task (the holder's, held back
// until the owner's copy asks for it, then both at full speed): the file
// is verified, each chunk written once and counted once in the progress,
// whichever copy wins it. Run under -race.
func TestFetchEndGameRace(t *testing.T) {
	for range 4 {
		// The holder's first read waits until the owner reads the same
		// offset: the owner's copy of the holder's task.
		var first atomic.Int64
		first.Store(-1)
		copied := make(chan struct{})
		var copyOnce sync.Once
		owner, holder, _ := gated()
		e := newEndGameCase(t, func(fs BlobSource, stop <-chan struct{}) BlobSource {
			return owner(readerSource{fs, func(b Blob, p []byte, off int64) (int, error) {
				if off == first.Load() {
					copyOnce.Do(func() { close(copied) })
				}
				return b.ReadAt(p, off)
			}}, stop)
		}, func(fs BlobSource, stop <-chan struct{}) BlobSource {
			return holder(readerSource{fs, func(b Blob, p []byte, off int64) (int, error) {
				if first.CompareAndSwap(-1, off) {
					<-copied
				}
				return b.ReadAt(p, off)
			}}, stop)
		})
		var mu sync.Mutex
		var last int64
		e.fetch(t, WithProgress(func(v, _ int64) {
			mu.Lock()
			defer mu.Unlock()
			if v < last || v > endGameSize {
				t.Errorf("progress %d after %d", v, last)
			}
			last = v
		}))
		if last != endGameSize || e.got.bytes[e.owner.ID()]+e.got.bytes[e.holder.ID()] != endGameSize {
			t.Errorf("progress ended at %d, bytes by source %v", last, e.got.bytes)
		}
		st := e.fetcher.Stats()
		if st.EndGameCopies != 1 || st.Stalls != 0 {
			t.Errorf("fetcher stats %+v, want one task copied", st)
		}
		t.Logf("bytes by source %v, %d chunks dropped as duplicates", e.got.bytes, st.DuplicateChunks)
	}
}
