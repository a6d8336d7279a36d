package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
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
	onWrite     func(idx int) // tests: called before each chunk is written
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
// encrypted size for a private file). fn is called after each chunk, one
// call at a time, from the goroutines of the fetch (one per source); keep
// it fast.
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
// hashes and fetches only the rest. A stream that breaks mid-transfer (a
// connection replaced by a better one, say) is reopened from what was
// verified, up to 3 times in a row without progress.
//
// [WithSources] adds peers that hold the same blob: chunks are then pulled
// from all of them at once, in tasks of 16 chunks, and a source is dropped
// on its first bad chunk or refusal. Once every task is handed out, a
// source with nothing left to do copies the rest of a slower source's
// task (the end game): the first verified copy of each chunk is written,
// the other dropped, so a silent or slow source delays the fetch by no
// more than the others need for its task. Chunks verified beyond the contiguous
// prefix are written but not recorded in the state file, so a crash costs
// fetching them again. [WithDecryption] writes the plaintext of a private
// file instead of its blob, decrypting as the chunks arrive.
//
// Errors: [ErrNotFound], [ErrForbidden], [ErrBusy] (the owner's answer), a
// *[CorruptError] matching [ErrCorrupt] if the owner sends bytes that do not
// match c (the bad chunk is not written, dst does not exist), ctx.Err() if
// cancelled, [format.ErrBadCID] for a c that is not a KEZ blob CID, an
// *[UnsafePartialError] (ErrUnsafePartial) for a partial or state file at
// dst that a fetch of this user's did not leave (they are opened without
// following a symbolic link; nothing is written then). With
// several sources the error is the owner's, as a *[SourceError], once
// every source was dropped. If the owner cannot be reached before an
// earlier partial file is re-verified, that file is left as it was. Fetch
// is safe for concurrent use; a second fetch to a destination this node is
// already fetching to fails at once.
func (n *Node) Fetch(ctx context.Context, owner peer.AddrInfo, c cid.Cid, dst string, opts ...FetchOption) error {
	cfg := fetchOptions(opts)
	if err := format.CheckCID(c); err != nil {
		return err
	}
	if owner.ID == n.host.ID() {
		return errors.New("files: cannot fetch a blob from this node itself")
	}
	sources := []peer.ID{owner.ID}
	seen := map[peer.ID]bool{owner.ID: true, n.host.ID(): true}
	for _, ai := range append([]peer.AddrInfo{owner}, cfg.sources...) {
		if len(ai.Addrs) > 0 && ai.ID != n.host.ID() {
			n.host.Peerstore().AddAddrs(ai.ID, ai.Addrs, peerstore.TempAddrTTL)
		}
		if !seen[ai.ID] && cfg.decrypt == nil { // decryption needs the chunks in order: one source
			seen[ai.ID] = true
			sources = append(sources, ai.ID)
		}
	}
	release, err := n.claimDest(dst)
	if err != nil {
		return err
	}
	defer release()
	part, statePath := dst+PartialSuffix, dst+StateSuffix
	if err := CheckPartial(dst); err != nil {
		return err
	}
	f, err := openLeftover(part, os.O_RDWR|os.O_CREATE, 0o600)
	if errors.Is(err, ErrUnsafePartial) {
		return err
	} else if err != nil {
		return fmt.Errorf("files: creating the partial file: %w", err)
	}
	fctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	fx := &fetcher{n: n, ctx: fctx, cancel: cancel, sources: sources, c: c, f: f, statePath: statePath, cfg: cfg}
	fx.sch.init(fctx, len(sources))
	err = fx.run()
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		switch {
		case fx.pristine: // an earlier partial file not yet re-verified: leave it as it was
			f.Close()
		case errors.Is(err, format.ErrDecrypt), fx.keptChunks() == 0: // nothing worth keeping
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

// checkpoint records progress in the state file. On failure it also cuts
// the partial file back to the verified prefix, so nothing unverified stays.
func (fx *fetcher) checkpoint(failed bool) {
	fx.ckMu.Lock()
	defer fx.ckMu.Unlock()
	size := fx.sch.blobSize()
	if failed {
		fx.f.Truncate(fx.keptBytes())
	}
	if size < 0 {
		os.Remove(fx.statePath)
		return
	}
	writeState(fx.statePath, fx.c, size, fx.keptChunks())
}

// finish moves the complete, verified blob into place.
func (fx *fetcher) finish(dst string) error {
	if err := fx.f.Truncate(fx.finalSize()); err != nil {
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

// writeState writes the state file through a new temporary file beside
// it (never one found there: it could be a link) renamed into place. It
// is best effort: a state file not written only costs a refetch.
func writeState(path string, c cid.Cid, size int64, verified int) {
	line := fmt.Sprintf("kez-partial v1 %s %d %d\n", c, size, verified)
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|openNoFollow, 0o600)
	if err != nil {
		return
	}
	_, err = f.WriteString(line)
	if cerr := f.Close(); err == nil && cerr == nil {
		os.Rename(tmp, path)
	} else {
		os.Remove(tmp)
	}
}

// readState returns the verified-chunk hint and size of a state file for
// blob c, or 0 if there is none or it is about something else. The hint is
// re-verified before use, so a damaged state file only costs a refetch.
// A state file openLeftover refuses is an *UnsafePartialError.
func readState(path string, c cid.Cid) (int, int64, error) {
	f, err := openLeftover(path, os.O_RDONLY, 0)
	if errors.Is(err, ErrUnsafePartial) {
		return 0, 0, err
	} else if err != nil {
		return 0, 0, nil
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxStateFile+1))
	if err != nil || len(b) > maxStateFile || !bytes.HasSuffix(b, []byte("\n")) {
		return 0, 0, nil
	}
	var cs string
	var size int64
	var verified int
	if k, err := fmt.Sscanf(string(b), "kez-partial v1 %s %d %d\n", &cs, &size, &verified); err != nil || k != 3 {
		return 0, 0, nil
	}
	if cs != c.String() || size < 0 || size > format.MaxBlobSize || verified < 0 || verified > format.NumChunks(size) {
		return 0, 0, nil
	}
	return verified, size, nil
}
