package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// maxBreaks is how many times in a row a source's stream may break
// without a verified chunk in between before the source is dropped: the
// last source left is given that many fresh streams (a path change
// replaces a connection), the others one.
const maxBreaks = 3

// fetcher is the state of one Fetch.
type fetcher struct {
	n         *Node
	ctx       context.Context // ended by the caller, or with the cause of a failed decryption
	cancel    context.CancelCauseFunc
	sources   []peer.ID // the owner first
	c         cid.Cid
	f         *os.File
	statePath string
	cfg       fetchConfig

	sch      sched
	dec      *decrypter // nil unless the fetch decrypts
	pristine bool       // an earlier partial file exists and is not re-verified yet

	ckMu   sync.Mutex // serialises checkpoints
	progMu sync.Mutex // serialises progress calls
	lastCk int        // the kept chunks at the last checkpoint
}

// brokenError is a stream that broke off after its answer began: worth a
// fresh stream, which may take a better connection.
type brokenError struct{ err error }

func (e *brokenError) Error() string { return e.err.Error() }
func (e *brokenError) Unwrap() error { return e.err }

// brokeOff wraps a failed read of a source's stream as a brokenError,
// counting it in Stats.Stalls if the source went silent for the node's
// StallTimeout (the read deadline passed).
func (fx *fetcher) brokeOff(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		fx.n.stats.stalls.Add(1)
	}
	return &brokenError{err}
}

// quietFor sets the deadline by which the next read from s must return: a
// source that sends nothing for the node's StallTimeout loses the stream.
func (fx *fetcher) quietFor(s network.Stream) {
	s.SetReadDeadline(time.Now().Add(fx.n.stallTimeout))
}

func (fx *fetcher) run() error {
	if d := fx.cfg.decrypt; d != nil {
		dec, err := newDecrypter(fx, d)
		if err != nil {
			return err
		}
		fx.dec = dec
	}
	hint, hintSize, err := readState(fx.statePath, fx.c)
	if err != nil {
		fx.pristine = true // leave the partial file as it was
		return err
	}
	if hint > 0 {
		fx.pristine = true
		if err := fx.reverify(hint, hintSize); err != nil {
			return err
		}
		fx.pristine = false
	} else if err := fx.f.Truncate(0); err != nil {
		return fmt.Errorf("files: clearing the partial file: %w", err)
	}
	if fx.dec != nil {
		if err := fx.dec.start(); err != nil {
			return err
		}
	}
	errs := make([]error, len(fx.sources))
	var wg sync.WaitGroup
	for i, p := range fx.sources {
		wg.Go(func() {
			defer fx.sch.exit(i)
			errs[i] = fx.worker(i, p)
		})
	}
	wg.Wait()
	copies, dropped := fx.sch.endGame()
	fx.n.stats.copies.Add(copies)
	fx.n.stats.duplicates.Add(dropped)
	if fx.dec != nil {
		if err := fx.dec.stop(); err != nil {
			return err
		}
	}
	if err := context.Cause(fx.ctx); err != nil {
		return err
	}
	if _, _, all := fx.sch.status(); all {
		return nil
	}
	if len(fx.sources) == 1 {
		return errs[0]
	}
	return &SourceError{Peer: fx.sources[0], Err: errs[0]}
}

// keptChunks is the number of chunks at the start of the blob that the
// partial file holds, verified: what the state file records.
func (fx *fetcher) keptChunks() int {
	if fx.dec != nil {
		return fx.dec.keptChunks()
	}
	_, prefix, _ := fx.sch.status()
	return prefix
}

// keptBytes is the length of the partial file's verified prefix.
func (fx *fetcher) keptBytes() int64 {
	if fx.dec != nil {
		return fx.dec.keptBytes()
	}
	size := fx.sch.blobSize()
	return min(int64(fx.keptChunks())*format.ChunkSize, max(size, 0))
}

// finalSize is the size of the finished file.
func (fx *fetcher) finalSize() int64 {
	if fx.dec != nil {
		return fx.dec.plainSize
	}
	return fx.sch.blobSize()
}

// progress reports the verified bytes.
func (fx *fetcher) progress() {
	if fx.cfg.progress == nil {
		return
	}
	fx.progMu.Lock()
	defer fx.progMu.Unlock()
	if size := fx.sch.blobSize(); size >= 0 {
		b, _, _ := fx.sch.status()
		fx.cfg.progress(b, size)
	}
}

// maybeCheckpoint records progress in the state file every
// checkpointChunks kept chunks.
func (fx *fetcher) maybeCheckpoint(kept int) {
	fx.ckMu.Lock()
	due := kept >= fx.lastCk+checkpointChunks
	if due {
		fx.lastCk = kept
	}
	fx.ckMu.Unlock()
	if due {
		fx.checkpoint(false)
	}
}

// errLost ends a worker's task when other copies of it took its every
// chunk first (the end game): the source is not to blame.
var errLost = errors.New("files: another source sent the task's chunks first")

// ended returns the fetch's cause if it ended, errLost if task t (nil
// for none) was lost, else nil.
func (fx *fetcher) ended(t *task) error {
	if fx.ctx.Err() != nil {
		return context.Cause(fx.ctx)
	}
	if t != nil && fx.sch.isLost(t) {
		return errLost
	}
	return nil
}

