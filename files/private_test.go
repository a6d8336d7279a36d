package files

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
)

// TestPrivateShare is the whole private flow: the owner encrypts a file,
// shares it to bob in a manifest, serves the encrypted blob only to bob;
// dave is refused, bob fetches, finds the key in the manifest and decrypts.
func TestPrivateShare(t *testing.T) {
	owner, bob, dave := testIdentity(t, seedOwner), testIdentity(t, seedBob), testIdentity(t, seedDave)
	dir := t.TempDir()
	plainPath := writePattern(t, dir, "plans.txt", 3*format.ChunkSize+12345)
	encPath := filepath.Join(dir, "plans.enc")
	key, size, err := format.EncryptFile(encPath, plainPath)
	if err != nil {
		t.Fatal(err)
	}
	src := NewFileSource()
	tree, err := src.AddFile(encPath)
	if err != nil {
		t.Fatal(err)
	}
	var m format.Manifest
	must(t, m.AddPrivate(format.Entry{Name: "plans.txt", Size: size, CID: tree.CID(), MediaType: "text/plain",
		ModTime: time.Unix(1767225600, 0), Key: key}, []format.Recipient{format.RecipientOf(bob, 0)}))
	body, err := m.Encode()
	must(t, err)
	recipients := map[kez.PublicKey]bool{bob.PublicKey(): true}
	policy := PolicyFunc(func(p kez.PublicKey, c cid.Cid) bool { return c.Equals(tree.CID()) && recipients[p] })
	ownerNode := startNode(t, NodeConfig{Identity: owner, Source: src, Policy: policy}, "tcp")
	bobNode := startNode(t, NodeConfig{Identity: bob}, "tcp")
	daveNode := startNode(t, NodeConfig{Identity: dave}, "tcp")

	// Dave sees nothing in the manifest and is refused the blob.
	got, err := format.DecodeManifest(body)
	must(t, err)
	if v := format.Visible(got, dave); len(v) != 0 {
		t.Fatalf("dave sees %+v", v)
	}
	daveDst := filepath.Join(dir, "dave-got")
	if err := daveNode.Fetch(context.Background(), OwnerInfo(owner.PublicKey(), ownerNode.Addrs()...), tree.CID(), daveDst); !errors.Is(err, ErrForbidden) {
		t.Fatalf("dave: err = %v, want ErrForbidden", err)
	}
	noFile(t, daveDst)

	// Bob sees the real name and key, fetches and decrypts.
	v := format.Visible(got, bob)
	if len(v) != 1 || v[0].Name != "plans.txt" || !v[0].Private || v[0].Size != size {
		t.Fatalf("bob sees %+v", v)
	}
	bobEnc := filepath.Join(dir, "bob-got.enc")
	if err := bobNode.Fetch(context.Background(), OwnerInfo(owner.PublicKey(), ownerNode.Addrs()...), v[0].CID, bobEnc); err != nil {
		t.Fatal(err)
	}
	bobPlain := filepath.Join(dir, v[0].Name)
	n, err := format.DecryptFile(bobPlain+".out", bobEnc, v[0].Key)
	if err != nil || n != size {
		t.Fatalf("decrypt: %d, %v", n, err)
	}
	sameFile(t, plainPath, bobPlain+".out")
	// The wrong key writes nothing.
	wrong := v[0].Key
	wrong[3] ^= 1
	if _, err := format.DecryptFile(filepath.Join(dir, "wrong"), bobEnc, wrong); !errors.Is(err, format.ErrDecrypt) {
		t.Fatalf("wrong key: %v", err)
	}
	noFile(t, filepath.Join(dir, "wrong"))
	noFile(t, filepath.Join(dir, "wrong")+PartialSuffix)
}

// TestFetchImpostor: addresses of one node under another user's PeerID do
// not yield a transfer: the handshake proves who answers.
func TestFetchImpostor(t *testing.T) {
	p := newPair(t, "tcp", nil)
	tree, err := p.src.AddFile(writePattern(t, p.dir, "src", 1000))
	must(t, err)
	claimed := testIdentity(t, 9).PublicKey()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dst := filepath.Join(p.dir, "dst")
	err = p.fetcher.Fetch(ctx, OwnerInfo(claimed, p.owner.Addrs()...), tree.CID(), dst)
	if err == nil {
		t.Fatal("fetched from an impostor")
	}
	noFile(t, dst)
}

// TestFetchBusy: with one stream per peer allowed, a second fetch while the
// first is in progress is answered busy.
func TestFetchBusy(t *testing.T) {
	src := NewFileSource()
	owner := startNode(t, NodeConfig{Identity: testIdentity(t, 1), Source: src, MaxStreamsPerPeer: 1}, "tcp")
	fetcher := startNode(t, NodeConfig{Identity: testIdentity(t, 2)}, "tcp")
	dir := t.TempDir()
	tree, err := src.AddFile(writePattern(t, dir, "src", 48<<20))
	must(t, err)
	started, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		once := false
		first <- fetcher.Fetch(context.Background(), owner.AddrInfo(), tree.CID(), filepath.Join(dir, "a"),
			WithProgress(func(v, total int64) {
				if v > 0 && !once {
					once = true
					close(started)
					<-release
				}
			}))
	}()
	<-started
	err = fetcher.Fetch(context.Background(), owner.AddrInfo(), tree.CID(), filepath.Join(dir, "b"))
	close(release)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("second fetch: err = %v, want ErrBusy", err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	sameFile(t, filepath.Join(dir, "src"), filepath.Join(dir, "a"))
}

func TestNewNodeNeedsIdentity(t *testing.T) {
	if _, err := NewNode(NodeConfig{}); err == nil {
		t.Fatal("a node without an identity started")
	}
}

func TestNodeIdentityIsUserKey(t *testing.T) {
	id := testIdentity(t, 7)
	n := startNode(t, NodeConfig{Identity: id}, "tcp")
	if n.ID() != id.PublicKey().PeerID() {
		t.Fatalf("PeerID %s, want %s", n.ID(), id.PublicKey().PeerID())
	}
	if len(n.Addrs()) == 0 || n.Host() == nil {
		t.Fatal("no addresses")
	}
}

func TestResumeIgnoresForeignState(t *testing.T) {
	p := newPair(t, "tcp", nil)
	src := writePattern(t, p.dir, "src", 3*format.ChunkSize)
	tree, err := p.src.AddFile(src)
	must(t, err)
	dst := filepath.Join(p.dir, "dst")
	// A partial file full of junk, with a state file claiming it is all verified.
	must(t, os.WriteFile(dst+PartialSuffix, bytes.Repeat([]byte{7}, 3*format.ChunkSize), 0o600))
	writeState(dst+StateSuffix, tree.CID(), tree.Size(), 3)
	before := servedWhenIdle(t, p.owner)
	must(t, p.fetcher.Fetch(context.Background(), p.owner.AddrInfo(), tree.CID(), dst))
	sameFile(t, src, dst)
	if got := p.owner.Stats().BytesServed - before; got != 3*format.ChunkSize {
		t.Errorf("served %d bytes; the junk prefix should have been refetched", got)
	}
	// A state file for another CID is ignored too.
	other := treeOf(t, []byte("other"))
	writeState(dst+StateSuffix, other.CID(), 5, 1)
	if h, _, _ := readState(dst+StateSuffix, tree.CID()); h != 0 {
		t.Errorf("foreign state accepted: %d", h)
	}
}
