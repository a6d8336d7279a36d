package files

import (
	"context"
	"slices"
	"sync"

	"github.com/kez-lat/kez-chat/files/format"
)

// Sizes of the requests a fetch makes, in chunks.
const (
	// taskChunks is the task a source takes at a time while several
	// sources share a fetch (4 MiB).
	taskChunks = 16

	// relayedWindow bounds a request over a relayed connection, so that
	// the next one can move to a direct connection once there is one.
	relayedWindow = 64
)

// span is the chunks [start, end) of a blob.
type span struct{ start, end int }

// sched hands out the chunks of one fetch to the workers of its sources
// and keeps track of which are verified. Until the blob's size is known
// the first worker alone asks (its answer gives the size), the others
// wait.
type sched struct {
	mu   sync.Mutex
	cond sync.Cond
	ctx  context.Context

	size    int64  // -1 until a source said (verified against the CID)
	nchunks int    // the blob's chunks, once the size is known
	done    []bool // verified and written, by chunk
	prefix  int    // chunks [0, prefix) are all verified
	count   int    // verified chunks
	bytes   int64  // verified bytes
	next    int    // the first chunk never handed out
	back    []span // handed out, then given back: handed out first, lowest first
	probing bool   // the size is unknown and a worker asks for it
	claims  int    // spans handed out and not yet finished or given back
	alive   int    // workers still running
}

func (s *sched) init(ctx context.Context, workers int) {
	s.cond.L = &s.mu
	s.ctx = ctx
	s.size = -1
	s.alive = workers
	context.AfterFunc(ctx, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.cond.Broadcast()
	})
}

// blobSize returns the blob's size, or -1 if it is not known yet.
func (s *sched) blobSize() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// known sets the size and the verified prefix, before any worker runs
// (after a resumed fetch re-verified its partial file).
func (s *sched) known(size int64, verified int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.setSizeLocked(size)
	for i := range verified {
		s.done[i] = true
		s.bytes += int64(format.ChunkLen(size, i))
	}
	s.prefix, s.count, s.next = verified, verified, verified
}

func (s *sched) setSizeLocked(size int64) {
	s.size = size
	s.nchunks = format.NumChunks(size)
	s.done = make([]bool, s.nchunks)
}

// claim hands out the next span of at most max chunks, waiting while
// other workers hold every chunk still missing. It reports false once
// every chunk is verified, or the fetch ended.
func (s *sched) claim(max int) (span, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case s.ctx.Err() != nil || s.size >= 0 && s.count == s.nchunks:
			return span{}, false
		case len(s.back) > 0:
			sp := s.back[0]
			if sp.end-sp.start > max {
				sp.end = sp.start + max
				s.back[0].start = sp.end
			} else {
				s.back = s.back[1:]
			}
			s.claims++
			return sp, true
		case s.size < 0 && !s.probing:
			s.probing = true
			s.claims++
			return span{s.next, s.next + max}, true
		case s.size >= 0 && s.next < s.nchunks:
			sp := span{s.next, min(s.next+max, s.nchunks)}
			s.next = sp.end
			s.claims++
			return sp, true
		case s.claims == 0:
			return span{}, false // unreachable while chunks are missing
		}
		s.cond.Wait()
	}
}

// sized records the size a source's answer gave (verified against the
// CID) for the span sp it answers, and clips sp to the blob. It reports
// false if another source gave another size.
func (s *sched) sized(size int64, sp *span) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size < 0 {
		s.setSizeLocked(size)
		s.probing = false
		sp.end = min(sp.end, s.nchunks)
		s.next = sp.end
		s.cond.Broadcast()
		return true
	}
	sp.end = min(sp.end, s.nchunks)
	return s.size == size
}

// giveBack returns the unfinished part [from, sp.end) of a claimed span,
// for another worker (or this one) to fetch, and ends the claim.
func (s *sched) giveBack(sp span, from int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims--
	if s.size < 0 { // the size never came: the probe is over
		s.probing = false
	} else if from < sp.end {
		rest := span{from, sp.end}
		i, _ := slices.BinarySearchFunc(s.back, rest, func(a, b span) int { return a.start - b.start })
		s.back = slices.Insert(s.back, i, rest)
	}
	s.cond.Broadcast()
}

// shrink gives back the chunks of a claimed span from end on, keeping the
// claim of [sp.start, end).
func (s *sched) shrink(sp *span, end int) {
	if end >= sp.end {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size < 0 {
		sp.end = end // the probe: nothing was handed out past it
		return
	}
	rest := span{end, sp.end}
	i, _ := slices.BinarySearchFunc(s.back, rest, func(a, b span) int { return a.start - b.start })
	s.back = slices.Insert(s.back, i, rest)
	sp.end = end
	s.cond.Broadcast()
}

// finished ends the claim of a span whose every chunk was verified.
func (s *sched) finished() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.claims--
	s.cond.Broadcast()
}

// verified records chunk i as verified and written, and returns the
// verified bytes and the contiguous prefix.
func (s *sched) verified(i int) (int64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.done[i] {
		s.done[i] = true
		s.count++
		s.bytes += int64(format.ChunkLen(s.size, i))
		for s.prefix < s.nchunks && s.done[s.prefix] {
			s.prefix++
		}
	}
	if s.count == s.nchunks {
		s.cond.Broadcast()
	}
	return s.bytes, s.prefix
}

// state returns the verified bytes, the contiguous prefix and whether
// every chunk is verified.
func (s *sched) state() (int64, int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes, s.prefix, s.size >= 0 && s.count == s.nchunks
}

// workers returns how many workers are still running.
func (s *sched) workers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.alive
}

// exit records that a worker stopped.
func (s *sched) exit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alive--
	s.cond.Broadcast()
}
