package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
)

// Suffixes of the files a fetch keeps beside its destination until it
// completes: the verified prefix of the blob, and a small state file naming
// the CID and how far it got.
const (
	PartialSuffix = format.PartialSuffix
	StateSuffix   = ".kez-partial.state"
)

// checkpointChunks is how often (in chunks, 64 MiB) a fetch records its
// progress in the state file.
const checkpointChunks = 256

// FetchOption adjusts one fetch, by [Sharing.Fetch] or [Node.Fetch].
// Options that only make sense for a fetch by handle (waiting for the
// owner, overwriting) say so; Node.Fetch ignores them.
type FetchOption func(*fetchConfig)

type fetchConfig struct {
	progress    func(verified, total int64)
	noSync      bool
	wait        bool
	waitTimeout time.Duration
	onWait      func(attempt int)
	overwrite   bool
	offer       *format.GroupFile
	sources     []peer.AddrInfo
	decrypt     *decryption
	routes      func(p peer.ID, r Route, bytes int64)
}

// decryption is what [WithDecryption] asked for.
type decryption struct {
	key       format.FileKey
	plainSize int64
}

func fetchOptions(opts []FetchOption) fetchConfig {
	var cfg fetchConfig
	for _, o := range opts {
		o(&cfg)
	}
	return cfg
}

// WithProgress calls fn(verified, total) as the fetch progresses: verified
// is the number of bytes checked against the CID and written (a resumed
// fetch starts from what it re-verified), total the blob's size (the
// encrypted size for a private file). fn runs on the fetching goroutine
// after each chunk; keep it fast.
func WithProgress(fn func(verified, total int64)) FetchOption {
	return func(c *fetchConfig) { c.progress = fn }
}

// WithoutSync skips the fsync of the finished file before it is renamed
// into place: faster, but a crash just after the fetch may leave a
// truncated file at the destination.
func WithoutSync() FetchOption {
	return func(c *fetchConfig) { c.noSync = true }
}

// WithWait makes [Sharing.Fetch] keep asking the owner until they come
// online and can be reached, instead of failing with ErrOwnerOffline or
// ErrUnreachable: until ctx ends, or for at most timeout if it is
// positive. onWait, if not nil, is called each time the owner was found
// offline or unreachable (attempt counts both).
func WithWait(timeout time.Duration, onWait func(attempt int)) FetchOption {
	return func(c *fetchConfig) { c.wait, c.waitTimeout, c.onWait = true, timeout, onWait }
}

// WithOverwrite makes [Sharing.Fetch] replace an existing file at the
// destination; without it an existing file is a *fs.PathError naming it
// that wraps fs.ErrExist. ([Node.Fetch] always replaces.)
func WithOverwrite() FetchOption {
	return func(c *fetchConfig) { c.overwrite = true }
}

// WithFileKey makes [Sharing.Fetch] fetch a file shared with a group with
// the key its offer gave (docs/spec/manifest.md §7; chat.Client.GroupFiles
// lists the offers a member read): the owner's handle must name
// offer.Owner, nameOrCID must be the offer's name or CID, and the owner's
// manifest must list that CID as shared with offer.Group, for a file of
// offer.Size bytes, else [ErrOfferMismatch] and nothing is fetched; an
// owner who no longer shares it gives a *[NotSharedError]. The file is
// saved under the offer's name. ([Node.Fetch] ignores it.)
func WithFileKey(offer format.GroupFile) FetchOption {
	return func(c *fetchConfig) { c.offer = &offer }
}

// WithSources adds more peers that hold the same blob: [Node.Fetch] pulls
// different chunks from the owner and each of them at once, each chunk
// verified against the CID before it is written, and drops a source on its
// first bad chunk (its chunks are fetched from the others). With
// [WithDecryption] only the owner is used: decryption needs the chunks in
// order. [Sharing.Fetch] adds the holders the owner names on its own.
func WithSources(holders ...peer.AddrInfo) FetchOption {
	return func(c *fetchConfig) { c.sources = append(c.sources, holders...) }
}

// WithDecryption makes [Node.Fetch] decrypt a private file's blob as it
// streams in: dst receives the plaintext (plainSize bytes) and no
// ciphertext is kept. Every chunk is still verified against the CID before
// it is decrypted; a resumed fetch re-verifies the plaintext it has by
// encrypting it again. A blob that does not decrypt with key is an error
// wrapping [format.ErrDecrypt], and no plaintext is left at dst.
func WithDecryption(key format.FileKey, plainSize int64) FetchOption {
	return func(c *fetchConfig) { c.decrypt = &decryption{key: key, plainSize: plainSize} }
}

