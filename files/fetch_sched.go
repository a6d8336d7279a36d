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

// The states of a chunk in a fetch.
const (
	chunkMissing = iota // nobody kept it yet
	chunkTaken          // a worker verified it and is writing it
	chunkDone           // verified and written
)

// task is a span a worker fetches from its source: one handed out, or in
// the end game a copy of the unverified rest of another worker's.
type task struct {
	sp     span
	ctx    context.Context // ends with the fetch, or when the task is lost
	cancel context.CancelFunc
	low    int  // chunks [sp.start, low) are taken or done
	lost   bool // another copy took every chunk of it first
}

// sched hands out the chunks of one fetch to the workers of its sources
// and keeps track of which are verified. Until the blob's size is known
// the first source's worker alone asks (its answer gives the size), the
// others wait; another asks only once the first source was dropped.
//
// End game: once no chunk is left to hand out, an idle worker takes a
// copy of another worker's task, from its first chunk not yet taken; the
// first verified copy of each chunk is written (take), the others are
// dropped, and a task whose every chunk another copy took is lost: its
// context ends, which resets its worker's stream.
type sched struct {
	mu   sync.Mutex
	cond sync.Cond
	ctx  context.Context

	size      int64   // -1 until a source said (verified against the CID)
	nchunks   int     // the blob's chunks, once the size is known
	state     []uint8 // by chunk: chunkMissing, chunkTaken or chunkDone
	prefix    int     // chunks [0, prefix) are all verified
	count     int     // verified chunks
	bytes     int64   // verified bytes
	next      int     // the first chunk never handed out
	back      []span  // handed out, then given back: handed out first, lowest first
	probing   bool    // the size is unknown and a worker asks for it
	firstGone bool    // the first source's worker stopped: others may probe
	tasks     []*task // handed out and not yet finished or given back
	alive     int     // workers still running

	copies  int64 // tasks copied in the end game
	dropped int64 // chunks dropped because another copy took them first
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
		s.state[i] = chunkDone
		s.bytes += int64(format.ChunkLen(size, i))
	}
	s.prefix, s.count, s.next = verified, verified, verified
}

func (s *sched) setSizeLocked(size int64) {
	s.size = size
	s.nchunks = format.NumChunks(size)
	s.state = make([]uint8, s.nchunks)
}

// newTaskLocked hands out sp.
func (s *sched) newTaskLocked(sp span) *task {
	t := &task{sp: sp, low: sp.start}
	t.ctx, t.cancel = context.WithCancel(s.ctx)
	s.tasks = append(s.tasks, t)
	return t
}

// claim hands the worker of source w (0 is the first source) the next
// span of at most max chunks, waiting while the size is unknown or other
// workers hold every chunk still missing, copied as often as useful. It
// returns nil once every chunk is verified, or the fetch ended.
func (s *sched) claim(w, max int) *task {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		switch {
		case s.ctx.Err() != nil || s.size >= 0 && s.count == s.nchunks:
			return nil
		case len(s.back) > 0:
			sp := s.back[0]
			if sp.end-sp.start > max {
				sp.end = sp.start + max
				s.back[0].start = sp.end
			} else {
				s.back = s.back[1:]
			}
			if sp = s.trimLocked(sp); sp.start < sp.end {
				return s.newTaskLocked(sp)
			}
			continue
		case s.size < 0:
			if !s.probing && (w == 0 || s.firstGone) {
				s.probing = true
				return s.newTaskLocked(span{s.next, s.next + max})
			}
		case s.next < s.nchunks:
			sp := span{s.next, min(s.next+max, s.nchunks)}
			s.next = sp.end
			return s.newTaskLocked(sp)
		default:
			if t := s.copyLocked(); t != nil {
				return t
			}
			if len(s.tasks) == 0 {
				return nil // unreachable while chunks are missing
			}
		}
		s.cond.Wait()
	}
}

// copyLocked returns a copy of the rest of the task that has the fewest
// copies, then the most chunks still missing (the least progress), or
// nil if every task's chunks are all taken.
func (s *sched) copyLocked() *task {
	var best *task
	bestCopies, bestLeft := 0, 0
	for _, u := range s.tasks {
		if s.completeLocked(u) {
			continue
		}
		copies, left := 0, 0
		for _, v := range s.tasks {
			if v.sp.end == u.sp.end && !s.completeLocked(v) {
				copies++
			}
		}
		for i := u.low; i < u.sp.end; i++ {
			if s.state[i] == chunkMissing {
				left++
			}
		}
		if best == nil || copies < bestCopies || copies == bestCopies && left > bestLeft {
			best, bestCopies, bestLeft = u, copies, left
		}
	}
	if best == nil {
		return nil
	}
	s.copies++
	return s.newTaskLocked(span{best.low, best.sp.end})
}