// request sends req to source p on a new stream and reads the answer up to
// and including the leaf hashes, which it verifies against the CID and
// leaves in w.leaves. t, when not nil, is the task req asks for: the
// first answer gives the blob's size, t is clipped to it, and the stream
// is reset when t is lost.
func (fx *fetcher) request(w *worker, p peer.ID, req request, t *task) (network.Stream, respHeader, error) {
	var h respHeader
	ctx := fx.ctx
	if t != nil {
		ctx = t.ctx
	}
	s, err := fx.n.newStream(ctx, p)
	if err != nil {
		if e := fx.ended(t); e != nil {
			return nil, h, e
		}
		return nil, h, fmt.Errorf("files: cannot reach the owner %s: %w", p, err)
	}
	if t != nil && fx.isRelayed(s) {
		fx.sch.shrink(t, t.sp.start+relayedWindow)
		req.count = uint32(t.sp.end - t.sp.start)
	}
	fail := func(err error) (network.Stream, respHeader, error) {
		s.Reset()
		if e := fx.ended(t); e != nil {
			return nil, h, e
		}
		return nil, h, err
	}
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	fx.quietFor(s) // the answer and its hashes; window renews it for each chunk
	if _, err := s.Write(appendRequest(make([]byte, 0, maxRequestSize), req)); err != nil {
		return fail(&brokenError{fmt.Errorf("files: sending the request to the owner: %w", err)})
	}
	s.CloseWrite()
	var hb [respHeaderLen]byte
	if _, err := io.ReadFull(s, hb[:1]); err != nil {
		return fail(fx.brokeOff(fmt.Errorf("files: reading the owner's answer: %w", err)))
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
		return fail(fx.brokeOff(fmt.Errorf("files: reading the owner's answer: %w", err)))
	}
	h, err = parseRespHeader(hb[1:], req)
	if err != nil {
		return fail(err)
	}
	hb2 := w.hbuf[:(h.nproof+h.count)*format.HashSize]
	if _, err := io.ReadFull(s, hb2); err != nil {
		return fail(fx.brokeOff(fmt.Errorf("files: reading the leaf hashes: %w", err)))
	}
	proof := make([]format.Hash, h.nproof)
	for i := range proof {
		copy(proof[i][:], hb2[i*format.HashSize:])
	}
	hb2 = hb2[h.nproof*format.HashSize:]
	leaves := w.leaves[:h.count]
	for i := range leaves {
		copy(leaves[i][:], hb2[i*format.HashSize:])
	}
	if err := format.VerifyRange(fx.c, h.size, h.start, leaves, proof); err != nil {
		return fail(&CorruptError{Index: h.start, Reason: "the leaf hashes or size do not match the CID"})
	}
	if fx.dec != nil && h.size != format.EncryptedSize(fx.dec.plainSize) {
		return fail(fmt.Errorf("%w: the blob is %d bytes, not the encryption of %d bytes", format.ErrDecrypt, h.size, fx.dec.plainSize))
	}
	if t != nil {
		if !fx.sch.sized(h.size, t) {
			return fail(&CorruptError{Index: h.start, Reason: "the owner changed the blob's size"})
		}
		if h.count > t.sp.end-t.sp.start {
			return fail(&CorruptError{Index: h.start, Reason: "the owner sent more chunks than were asked for"})
		}
	}
	return s, h, nil
}

// isRelayed reports whether s runs over a limited or relayed connection.
func (fx *fetcher) isRelayed(s network.Stream) bool {
	return s.Conn().Stat().Limited || fx.n.RouteOf(s.Conn()) == RouteRelayed
}

// reverify checks the partial file's first hint chunks against the leaf
// hashes of the first source that answers, and sets the verified prefix
// to what holds.
func (fx *fetcher) reverify(hint int, hintSize int64) error {
	w := newWorker(fx, 0)
	var firstErr error
	for _, p := range fx.sources {
		v, size, err := fx.reverifyFrom(w, p, hint, hintSize)
		if err == nil {
			if size >= 0 {
				fx.sch.known(size, v)
				if fx.dec != nil {
					if err := fx.dec.resumed(v); err != nil {
						return err
					}
				}
			}
			fx.progress()
			return nil
		}
		if fx.ctx.Err() != nil {
			return context.Cause(fx.ctx)
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return firstErr
}

// reverifyFrom re-verifies with the leaf hashes of p and returns the
// verified prefix and the size (-1 if the state file was not about this
// blob after all).
func (fx *fetcher) reverifyFrom(w *worker, p peer.ID, hint int, hintSize int64) (int, int64, error) {
	buf := make([]byte, format.ChunkSize)
	var chunks io.ReaderAt = fx.f
	if fx.dec != nil {
		enc, err := format.NewEncryptReader(fx.f, fx.dec.plainSize, fx.dec.key)
		if err != nil {
			return 0, 0, err
		}
		chunks = enc // the plaintext kept, encrypted again: the encryption is deterministic
	}
	verified, size := 0, int64(-1)
	for verified < hint {
		req := request{cid: fx.c, start: uint64(verified), count: uint32(min(hint-verified, maxChunksPerRequest)), hashesOnly: true}
		s, h, err := fx.request(w, p, req, nil)
		var re *RemoteError
		if errors.As(err, &re) { // the state file was wrong about the blob
			return 0, size, nil
		}
		if err != nil {
			return 0, 0, err
		}
		s.Close()
		if h.size != hintSize {
			return 0, -1, nil // the state file was not about this blob after all
		}
		size = h.size
		for i := 0; i < h.count; i++ {
			idx := h.start + i
			b := buf[:format.ChunkLen(h.size, idx)]
			if k, _ := chunks.ReadAt(b, int64(idx)*format.ChunkSize); k < len(b) || w.lh.Sum(b) != w.leaves[i] {
				return verified, size, nil // damaged from here on: fetch it again
			}
			verified++
		}
	}
	return verified, size, nil
}