// WithRoutes calls fn as verified chunks land, with the source that sent
// them, the route of the connection they came over and their size in
// bytes. fn runs on the fetch's goroutines; keep it fast.
func WithRoutes(fn func(p peer.ID, r Route, bytes int64)) FetchOption {
	return func(c *fetchConfig) { c.routes = fn }
}

// Fetch downloads blob c from owner into the file dst.
//
// Every chunk is checked against c before it is written; the blob goes to
// dst+[PartialSuffix] and is renamed to dst (replacing any file there) only
// once complete. An interrupted fetch (cancelled ctx, lost connection,
// crash) keeps the verified prefix and a state file; a later Fetch of the
// same c to the same dst re-verifies that prefix against the owner's leaf
// hashes and fetches only the rest.
//
// Errors: [ErrNotFound], [ErrForbidden], [ErrBusy] (the owner's answer), a
// *[CorruptError] matching [ErrCorrupt] if the owner sends bytes that do not
// match c (the bad chunk is not written, dst does not exist), ctx.Err() if
// cancelled, [format.ErrBadCID] for a c that is not a KEZ blob CID. If the owner
// cannot be reached before an earlier partial file is re-verified, that file
// is left as it was. Fetch is safe for concurrent use; a second fetch to a
// destination this node is already fetching to fails at once.
func (n *Node) Fetch(ctx context.Context, owner peer.AddrInfo, c cid.Cid, dst string, opts ...FetchOption) error {
	cfg := fetchOptions(opts)
	if err := format.CheckCID(c); err != nil {
		return err
	}
	if owner.ID == n.host.ID() {
		return errors.New("files: cannot fetch a blob from this node itself")
	}
	if len(owner.Addrs) > 0 {
		n.host.Peerstore().AddAddrs(owner.ID, owner.Addrs, peerstore.TempAddrTTL)
	}
	release, err := n.claimDest(dst)
	if err != nil {
		return err
	}
	defer release()
	part, statePath := dst+PartialSuffix, dst+StateSuffix
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("files: creating the partial file: %w", err)
	}
	fx := &fetcher{n: n, ctx: ctx, owner: owner.ID, c: c, f: f, statePath: statePath, cfg: cfg, size: -1}
	err = fx.run()
	if err != nil {
		switch {
		case fx.pristine: // an earlier partial file not yet re-verified: leave it as it was
			f.Close()
		case fx.verified == 0: // nothing worth keeping
			f.Close()
			os.Remove(part)
			os.Remove(statePath)
		default:
			fx.checkpoint(true)
			f.Close()
		}
		return err
	}
	if err := fx.finish(dst); err != nil {
		f.Close()
		return err
	}
	return nil
}

// claimDest marks dst as being fetched by this node, so that two fetches
// never write the same partial file.
func (n *Node) claimDest(dst string) (func(), error) {
	abs, err := filepath.Abs(dst)
	if err != nil {
		return nil, fmt.Errorf("files: destination %s: %w", dst, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fetching[abs] {
		return nil, fmt.Errorf("files: a fetch to %s is already running", dst)
	}
	n.fetching[abs] = true
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.fetching, abs)
	}, nil
}

// fetcher is the state of one Fetch.
type fetcher struct {
	n         *Node
	ctx       context.Context
	owner     peer.ID
	c         cid.Cid
	f         *os.File
	statePath string
	cfg       fetchConfig

	pristine bool  // an earlier partial file exists and is not re-verified yet
	size     int64 // -1 until the owner said (verified against c)
	verified int   // chunks [0, verified) are verified and written
	leaves   []format.Hash
	hbuf     []byte
	bufs     [][]byte // pipeline buffers, ChunkSize each
	lh       format.LeafHasher
}

func (fx *fetcher) run() error {
	fx.leaves = make([]format.Hash, maxChunksPerRequest)
	fx.hbuf = make([]byte, (maxProofHashes+maxChunksPerRequest)*format.HashSize)
	fx.lh = format.NewLeafHasher()
	hint, hintSize := readState(fx.statePath, fx.c)
	if hint > 0 {
		fx.pristine = true
		if err := fx.reverify(hint, hintSize); err != nil {
			return err
		}
		fx.pristine = false
	} else if err := fx.f.Truncate(0); err != nil {
		return fmt.Errorf("files: clearing the partial file: %w", err)
	}
	for fx.size < 0 || fx.verified < format.NumChunks(fx.size) {
		if err := fx.window(); err != nil {
			return err
		}
	}
	return nil
}

func (fx *fetcher) verifiedBytes() int64 {
	if fx.size < 0 {
		return 0
	}
	return min(int64(fx.verified)*format.ChunkSize, fx.size)
}

