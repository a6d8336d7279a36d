package files_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/testenv/testlog"
)

type peer struct {
	*files.Sharing
	user *stacktest.User
	log  *testlog.Buffer
}

// newPeer opens the sharing of a stack user, on loopback TCP.
func newPeer(t testing.TB, st *stacktest.Stack, name string) *peer {
	t.Helper()
	return openPeer(t, st, st.NewUser(t, name))
}

// openPeer opens (again) the sharing of u in u.Home.
func openPeer(t testing.TB, st *stacktest.Stack, u *stacktest.User) *peer {
	t.Helper()
	return openWith(t, st, u, client.Config{Identity: u.Identity, Home: u.Home})
}

// openWith opens a sharing of u with cc (its keys and Home; the stack's
// servers, a captured log and loopback TCP are filled in).
func openWith(t testing.TB, st *stacktest.Stack, u *stacktest.User, cc client.Config, opts ...func(*files.Config)) *peer {
	t.Helper()
	logs := &testlog.Buffer{}
	cc.NATSURL, cc.SigServerURL, cc.Resolver = st.NATSURL, st.SigServerURL, st.Resolver()
	cc.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fc := files.Config{
		Client:          cc,
		ListenAddrs:     []string{"/ip4/127.0.0.1/tcp/0"},
		MaxWaitInterval: 50 * time.Millisecond,
	}
	for _, o := range opts {
		o(&fc)
	}
	s, err := files.Open(context.Background(), fc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &peer{Sharing: s, user: u, log: logs}
}

func (p *peer) handle() string { return p.user.Handle.String() }

// writeRandom writes size deterministic pseudo-random bytes to path.
func writeRandom(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := mrand.NewChaCha8([32]byte{byte(seed)})
	if _, err := io.CopyN(f, r, size); err != nil {
		t.Fatal(err)
	}
}

func sameFile(t testing.TB, a, b string) {
	t.Helper()
	ha, hb := fileHash(t, a), fileHash(t, b)
	if ha != hb {
		t.Fatalf("%s and %s differ", a, b)
	}
}

func fileHash(t testing.TB, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func mustNotExist(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s exists (%v)", path, err)
	}
}

// The whole story with a 64 MiB file: shared, browsed while the owner is
// offline, a fetch that finds the owner offline, a waiting fetch that
// starts as the owner comes online and is cut at about half, then resumed
// for only the remaining bytes, byte-identical.
func TestShareBrowseFetch64MiB(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
	ctx := context.Background()

	const size = 64 << 20
	src := filepath.Join(t.TempDir(), "video.bin")
	writeRandom(t, src, size, 1)
	sf, err := alice.Share(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	if sf.Name != "video.bin" || sf.Size != size || sf.Private || sf.Path != src {
		t.Fatalf("shared %+v", sf)
	}

	// Alice has never gone online: Bob sees her files all the same.
	list, err := bob.Browse(ctx, alice.handle())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != "video.bin" || list[0].Size != size || !list[0].CID.Equals(sf.CID) {
		t.Fatalf("browse: %+v", list)
	}

	dst := filepath.Join(t.TempDir(), "video.bin")
	_, err = bob.Fetch(ctx, alice.handle(), "video.bin", dst)
	var off *files.OfflineError
	if !errors.As(err, &off) || !errors.Is(err, files.ErrOwnerOffline) {
		t.Fatalf("fetch from an offline owner: %v", err)
	}
	if want := "files: alice@kez.test is offline"; err.Error() != want {
		t.Fatalf("offline error %q, want %q", err, want)
	}
	mustNotExist(t, dst)

	// A waiting fetch: Alice comes online once Bob found her offline, and
	// Bob cuts the transfer once about half of it is verified.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var cut int64
	waited := make(chan struct{})
	var once sync.Once
	_, err = bob.Fetch(cctx, alice.handle(), "video.bin", dst,
		files.WithWait(0, func(int) {
			once.Do(func() {
				if err := alice.StartServing(ctx); err != nil {
					t.Error(err)
				}
				close(waited)
			})
		}),
		files.WithProgress(func(verified, total int64) {
			if total != size {
				t.Errorf("progress total %d", total)
			}
			if verified >= size/2 && cut == 0 {
				cut = verified
				cancel()
			}
		}))
	<-waited
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cut fetch: %v", err)
	}
	mustNotExist(t, dst)
	if st, err := os.Stat(dst + files.PartialSuffix); err != nil || st.Size() != cut {
		t.Fatalf("partial file after the cut: %v, %d bytes, want %d", err, st.Size(), cut)
	}

	// Alice's client restarts (so the count below is of the resumed fetch
	// alone, not of bytes still in flight from the cut one); Bob resumes.
	alice.Close()
	alice = openPeer(t, st, alice.user)
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := bob.Fetch(ctx, alice.handle(), "video.bin", dst)
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != dst || got.Size != size {
		t.Fatalf("fetched %+v", got)
	}
	if served := alice.Stats().BytesServed; served != size-cut {
		t.Fatalf("the resumed fetch moved %d bytes, want the remaining %d", served, size-cut)
	}
	t.Logf("cut at %d of %d bytes; the resumed fetch moved %d", cut, size, size-cut)
	sameFile(t, src, dst)
	mustNotExist(t, dst+files.PartialSuffix)
	mustNotExist(t, dst+files.StateSuffix)

	// Fetching again does not overwrite without being asked.
	if _, err := bob.Fetch(ctx, alice.handle(), "video.bin", dst); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("fetch over an existing file: %v", err)
	}
}

