package files

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
)

// gatedSource holds back every request to the owner after its first until
// each other source was asked once, so that every source gets a task
// whatever the scheduling (no timing involved).
type gatedSource struct {
	BlobSource
	opens  atomic.Int64
	others *sync.WaitGroup // the owner's gate; nil for the other sources
	once   *sync.Once      // the other sources' part of the gate
	done   func()
}

func (g *gatedSource) OpenBlob(ctx context.Context, c cid.Cid) (Blob, error) {
	if g.opens.Add(1) > 1 && g.others != nil {
		g.others.Wait()
	}
	if g.once != nil {
		g.once.Do(g.done)
	}
	return g.BlobSource.OpenBlob(ctx, c)
}

// readerSource serves its blobs through readAt, which reads from the real
// blob and may change what it gives.
type readerSource struct {
	BlobSource
	readAt func(b Blob, p []byte, off int64) (int, error)
}

func (r readerSource) OpenBlob(ctx context.Context, c cid.Cid) (Blob, error) {
	b, err := r.BlobSource.OpenBlob(ctx, c)
	if err != nil {
		return nil, err
	}
	return readerBlob{b, r.readAt}, nil
}

type readerBlob struct {
	Blob
	readAt func(b Blob, p []byte, off int64) (int, error)
}

func (r readerBlob) ReadAt(p []byte, off int64) (int, error) { return r.readAt(r.Blob, p, off) }

// flipSource serves a blob with one byte of every chunk flipped.
func flipSource(s BlobSource) BlobSource {
	return readerSource{s, func(b Blob, p []byte, off int64) (int, error) {
		n, err := b.ReadAt(p, off)
		for i := range n {
			if (off+int64(i))%format.ChunkSize == 7 {
				p[i] ^= 0x80
			}
		}
		return n, err
	}}
}

// brokenSource cannot read its blobs' bytes, so every stream breaks off
// after the leaf hashes.
func brokenSource(s BlobSource) BlobSource {
	return readerSource{s, func(Blob, []byte, int64) (int, error) {
		return 0, errors.New("disk on fire")
	}}
}

// sourceSet is an owner and other sources that each hold the same blob, and
// a fetcher.
type sourceSet struct {
	nodes   []*Node // nodes[0] is the owner
	fetcher *Node
	src     string
	tree    *format.Tree
	dir     string
}

// newSwarm starts n sources of a size-byte blob; bad says which serve a
// flipped byte in every chunk. Every source gets at least one task of a
// fetch (see gatedSource).
func newSwarm(t *testing.T, n int, size int64, bad ...int) *sourceSet {
	t.Helper()
	dir := t.TempDir()
	sw := &sourceSet{dir: dir, src: writePattern(t, dir, "src", size)}
	fs := NewFileSource()
	tree, err := fs.AddFile(sw.src)
	must(t, err)
	sw.tree = tree
	var others sync.WaitGroup
	others.Add(n - 1)
	for i := range n {
		var s BlobSource = fs
		for _, b := range bad {
			if b == i {
				s = flipSource(fs)
			}
		}
		g := &gatedSource{BlobSource: s}
		if i == 0 {
			g.others = &others
		} else {
			g.once, g.done = new(sync.Once), others.Done
		}
		sw.nodes = append(sw.nodes, startNode(t, NodeConfig{Identity: testIdentity(t, byte(10+i)), Source: g}, "tcp"))
	}
	sw.fetcher = startNode(t, NodeConfig{Identity: testIdentity(t, 9)}, "tcp")
	return sw
}

func (sw *sourceSet) holders() []peer.AddrInfo {
	var hs []peer.AddrInfo
	for _, n := range sw.nodes[1:] {
		hs = append(hs, n.AddrInfo())
	}
	return hs
}

// byPeer sums the bytes WithRoutes reports, by source.
type byPeer struct {
	mu     sync.Mutex
	bytes  map[peer.ID]int64
	routes map[Route]int64
}

func (b *byPeer) option() FetchOption { return WithRoutes(b.add) }

func (b *byPeer) add(p peer.ID, r Route, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bytes == nil {
		b.bytes, b.routes = map[peer.ID]int64{}, map[Route]int64{}
	}
	b.bytes[p] += n
	b.routes[r] += n
}