func (fx *fetcher) progress() {
	if fx.cfg.progress != nil {
		fx.cfg.progress(fx.verifiedBytes(), fx.size)
	}
}

// open sends req on a new stream and reads the response up to and
// including the verified leaf hashes, which it leaves in fx.leaves.
func (fx *fetcher) open(req request) (network.Stream, respHeader, error) {
	var h respHeader
	s, err := fx.n.newStream(fx.ctx, fx.owner)
	if err != nil {
		if fx.ctx.Err() != nil {
			return nil, h, fx.ctx.Err()
		}
		return nil, h, fmt.Errorf("files: cannot reach the owner %s: %w", fx.owner, err)
	}
	fail := func(err error) (network.Stream, respHeader, error) {
		s.Reset()
		if fx.ctx.Err() != nil {
			return nil, h, fx.ctx.Err()
		}
		return nil, h, err
	}
	stop := context.AfterFunc(fx.ctx, func() { s.Reset() })
	defer stop()
	if _, err := s.Write(appendRequest(make([]byte, 0, maxRequestSize), req)); err != nil {
		return fail(fmt.Errorf("files: sending the request to the owner: %w", err))
	}
	s.CloseWrite()
	var hb [respHeaderLen]byte
	if _, err := io.ReadFull(s, hb[:1]); err != nil {
		return fail(fmt.Errorf("files: reading the owner's answer: %w", err))
	}
	if hb[0] != statusOK {
		var tl [1]byte
		text := []byte(nil)
		if _, err := io.ReadFull(s, tl[:]); err == nil {
			text = make([]byte, tl[0])
			if _, err := io.ReadFull(s, text); err != nil {
				text = nil
			}
		}
		s.Close()
		return nil, h, statusError(hb[0], errorText(text))
	}
	if _, err := io.ReadFull(s, hb[1:]); err != nil {
		return fail(fmt.Errorf("files: reading the owner's answer: %w", err))
	}
	h, err = parseRespHeader(hb[1:], req)
	if err != nil {
		return fail(err)
	}
	if fx.size >= 0 && h.size != fx.size {
		return fail(&CorruptError{Index: h.start, Reason: "the owner changed the blob's size"})
	}
	hb2 := fx.hbuf[:(h.nproof+h.count)*format.HashSize]
	if _, err := io.ReadFull(s, hb2); err != nil {
		return fail(fmt.Errorf("files: reading the leaf hashes: %w", err))
	}
	proof := make([]format.Hash, h.nproof)
	for i := range proof {
		copy(proof[i][:], hb2[i*format.HashSize:])
	}
	hb2 = hb2[h.nproof*format.HashSize:]
	leaves := fx.leaves[:h.count]
	for i := range leaves {
		copy(leaves[i][:], hb2[i*format.HashSize:])
	}
	if err := format.VerifyRange(fx.c, h.size, h.start, leaves, proof); err != nil {
		return fail(&CorruptError{Index: h.start, Reason: "the leaf hashes or size do not match the CID"})
	}
	fx.size = h.size
	return s, h, nil
}

// reverify checks the partial file's first hint chunks against the owner's
// leaf hashes and sets fx.verified to the length of the prefix that holds.
func (fx *fetcher) reverify(hint int, hintSize int64) error {
	buf := make([]byte, format.ChunkSize)
	for fx.verified < hint {
		req := request{cid: fx.c, start: uint64(fx.verified), count: uint32(min(hint-fx.verified, maxChunksPerRequest)), hashesOnly: true}
		s, h, err := fx.open(req)
		var re *RemoteError
		if errors.As(err, &re) { // the state file was wrong about the blob
			fx.verified = 0
			break
		}
		if err != nil {
			return err
		}
		s.Close()
		if h.size != hintSize {
			break // the state file was not about this blob after all
		}
		for i := 0; i < h.count; i++ {
			idx := h.start + i
			b := buf[:format.ChunkLen(h.size, idx)]
			if k, _ := fx.f.ReadAt(b, int64(idx)*format.ChunkSize); k < len(b) || fx.lh.Sum(b) != fx.leaves[i] {
				hint = idx // damaged from here on: fetch it again
				break
			}
			fx.verified++
		}
	}
	fx.progress()
	return nil
}

// pipelineDepth is how many chunks a fetch reads ahead of the one it is
// verifying and writing, so the network and the hashing overlap.
const pipelineDepth = 16

type readChunk struct {
	buf []byte
	err error
}