// completeLocked reports whether every chunk of t is taken or done, moving
// t.low on.
func (s *sched) completeLocked(t *task) bool {
	for t.low < t.sp.end && s.state[t.low] != chunkMissing {
		t.low++
	}
	return t.low == t.sp.end
}

// trimLocked narrows sp to its first and last missing chunks.
func (s *sched) trimLocked(sp span) span {
	for sp.start < sp.end && s.state[sp.start] != chunkMissing {
		sp.start++
	}
	for sp.end > sp.start && s.state[sp.end-1] != chunkMissing {
		sp.end--
	}
	return sp
}

// sized records the size a source's answer gave (verified against the
// CID) for task t, and clips t to the blob. It reports false if another
// source gave another size.
func (s *sched) sized(size int64, t *task) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size < 0 {
		s.setSizeLocked(size)
		s.probing = false
		t.sp.end = min(t.sp.end, s.nchunks)
		s.next = t.sp.end
		s.cond.Broadcast()
		return true
	}
	t.sp.end = min(t.sp.end, s.nchunks)
	return s.size == size
}

// removeLocked ends t.
func (s *sched) removeLocked(t *task) {
	t.cancel()
	if i := slices.Index(s.tasks, t); i >= 0 {
		s.tasks = slices.Delete(s.tasks, i, i+1)
	}
	s.cond.Broadcast()
}

// giveBack ends task t, returning the chunks from from on that nobody
// took, for another worker (or this one) to fetch.
func (s *sched) giveBack(t *task, from int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(t)
	if s.size < 0 { // the size never came: the probe is over
		s.probing = false
	} else if from < t.sp.end {
		s.putBackLocked(span{from, t.sp.end})
	}
}

// putBackLocked queues the missing chunks of a span given back, keeping
// the queue sorted.
func (s *sched) putBackLocked(rest span) {
	if rest = s.trimLocked(rest); rest.start == rest.end {
		return
	}
	i, _ := slices.BinarySearchFunc(s.back, rest, func(a, b span) int { return a.start - b.start })
	s.back = slices.Insert(s.back, i, rest)
}

// shrink gives back the chunks of task t from end on, keeping
// [t.sp.start, end).
func (s *sched) shrink(t *task, end int) {
	if end >= t.sp.end {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size >= 0 { // else the probe: nothing was handed out past it
		s.putBackLocked(span{end, t.sp.end})
		s.cond.Broadcast()
	}
	t.sp.end = end
}

// finished ends task t, every chunk of which was taken.
func (s *sched) finished(t *task) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.removeLocked(t)
}

// take claims verified chunk i of task t for writing. It reports whether
// t's worker is to write it (false: another copy took it first, and this
// one is dropped) and whether t has no chunk left to take. Another task
// that has none left is lost: its context ends.
func (s *sched) take(t *task, i int) (won, complete bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state[i] != chunkMissing {
		s.dropped++
		return false, s.completeLocked(t)
	}
	s.state[i] = chunkTaken
	for _, u := range s.tasks {
		if u != t && !u.lost && u.sp.start <= i && i < u.sp.end && s.completeLocked(u) {
			u.lost = true
			u.cancel()
		}
	}
	return true, s.completeLocked(t)
}

// release gives back chunk i, taken and then not written.
func (s *sched) release(i int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state[i] = chunkMissing
	for _, u := range s.tasks {
		u.low = min(u.low, max(i, u.sp.start))
	}
	s.cond.Broadcast()
}

// isLost reports whether t ended because other copies took its every
// chunk.
func (s *sched) isLost(t *task) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return t.lost
}

// verified records chunk i, taken, as verified and written, and returns
// the verified bytes and the contiguous prefix.
func (s *sched) verified(i int) (int64, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state[i] != chunkDone {
		s.state[i] = chunkDone
		s.count++
		s.bytes += int64(format.ChunkLen(s.size, i))
		for s.prefix < s.nchunks && s.state[s.prefix] == chunkDone {
			s.prefix++
		}
	}
	if s.count == s.nchunks {
		s.cond.Broadcast()
	}
	return s.bytes, s.prefix
}

// status returns the verified bytes, the contiguous prefix and whether
// every chunk is verified.
func (s *sched) status() (int64, int, bool) {
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

// exit records that the worker of source w stopped.
func (s *sched) exit(w int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alive--
	if w == 0 {
		s.firstGone = true
	}
	s.cond.Broadcast()
}

// endGame returns the tasks copied and the chunks dropped as duplicates.
func (s *sched) endGame() (copies, dropped int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.copies, s.dropped
}