// A shared file that changes on disk is never served under its old CID:
// a change the size and time reveal is refused with a clear message; one
// they hide (same size, time put back) is caught chunk by chunk by the
// fetcher, which keeps only what it verified.
func TestChangedFileIsNotServed(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
	ctx := context.Background()
	dir := t.TempDir()

	const size = 4 << 20 // 16 chunks
	src := filepath.Join(dir, "data.bin")
	writeRandom(t, src, size, 2)
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	stat0, _ := os.Stat(src)

	// Touched but not changed: re-hashed and served.
	later := stat0.ModTime().Add(time.Hour)
	if err := os.Chtimes(src, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Fetch(ctx, alice.handle(), "data.bin", filepath.Join(dir, "touched.bin")); err != nil {
		t.Fatalf("fetch of a touched file: %v", err)
	}
	sameFile(t, src, filepath.Join(dir, "touched.bin"))

	// Chunk 5 changes behind the index's back: same size, time put back.
	corrupt := func() {
		f, err := os.OpenFile(src, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("changed!"), 5*format.ChunkSize+100); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	orig := make([]byte, size)
	if f, err := os.Open(src); err == nil {
		io.ReadFull(f, orig)
		f.Close()
	}
	corrupt()
	if err := os.Chtimes(src, later, later); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "hidden.bin")
	_, err := bob.Fetch(ctx, alice.handle(), "data.bin", dst)
	var ce *files.CorruptError
	if !errors.As(err, &ce) || ce.Index != 5 || !errors.Is(err, files.ErrCorrupt) {
		t.Fatalf("fetch of a silently changed file: %v", err)
	}
	if !strings.Contains(err.Error(), "nothing unverified was kept") {
		t.Errorf("error does not say what was kept: %v", err)
	}
	mustNotExist(t, dst)
	part, err := os.ReadFile(dst + files.PartialSuffix)
	if err != nil || !bytes.Equal(part, orig[:5*format.ChunkSize]) {
		t.Fatalf("partial file holds %d bytes (%v); want exactly the 5 verified chunks", len(part), err)
	}

	// A change the stat shows: refused before a byte is sent.
	now := time.Now().Add(2 * time.Hour)
	os.Chtimes(src, now, now)
	dst2 := filepath.Join(dir, "visible.bin")
	refused := alice.Stats().Refused
	_, err = bob.Fetch(ctx, alice.handle(), "data.bin", dst2)
	if !errors.Is(err, files.ErrNotFound) || !strings.Contains(err.Error(), "changed on the owner's disk") {
		t.Fatalf("fetch of a changed file: %v", err)
	}
	if alice.Stats().Refused != refused+1 {
		t.Error("the owner did not refuse the request")
	}
	mustNotExist(t, dst2)
	mustNotExist(t, dst2+files.PartialSuffix)
	if !strings.Contains(alice.log.String(), "changed on disk since it was shared") {
		t.Errorf("the owner was not told: %s", alice.log.String())
	}

	// Sharing it again publishes the new version, which is served.
	sf, err := alice.Share(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	got, err := bob.Fetch(ctx, alice.handle(), "data.bin", dst2)
	if err != nil || !got.CID.Equals(sf.CID) {
		t.Fatalf("fetch after sharing again: %v", err)
	}
	sameFile(t, src, dst2)
	if shared, _ := alice.Shared(ctx); len(shared) != 1 {
		t.Errorf("index after sharing again: %+v", shared)
	}
}

// A private share: the recipient sees the real name and gets the
// plaintext; anyone else sees nothing, and the owner refuses them the blob
// even when they ask for its CID directly.
func TestSharePrivately(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob, carol := newPeer(t, st, "alice"), newPeer(t, st, "bob"), newPeer(t, st, "carol")
	ctx := context.Background()
	dir := t.TempDir()

	src := filepath.Join(dir, "salary 2026.xlsx")
	writeRandom(t, src, 3<<20+12345, 3)
	sf, err := alice.Share(ctx, src, files.To("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if !sf.Private || len(sf.Recipients) != 1 || sf.Recipients[0] != bob.handle() {
		t.Fatalf("shared %+v", sf)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}

	// Carol: nothing to see, nothing to fetch.
	if list, err := carol.Browse(ctx, alice.handle()); err != nil || len(list) != 0 {
		t.Fatalf("carol sees %+v (%v)", list, err)
	}
	_, err = carol.Fetch(ctx, alice.handle(), "salary 2026.xlsx", dir)
	if !errors.Is(err, files.ErrNotShared) {
		t.Fatalf("carol fetch by name: %v", err)
	}
	if _, err := carol.Fetch(ctx, alice.handle(), sf.CID.String(), dir); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("carol fetch by CID: %v", err)
	}
	// Going around the manifest: the owner's node refuses carol's key.
	info, err := carol.Locate(ctx, alice.handle(), files.LocateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node, err := carol.Node()
	if err != nil {
		t.Fatal(err)
	}
	refused := alice.Stats().Refused
	if err := node.Fetch(ctx, info, sf.CID, filepath.Join(dir, "stolen")); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("carol's direct fetch: %v", err)
	}
	if alice.Stats().Refused != refused+1 {
		t.Error("the owner did not count the refusal")
	}
	mustNotExist(t, filepath.Join(dir, "stolen"))

	// Bob: the real name, and the plaintext.
	list, err := bob.Browse(ctx, alice.handle())
	if err != nil || len(list) != 1 || list[0].Name != "salary 2026.xlsx" || !list[0].Private {
		t.Fatalf("bob sees %+v (%v)", list, err)
	}
	bobDir := t.TempDir()
	got, err := bob.Fetch(ctx, alice.handle(), "salary 2026.xlsx", bobDir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != filepath.Join(bobDir, "salary 2026.xlsx") {
		t.Fatalf("fetched to %s", got.Path)
	}
	sameFile(t, src, got.Path)
	mustNotExist(t, got.Path+files.PartialSuffix)
	if ents, _ := os.ReadDir(bobDir); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}

	// Alice sees her own private entry (she is a recipient too).
	if own, err := alice.Browse(ctx, alice.handle()); err != nil || len(own) != 1 || own[0].Name != "salary 2026.xlsx" {
		t.Fatalf("alice sees %+v (%v)", own, err)
	}
}

func TestUnshareAndErrors(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")
	os.WriteFile(a, []byte("first"), 0o600)
	os.WriteFile(b, []byte("second"), 0o600)
	sa, err := alice.Share(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if sa.MediaType != "text/plain; charset=utf-8" {
		t.Errorf("media type %q", sa.MediaType)
	}
	sb, err := alice.Share(ctx, b, files.Named("renamed.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}

	// Unknown names and CIDs are clear errors.
	_, err = bob.Fetch(ctx, alice.handle(), "nope.txt", dir)
	if !errors.Is(err, files.ErrNotShared) || !strings.Contains(err.Error(), `alice@kez.test shares no file named "nope.txt"`) {
		t.Fatalf("unknown name: %v", err)
	}
	unknownCID := "bahrnnqibciqp6tafmhlorhwtlcah64u4yq7ahlftdyunhbs6irfgv6w6qo6eiq"
	if _, err := bob.Fetch(ctx, alice.handle(), unknownCID, dir); !errors.Is(err, files.ErrNotShared) {
		t.Fatalf("unknown CID: %v", err)
	}

	// Re-sharing a name replaces the entry; unshare by name and by CID.
	os.WriteFile(a, []byte("first, edited"), 0o600)
	sa2, err := alice.Share(ctx, a)
	if err != nil || sa2.CID.Equals(sa.CID) {
		t.Fatalf("share again: %v", err)
	}
	list, _ := bob.Browse(ctx, alice.handle())
	if len(list) != 2 || !list[1].CID.Equals(sa2.CID) {
		t.Fatalf("after sharing again: %+v", list)
	}
	if removed, err := alice.Unshare(ctx, "a.txt"); err != nil || len(removed) != 1 {
		t.Fatalf("unshare by name: %v %+v", err, removed)
	}
	if removed, err := alice.Unshare(ctx, sb.CID.String()); err != nil || len(removed) != 1 || removed[0].Name != "renamed.txt" {
		t.Fatalf("unshare by CID: %v %+v", err, removed)
	}
	if list, _ := bob.Browse(ctx, alice.handle()); len(list) != 0 {
		t.Fatalf("after unsharing: %+v", list)
	}
	if shared, _ := alice.Shared(ctx); len(shared) != 0 {
		t.Fatalf("index after unsharing: %+v", shared)
	}
	if _, err := alice.Unshare(ctx, "a.txt"); !errors.Is(err, files.ErrNotShared) {
		t.Fatalf("unshare twice: %v", err)
	}
	// The owner's node no longer serves the unshared blob either.
	info, err := bob.Locate(ctx, alice.handle(), files.LocateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node, _ := bob.Node()
	if err := node.Fetch(ctx, info, sb.CID, filepath.Join(dir, "gone")); !errors.Is(err, files.ErrNotFound) {
		t.Fatalf("fetch of an unshared blob: %v", err)
	}

	// Bad input to Share.
	if _, err := alice.Share(ctx, dir); err == nil {
		t.Error("shared a folder")
	}
	if _, err := alice.Share(ctx, filepath.Join(dir, "missing")); err == nil {
		t.Error("shared a missing file")
	}
	if _, err := alice.Share(ctx, a, files.Named("../x")); !errors.Is(err, format.ErrManifest) {
		t.Errorf("shared under a path name: %v", err)
	}
	if _, err := alice.Share(ctx, a, files.To("nobody")); err == nil {
		t.Error("shared with an unknown handle")
	}
	if shared, _ := alice.Shared(ctx); len(shared) != 0 {
		t.Fatalf("failed shares left rows: %+v", shared)
	}
}

// A waiting fetch gives up after its timeout with a clear error.
func TestWaitTimeout(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "x")
	os.WriteFile(src, []byte("x"), 0o600)
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	attempts := 0
	_, err := bob.Fetch(ctx, alice.handle(), "x", t.TempDir(), files.WithWait(300*time.Millisecond, func(int) { attempts++ }))
	var off *files.OfflineError
	if !errors.As(err, &off) || off.Waited == 0 || !strings.Contains(err.Error(), "did not come online within") {
		t.Fatalf("waiting fetch: %v", err)
	}
	if attempts < 1 {
		t.Errorf("asked %d times", attempts)
	}
}
