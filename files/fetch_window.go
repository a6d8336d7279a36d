package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/libp2p/go-libp2p/core/peer"
)

// pipelineDepth is how many chunks a fetch reads ahead of the one it is
// verifying and writing, so the network and the hashing overlap.
const pipelineDepth = 16

// worker is one source's share of a fetch: its buffers and hasher.
type worker struct {
	fx     *fetcher
	leaves []format.Hash
	hbuf   []byte
	lh     format.LeafHasher
	nbufs  int
	free   chan []byte // chunk buffers not in use; made on first use
}

func newWorker(fx *fetcher, nbufs int) *worker {
	return &worker{
		fx:     fx,
		leaves: make([]format.Hash, maxChunksPerRequest),
		hbuf:   make([]byte, (maxProofHashes+maxChunksPerRequest)*format.HashSize),
		lh:     format.NewLeafHasher(),
		nbufs:  nbufs,
	}
}

func (w *worker) buffers() chan []byte {
	if w.free == nil {
		w.free = make(chan []byte, w.nbufs)
		for range w.nbufs {
			w.free <- make([]byte, format.ChunkSize)
		}
	}
	return w.free
}

type readChunk struct {
	buf []byte
	err error
}

// worker fetches tasks from source p, the fetch's w-th, until every chunk
// is verified, the fetch ends, or p is dropped: it refused, could not be
// reached, sent a bad chunk, or its stream broke too many times in a row.
// A task lost to other copies in the end game is no fault of p's. It
// returns why p was dropped (nil if it was not).
func (fx *fetcher) worker(wi int, p peer.ID) error {
	nbufs := pipelineDepth
	if fx.dec != nil {
		nbufs += decryptDepth // buffers wait for the decryption too
	}
	w := newWorker(fx, nbufs)
	breaks := 0
	for {
		window := maxChunksPerRequest
		if fx.sch.workers() > 1 {
			window = taskChunks
		}
		t := fx.sch.claim(wi, window)
		if t == nil {
			return nil
		}
		got, err := w.window(p, t)
		if got > 0 {
			breaks = 0
		}
		if err == nil || errors.Is(err, errLost) {
			continue
		}
		if fx.ctx.Err() != nil {
			return context.Cause(fx.ctx)
		}
		var be *brokenError
		if errors.As(err, &be) {
			breaks++
			allowed := 1
			if fx.sch.workers() == 1 {
				allowed = maxBreaks
			}
			if breaks <= allowed {
				fx.n.log.Debug("files: a transfer broke off; asking again on a fresh stream", "peer", p, "err", err)
				continue
			}
		}
		fx.n.log.Debug("files: dropping a source", "peer", p, "err", err)
		return err
	}
}

// window fetches task t from p: a reader goroutine fills buffers from the
// stream while this one verifies and writes them (or hands them to the
// decryption). A verified chunk another copy of the task took first is
// dropped, and once every chunk of t is taken the stream is reset and
// the window ends with errLost. It returns how many chunks it verified;
// what nobody took goes back to the scheduler.
func (w *worker) window(p peer.ID, t *task) (int, error) {
	fx := w.fx
	req := request{cid: fx.c, start: uint64(t.sp.start), count: uint32(t.sp.end - t.sp.start)}
	s, h, err := fx.request(w, p, req, t)
	if err != nil {
		fx.sch.giveBack(t, t.sp.start)
		return 0, err
	}
	stop := context.AfterFunc(t.ctx, func() { s.Reset() })
	defer stop()
	if t.sp.start == 0 {
		fx.progress()
	}
	route := fx.n.RouteOf(s.Conn())
	free := w.buffers()
	full := make(chan readChunk, w.nbufs)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // reader: never blocks on full, which has room for every buffer
		for i := 0; i < h.count; i++ {
			var b []byte
			select {
			case b = <-free:
			case <-done:
				return
			}
			b = b[:format.ChunkLen(h.size, h.start+i)]
			fx.quietFor(s)
			_, err := io.ReadFull(s, b)
			full <- readChunk{buf: b, err: err}
			if err != nil {
				return
			}
		}
	})
	abort := func(i int, err error) (int, error) {
		s.Reset()
		close(done)
		wg.Wait()
		for len(full) > 0 {
			free <- (<-full).buf[:format.ChunkSize]
		}
		fx.sch.giveBack(t, h.start+i)
		var ce *CorruptError
		if e := fx.ended(t); e != nil && !errors.As(err, &ce) {
			return i, e // the reset was ours
		}
		return i, err
	}
	for i := 0; i < h.count; i++ {
		if t.ctx.Err() != nil {
			return abort(i, nil)
		}
		idx := h.start + i
		rc := <-full
		if rc.err != nil {
			free <- rc.buf[:format.ChunkSize]
			return abort(i, fx.brokeOff(fmt.Errorf("files: the transfer broke off at chunk %d: %w", idx, rc.err)))
		}
		if w.lh.Sum(rc.buf) != w.leaves[i] {
			free <- rc.buf[:format.ChunkSize]
			return abort(i, &CorruptError{Index: idx, Reason: "its bytes do not match its leaf hash"})
		}
		won, complete := fx.sch.take(t, idx)
		if !won { // another copy of the task kept it
			free <- rc.buf[:format.ChunkSize]
		} else if err := w.kept(p, route, idx, rc.buf); err != nil {
			return abort(i, err)
		}
		if complete && i < h.count-1 {
			return abort(i+1, errLost)
		}
	}
	close(done)
	wg.Wait()
	s.Close()
	fx.sch.finished(t)
	return h.count, nil
}

// kept writes verified chunk idx, which this worker took, and counts it.
func (w *worker) kept(p peer.ID, route Route, idx int, b []byte) error {
	fx := w.fx
	n := int64(len(b))
	if err := w.keep(idx, b); err != nil {
		fx.sch.release(idx)
		return err
	}
	if fx.cfg.routes != nil {
		fx.cfg.routes(p, route, n)
	}
	_, prefix := fx.sch.verified(idx)
	fx.progress()
	if fx.dec == nil {
		fx.maybeCheckpoint(prefix)
	}
	return nil
}

// keep writes verified chunk idx at its offset, or hands it to the
// decryption, which gives the buffer back when done with it.
func (w *worker) keep(idx int, b []byte) error {
	if w.fx.dec != nil {
		return w.fx.dec.add(idx, b, w.free)
	}
	if w.fx.cfg.onWrite != nil {
		w.fx.cfg.onWrite(idx)
	}
	_, err := w.fx.f.WriteAt(b, int64(idx)*format.ChunkSize)
	w.free <- b[:format.ChunkSize]
	if err != nil {
		return fmt.Errorf("files: writing the partial file: %w", err)
	}
	return nil
}