// Two and three sources: the file is verified, every source served
// chunks, and every chunk was written once (the end game may have fetched
// some twice, keeping the first).
func TestFetchManySources(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(strings.Repeat("source,", n), func(t *testing.T) {
			const size = 40*format.ChunkSize + 999
			sw := newSwarm(t, n, size)
			dst := filepath.Join(sw.dir, "dst")
			var got byPeer
			var last atomic.Int64
			var writes writeCounter
			err := sw.fetcher.Fetch(context.Background(), sw.nodes[0].AddrInfo(), sw.tree.CID(), dst,
				WithSources(sw.holders()...), got.option(), WithProgress(func(v, _ int64) { last.Store(v) }), writes.option())
			must(t, err)
			writes.once(t, format.NumChunks(size))
			sameFile(t, sw.src, dst)
			noFile(t, dst+PartialSuffix)
			noFile(t, dst+StateSuffix)
			var chunks int64
			for i, node := range sw.nodes {
				servedWhenIdle(t, node) // a reset stream may still be counting
				st := node.Stats()
				if st.ChunksServed == 0 || got.bytes[node.ID()] == 0 {
					t.Errorf("source %d served %+v, %d bytes verified", i, st, got.bytes[node.ID()])
				}
				chunks += st.ChunksServed
			}
			st := sw.fetcher.Stats()
			if chunks < int64(format.NumChunks(size)) || chunks > int64(format.NumChunks(size))+st.EndGameCopies*taskChunks {
				t.Errorf("the sources served %d chunks of a %d-chunk blob, %d tasks copied", chunks, format.NumChunks(size), st.EndGameCopies)
			}
			if got.routes[RouteDirect] != size || last.Load() != size {
				t.Errorf("routes %v, last progress %d; want %d direct bytes", got.routes, last.Load(), size)
			}
		})
	}
}

// A source that sends a bad chunk is dropped at once: it is asked once,
// none of its bytes are kept, and the others complete the file.
func TestFetchDropsBadSource(t *testing.T) {
	const size = 40 * format.ChunkSize
	sw := newSwarm(t, 3, size, 1)
	dst := filepath.Join(sw.dir, "dst")
	var got byPeer
	must(t, sw.fetcher.Fetch(context.Background(), sw.nodes[0].AddrInfo(), sw.tree.CID(), dst,
		WithSources(sw.holders()...), got.option()))
	sameFile(t, sw.src, dst)
	bad := sw.nodes[1]
	if st := bad.Stats(); st.Requests != 1 || got.bytes[bad.ID()] != 0 {
		t.Errorf("the bad source: %+v, %d bytes kept; want one request and nothing kept", st, got.bytes[bad.ID()])
	}
	if got.bytes[sw.nodes[0].ID()]+got.bytes[sw.nodes[2].ID()] != size {
		t.Errorf("the good sources gave %v", got.bytes)
	}
}

// Every source bad: ErrCorrupt, as the owner's *SourceError, and nothing
// unverified on disk.
func TestFetchAllSourcesBad(t *testing.T) {
	sw := newSwarm(t, 2, 20*format.ChunkSize, 0, 1)
	dst := filepath.Join(sw.dir, "dst")
	err := sw.fetcher.Fetch(context.Background(), sw.nodes[0].AddrInfo(), sw.tree.CID(), dst, WithSources(sw.holders()...))
	var se *SourceError
	var ce *CorruptError
	if !errors.Is(err, ErrCorrupt) || !errors.As(err, &se) || se.Peer != sw.nodes[0].ID() || !errors.As(err, &ce) {
		t.Fatalf("err = %v, want the owner's SourceError wrapping a CorruptError", err)
	}
	noFile(t, dst)
	noFile(t, dst+PartialSuffix)
	noFile(t, dst+StateSuffix)
}

// A source that goes away mid-fetch: the others finish.
func TestFetchSourceGoesAway(t *testing.T) {
	const size = 60 * format.ChunkSize
	sw := newSwarm(t, 3, size)
	gone := sw.nodes[2]
	var once sync.Once
	var got byPeer
	dst := filepath.Join(sw.dir, "dst")
	must(t, sw.fetcher.Fetch(context.Background(), sw.nodes[0].AddrInfo(), sw.tree.CID(), dst,
		WithSources(sw.holders()...), WithRoutes(func(p peer.ID, r Route, n int64) {
			got.add(p, r, n)
			if p == gone.ID() {
				once.Do(func() { gone.Close() })
			}
		})))
	sameFile(t, sw.src, dst)
	if b := got.bytes[gone.ID()]; b == 0 || b >= size/2 {
		t.Errorf("the source that went away gave %d bytes", b)
	}
}