// window fetches the next request's worth of chunks. A reader goroutine
// fills buffers from the stream while this one verifies and writes them.
func (fx *fetcher) window() error {
	req := request{cid: fx.c, start: uint64(fx.verified), count: maxChunksPerRequest}
	s, h, err := fx.open(req)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(fx.ctx, func() { s.Reset() })
	defer stop()
	if fx.verified == 0 {
		fx.progress()
	}
	if fx.bufs == nil {
		fx.bufs = make([][]byte, pipelineDepth)
		for i := range fx.bufs {
			fx.bufs[i] = make([]byte, format.ChunkSize)
		}
	}
	free := make(chan []byte, pipelineDepth)
	for _, b := range fx.bufs {
		free <- b
	}
	full := make(chan readChunk, pipelineDepth)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // reader: never blocks on full, which holds every buffer
		defer wg.Done()
		for i := 0; i < h.count; i++ {
			var b []byte
			select {
			case b = <-free:
			case <-done:
				return
			}
			b = b[:format.ChunkLen(h.size, h.start+i)]
			_, err := io.ReadFull(s, b)
			full <- readChunk{buf: b, err: err}
			if err != nil {
				return
			}
		}
	}()
	abort := func(err error) error {
		s.Reset()
		close(done)
		wg.Wait()
		if fx.ctx.Err() != nil {
			return fx.ctx.Err()
		}
		return err
	}
	for i := 0; i < h.count; i++ {
		if err := fx.ctx.Err(); err != nil {
			return abort(err)
		}
		idx := h.start + i
		rc := <-full
		if rc.err != nil {
			return abort(fmt.Errorf("files: the transfer broke off at chunk %d: %w", idx, rc.err))
		}
		if fx.lh.Sum(rc.buf) != fx.leaves[i] {
			return abort(&CorruptError{Index: idx, Reason: "its bytes do not match its leaf hash"})
		}
		if _, err := fx.f.WriteAt(rc.buf, int64(idx)*format.ChunkSize); err != nil {
			return abort(fmt.Errorf("files: writing the partial file: %w", err))
		}
		free <- rc.buf[:cap(rc.buf)]
		fx.verified++
		fx.progress()
		if fx.verified%checkpointChunks == 0 {
			fx.checkpoint(false)
		}
	}
	close(done)
	wg.Wait()
	s.Close()
	return nil
}

// checkpoint records progress in the state file. On failure it also cuts
// the partial file back to the verified prefix, so nothing unverified stays.
func (fx *fetcher) checkpoint(failed bool) {
	if failed {
		fx.f.Truncate(fx.verifiedBytes())
	}
	if fx.size < 0 {
		os.Remove(fx.statePath)
		return
	}
	writeState(fx.statePath, fx.c, fx.size, fx.verified)
}

// finish moves the complete, verified blob into place.
func (fx *fetcher) finish(dst string) error {
	if err := fx.f.Truncate(fx.size); err != nil {
		return fmt.Errorf("files: finishing the partial file: %w", err)
	}
	if !fx.cfg.noSync {
		if err := fx.f.Sync(); err != nil {
			return fmt.Errorf("files: flushing the fetched file to disk: %w", err)
		}
	}
	if err := fx.f.Close(); err != nil {
		return fmt.Errorf("files: closing the fetched file: %w", err)
	}
	if err := os.Rename(dst+PartialSuffix, dst); err != nil {
		return fmt.Errorf("files: moving the fetched file into place: %w", err)
	}
	os.Remove(fx.statePath)
	if !fx.cfg.noSync {
		if d, err := os.Open(filepath.Dir(dst)); err == nil {
			d.Sync()
			d.Close()
		}
	}
	return nil
}

// The state file is one line: "kez-partial v1 <cid> <size> <verified>\n".
const maxStateFile = 256

func writeState(path string, c cid.Cid, size int64, verified int) {
	line := fmt.Sprintf("kez-partial v1 %s %d %d\n", c, size, verified)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(line), 0o600); err == nil {
		os.Rename(tmp, path)
	}
}

// readState returns the verified-chunk hint and size of a state file for
// blob c, or 0 if there is none or it is about something else. The hint is
// re-verified before use, so a damaged state file only costs a refetch.
func readState(path string, c cid.Cid) (int, int64) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil || len(b) > maxStateFile || !bytes.HasSuffix(b, []byte("\n")) {
		return 0, 0
	}
	var cs string
	var size int64
	var verified int
	if k, err := fmt.Sscanf(string(b), "kez-partial v1 %s %d %d\n", &cs, &size, &verified); err != nil || k != 3 {
		return 0, 0
	}
	if cs != c.String() || size < 0 || size > format.MaxBlobSize || verified < 0 || verified > format.NumChunks(size) {
		return 0, 0
	}
	return verified, size
}
