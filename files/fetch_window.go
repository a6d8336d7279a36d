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

// worker fetches spans from source p until every chunk is verified, the
// fetch ends, or p is dropped: it refused, could not be reached, sent a
// bad chunk, or its stream broke too many times in a row. It returns why
// p was dropped (nil if it was not).
func (fx *fetcher) worker(p peer.ID) error {
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
		sp, ok := fx.sch.claim(window)
		if !ok {
			return nil
		}
		got, err := w.window(p, sp)
		if got > 0 {
			breaks = 0
		}
		if err == nil {
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

// window fetches the claimed span sp from p: a reader goroutine fills
// buffers from the stream while this one verifies and writes them (or
// hands them to the decryption). It returns how many chunks it verified;
// what it did not verify goes back to the scheduler.
func (w *worker) window(p peer.ID, sp span) (int, error) {
	fx := w.fx
	req := request{cid: fx.c, start: uint64(sp.start), count: uint32(sp.end - sp.start)}
	s, h, err := fx.request(w, p, req, &sp)
	if err != nil {
		fx.sch.giveBack(sp, sp.start)
		return 0, err
	}
	stop := context.AfterFunc(fx.ctx, func() { s.Reset() })
	defer stop()
	if sp.start == 0 {
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
		fx.sch.giveBack(sp, h.start+i)
		if fx.ctx.Err() != nil {
			return i, context.Cause(fx.ctx)
		}
		return i, err
	}
	for i := 0; i < h.count; i++ {
		if fx.ctx.Err() != nil {
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
		if err := w.keep(idx, rc.buf); err != nil {
			return abort(i, err)
		}
		if fx.cfg.routes != nil {
			fx.cfg.routes(p, route, int64(len(rc.buf)))
		}
		_, prefix := fx.sch.verified(idx)
		fx.progress()
		if fx.dec == nil {
			fx.maybeCheckpoint(prefix)
		}
	}
	close(done)
	wg.Wait()
	s.Close()
	fx.sch.finished()
	return h.count, nil
}

// keep writes verified chunk idx at its offset, or hands it to the
// decryption, which gives the buffer back when done with it.
func (w *worker) keep(idx int, b []byte) error {
	if w.fx.dec != nil {
		return w.fx.dec.add(idx, b, w.free)
	}
	_, err := w.fx.f.WriteAt(b, int64(idx)*format.ChunkSize)
	w.free <- b[:format.ChunkSize]
	if err != nil {
		return fmt.Errorf("files: writing the partial file: %w", err)
	}
	return nil
}