// WithSources and WithDecryption: the owner alone is asked, as the
// decryption needs the chunks in order.
func TestFetchDecryptingUsesOneSource(t *testing.T) {
	dir := t.TempDir()
	plain := writePattern(t, dir, "plain", 5*format.ChunkSize)
	enc := filepath.Join(dir, "enc")
	key, size, err := format.EncryptFile(enc, plain)
	must(t, err)
	fs := NewFileSource()
	tree, err := fs.AddFile(enc)
	must(t, err)
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 10), Source: fs}, "tcp")
	other := startNode(t, NodeConfig{Identity: testIdentity(t, 11), Source: fs}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 9)}, "tcp")
	dst := filepath.Join(dir, "dst")
	must(t, fetcher.Fetch(context.Background(), owner.AddrInfo(), tree.CID(), dst,
		WithSources(other.AddrInfo()), WithDecryption(key, size)))
	sameFile(t, plain, dst)
	if st := other.Stats(); st.Requests != 0 {
		t.Errorf("the other source was asked: %+v", st)
	}
}

// The sources given twice, or naming the fetcher itself, count once.
func TestFetchSourcesDeduplicated(t *testing.T) {
	sw := newSwarm(t, 1, 3*format.ChunkSize)
	dst := filepath.Join(sw.dir, "dst")
	must(t, sw.fetcher.Fetch(context.Background(), sw.nodes[0].AddrInfo(), sw.tree.CID(), dst,
		WithSources(sw.nodes[0].AddrInfo(), sw.fetcher.AddrInfo(), sw.nodes[0].AddrInfo())))
	sameFile(t, sw.src, dst)
}

// A stream that breaks mid-window (the connection closed under it) is
// reopened on a fresh connection from what was verified.
func TestFetchPathChange(t *testing.T) {
	const size = 32 * format.ChunkSize
	p := newPair(t, "tcp", nil)
	src := writePattern(t, p.dir, "src", size)
	tree, err := p.src.AddFile(src)
	must(t, err)
	dst := filepath.Join(p.dir, "dst")
	var once sync.Once
	must(t, p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst, WithProgress(func(v, _ int64) {
		if v >= 5*format.ChunkSize {
			once.Do(func() { p.fetcher.Host().Network().ClosePeer(p.owner.ID()) })
		}
	})))
	sameFile(t, src, dst)
	if st := p.owner.Stats(); st.Requests != 2 {
		t.Errorf("owner stats %+v, want two requests", st)
	}
}

// A stream that keeps breaking without progress is reopened three times,
// then the fetch fails, leaving nothing behind.
func TestFetchGivesUpAfterThreeBreaks(t *testing.T) {
	dir := t.TempDir()
	src := writePattern(t, dir, "src", 32*format.ChunkSize)
	fs := NewFileSource()
	tree, err := fs.AddFile(src)
	must(t, err)
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: brokenSource(fs)}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2)}, "tcp")
	dst := filepath.Join(dir, "dst")
	err = fetcher.Fetch(context.Background(), owner.AddrInfo(), tree.CID(), dst)
	var be *brokenError // the reset may come before or after the leaf hashes
	if !errors.As(err, &be) {
		t.Fatalf("err = %v, want a broken stream", err)
	}
	if st := owner.Stats(); st.Requests != 1+maxBreaks {
		t.Errorf("owner stats %+v, want %d requests", st, 1+maxBreaks)
	}
	noFile(t, dst)
	noFile(t, dst+PartialSuffix)
	noFile(t, dst+StateSuffix)
}

// Over a relayed connection a request asks for at most 64 chunks, so that
// the next one can take a direct connection once there is one.
func TestFetchRelayedWindows(t *testing.T) {
	const size = 130 * format.ChunkSize
	relay := startRelay(t, nil)
	src := NewFileSource()
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: src, Relays: []peer.AddrInfo{relay.info()},
		NoHolePunching: true, Libp2pOptions: []libp2p.Option{noDirectAddrs}}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2), NoHolePunching: true}, "tcp")
	reserved(t, owner)
	dir := t.TempDir()
	path := writePattern(t, dir, "src", size)
	tree, err := src.AddFile(path)
	must(t, err)
	var got byPeer
	dst := filepath.Join(dir, "dst")
	must(t, fetcher.Fetch(context.Background(), owner.AddrInfo(), tree.CID(), dst, got.option()))
	sameFile(t, path, dst)
	if st := owner.Stats(); st.Requests != 3 || st.BytesServed != size {
		t.Errorf("owner stats %+v, want 3 requests (64, 64 and 2 chunks)", st)
	}
	if got.routes[RouteRelayed] != size {
		t.Errorf("bytes per route %v", got.routes)
	}
}

// servedWhenIdle returns the bytes n served, once it serves nothing: a
// stream the fetcher reset may still be counting what it wrote after the
// fetch returned.
func servedWhenIdle(t *testing.T, n *Node) int64 {
	t.Helper()
	n.mu.Lock()
	idle := n.idle
	n.mu.Unlock()
	select {
	case <-idle:
	case <-t.Context().Done():
		t.Fatal("the node stays busy")
	}
	return n.Stats().BytesServed
}
