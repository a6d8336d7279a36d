package files_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
	libp2ppeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nats.go"
)

// reSharer opens a stack user's sharing with Reshare on its own NATS
// login (so the test can flush what it published), serving.
func (h *holdersStack) reSharer(t *testing.T, name string, reshare bool) (*peer, *nats.Conn) {
	t.Helper()
	u := h.st.NewUser(t, name)
	nc := login(t, h.st, u.Identity)
	p := openWith(t, h.st, u, client.Config{Identity: u.Identity, Home: u.Home}, func(c *files.Config) {
		c.Reshare, c.NATS = reshare, nc
	})
	noErr(t, p.StartServing(context.Background()))
	return p, nc
}

// fetchFrom fetches blob c from p's node with a fresh node of its own
// (a stranger to the stack) and returns where it went.
func fetchFrom(t *testing.T, p *peer, c cid.Cid) (string, error) {
	t.Helper()
	n, err := files.NewNode(files.NodeConfig{Identity: testKey(t, 0x77), ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	noErr(t, err)
	defer n.Close()
	dst := filepath.Join(t.TempDir(), "got")
	return dst, n.Fetch(context.Background(), libp2ppeer.AddrInfo{ID: p.DeviceKey().PeerID(), Addrs: p.Addrs()}, c, dst)
}

// A public fetch is recorded; with Reshare the fetcher serves the file
// to anyone and tells the owner, who names it as a holder; a private
// fetch is neither recorded nor served nor announced; without Reshare a
// fetched file is recorded but not served; a re-shared file that changed
// on disk (size, or content with its time put back) is not served.
func TestReshare(t *testing.T) {
	h := startHolders(t)
	ctx := context.Background()
	carol, cnc := h.reSharer(t, "carol", true)
	dir := t.TempDir()

	pubDst := filepath.Join(dir, "pub.bin")
	if _, err := carol.Fetch(ctx, h.alice.handle(), "pub.bin", pubDst); err != nil {
		t.Fatal(err)
	}
	noErr(t, cnc.Flush())
	if got := h.holders(t, h.pub.CID); !slices.Equal(got, []kez.PublicKey{carol.DeviceKey()}) {
		t.Fatalf("alice names the holders %v, want carol", got)
	}
	list, err := carol.Fetched(ctx)
	noErr(t, err)
	if len(list) != 1 || list[0].Path != pubDst || !list[0].CID.Equals(h.pub.CID) || list[0].Owner != h.alice.handle() ||
		list[0].Device != h.alice.DeviceKey() || list[0].Changed || list[0].Size != h.pub.Size {
		t.Fatalf("carol's fetched files: %+v", list)
	}
	got, err := fetchFrom(t, carol, h.pub.CID)
	noErr(t, err)
	sameFile(t, got, h.pubSrc)

	// A private file shared with carol: fetched, never recorded, served
	// or announced, re-sharing or not.
	privSrc := filepath.Join(t.TempDir(), "secret.txt")
	writeRandom(t, privSrc, 5000, 9)
	priv, err := h.alice.Share(ctx, privSrc, files.To("carol"))
	noErr(t, err)
	if _, err := carol.Fetch(ctx, h.alice.handle(), "secret.txt", filepath.Join(dir, "secret.txt")); err != nil {
		t.Fatal(err)
	}
	noErr(t, cnc.Flush())
	if list, _ := carol.Fetched(ctx); len(list) != 1 {
		t.Fatalf("a private fetch was recorded: %+v", list)
	}
	if _, err := fetchFrom(t, carol, priv.CID); !errors.Is(err, files.ErrNotFound) {
		t.Fatalf("carol's node re-served a private file: %v", err)
	}
	if got := h.holders(t, priv.CID); len(got) != 0 {
		t.Fatalf("holders of a private file: %v", got)
	}
	if s := h.alice.Stats().Holders; s.Kept != 1 || s.NotPublic != 0 {
		t.Fatalf("alice's holder stats %+v", s)
	}

	// Without Reshare the fetch is recorded, and not served.
	dave, _ := h.reSharer(t, "dave", false)
	if _, err := dave.Fetch(ctx, h.alice.handle(), "pub.bin", filepath.Join(t.TempDir(), "pub.bin")); err != nil {
		t.Fatal(err)
	}
	if list, _ := dave.Fetched(ctx); len(list) != 1 {
		t.Fatalf("dave's fetched files: %+v", list)
	}
	if _, err := fetchFrom(t, dave, h.pub.CID); !errors.Is(err, files.ErrNotFound) {
		t.Fatalf("a node without Reshare re-served a fetched file: %v", err)
	}

	// Changed on disk: carol's copy grows; it is not served any more.
	f, err := os.OpenFile(pubDst, os.O_WRONLY|os.O_APPEND, 0)
	noErr(t, err)
	f.Write([]byte("x"))
	f.Close()
	if _, err := fetchFrom(t, carol, h.pub.CID); !errors.Is(err, files.ErrNotFound) {
		t.Fatalf("a changed re-shared file was served: %v", err)
	}
	if list, _ := carol.Fetched(ctx); len(list) != 1 || !list[0].Changed {
		t.Fatalf("carol's fetched files: %+v", list)
	}
	if !strings.Contains(carol.log.String(), "changed on disk since it was fetched") {
		t.Error("no log line for the changed file")
	}
}

// A re-shared file whose bytes change while its size and modification
// time stay (put back) is hashed before it is first served, and not
// served.
func TestReshareChangedSameStat(t *testing.T) {
	h := startHolders(t)
	ctx := context.Background()
	carol, _ := h.reSharer(t, "carol", true)
	dst := filepath.Join(t.TempDir(), "pub.bin")
	if _, err := carol.Fetch(ctx, h.alice.handle(), "pub.bin", dst); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(dst)
	noErr(t, err)
	f, err := os.OpenFile(dst, os.O_WRONLY, 0)
	noErr(t, err)
	f.WriteAt([]byte{0xff, 0xfe}, 1<<20)
	f.Close()
	noErr(t, os.Chtimes(dst, st.ModTime(), st.ModTime()))
	if _, err := fetchFrom(t, carol, h.pub.CID); !errors.Is(err, files.ErrNotFound) {
		t.Fatalf("a tampered re-shared file was served: %v", err)
	}
	if !strings.Contains(carol.log.String(), "no longer the blob it was fetched as") {
		t.Error("no log line for the tampered file")
	}
}

// badSource serves blob c with the right tree and wrong bytes: a holder
// that lies.
type badSource struct {
	path string
	tree *format.Tree
}

func (b badSource) OpenBlob(_ context.Context, c cid.Cid) (files.Blob, error) {
	if !c.Equals(b.tree.CID()) {
		return nil, files.ErrNotFound
	}
	f, err := os.Open(b.path)
	if err != nil {
		return nil, err
	}
	return &badBlob{f: f, tree: b.tree}, nil
}

type badBlob struct {
	f    *os.File
	tree *format.Tree
}

func (b *badBlob) ReadAt(p []byte, off int64) (int, error) {
	n, err := b.f.ReadAt(p, off)
	for i := range n {
		p[i] ^= 0x55
	}
	return n, err
}
func (b *badBlob) Close() error       { return b.f.Close() }
func (b *badBlob) Tree() *format.Tree { return b.tree }

// A fetch asks the owner for holders and pulls from them too: carol, an
// honest re-sharer, sends chunks; mallory, who fetched the file and says
// she holds it but sends a bad chunk, is dropped at it; the file arrives
// whole and verified.
func TestFetchFromHolders(t *testing.T) {
	h := startHolders(t)
	ctx := context.Background()
	// 6 tasks of 16 chunks: each of the 3 sources takes one at least.
	h.pubSrc = filepath.Join(t.TempDir(), "big.bin")
	writeRandom(t, h.pubSrc, 24<<20, 3)
	var err error
	h.pub, err = h.alice.Share(ctx, h.pubSrc)
	noErr(t, err)
	carol, cnc := h.reSharer(t, "carol", true)
	if _, err := carol.Fetch(ctx, h.alice.handle(), "big.bin", filepath.Join(t.TempDir(), "big.bin")); err != nil {
		t.Fatal(err)
	}
	noErr(t, cnc.Flush())

	// mallory: fetched the whole blob from alice, serves it corrupted.
	tree, err := format.HashFile(h.pubSrc)
	noErr(t, err)
	mn, err := files.NewNode(files.NodeConfig{Identity: h.mallory.Identity, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"},
		Source: badSource{path: h.pubSrc, tree: tree}})
	noErr(t, err)
	t.Cleanup(func() { mn.Close() })
	noErr(t, mn.Fetch(ctx, h.aliceInfo(), h.pub.CID, filepath.Join(t.TempDir(), "m")))
	h.publish(t, h.have(t, h.mallory.Identity, h.pub.CID, time.Now(), mn.Addrs()...))
	if got := h.holders(t, h.pub.CID); len(got) != 2 {
		t.Fatalf("holders %v, want carol and mallory", got)
	}

	bob := openPeer(t, h.st, h.bob)
	dst := filepath.Join(t.TempDir(), "big.bin")
	if _, err := bob.Fetch(ctx, h.alice.handle(), "big.bin", dst); err != nil {
		t.Fatal(err)
	}
	sameFile(t, dst, h.pubSrc)
	if carol.Stats().ChunksServed == 0 {
		t.Error("carol, a holder, sent no chunk")
	}
	if mn.Stats().Requests == 0 {
		t.Error("mallory, a holder, was never asked")
	}
}
