package files

import (
	"context"
	"testing"

	"github.com/kez-lat/kez-chat/files/format"
)

// newSched returns a scheduler for workers workers, ended with the test.
func newSched(t *testing.T, workers int) *sched {
	s := new(sched)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s.init(ctx, workers)
	return s
}

// takeAll takes and verifies chunks [from, to) for t.
func takeAll(t *testing.T, s *sched, tk *task, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if won, _ := s.take(tk, i); !won {
			t.Fatalf("chunk %d was taken already", i)
		}
		s.verified(i)
	}
}

// The scheduler hands out the first span to the first source alone until
// the size is known, then tasks in order; given-back chunks (a broken
// stream, a relayed connection's shorter window) come first, lowest first.
func TestSched(t *testing.T) {
	s := newSched(t, 2)
	probe := s.claim(0, taskChunks)
	if probe == nil || probe.sp != (span{0, taskChunks}) {
		t.Fatalf("probe %v", probe)
	}
	s.shrink(probe, 4) // a relayed connection asks for less
	if !s.sized(40*format.ChunkSize, probe) || probe.sp != (span{0, 4}) {
		t.Fatalf("sized: %v", probe.sp)
	}
	a, b := s.claim(1, taskChunks), s.claim(0, taskChunks)
	if a.sp != (span{4, 20}) || b.sp != (span{20, 36}) {
		t.Fatalf("tasks %v %v", a.sp, b.sp)
	}
	s.giveBack(b, 25) // broke off at chunk 25
	s.shrink(a, 10)
	if c := s.claim(0, 3); c.sp != (span{10, 13}) {
		t.Fatalf("first given back: %v", c.sp)
	}
	if c := s.claim(0, taskChunks); c.sp != (span{13, 20}) {
		t.Fatalf("the rest of it: %v", c.sp)
	}
	if c := s.claim(0, taskChunks); c.sp != (span{25, 36}) {
		t.Fatalf("then the broken task: %v", c.sp)
	}
	last := s.claim(0, taskChunks)
	if last.sp != (span{36, 40}) {
		t.Fatalf("then the last: %v", last.sp)
	}
	if s.sized(41*format.ChunkSize, a) {
		t.Error("a second size was accepted")
	}
	takeAll(t, s, probe, 0, 39)
	if b, prefix, all := s.status(); prefix != 39 || all || b != 39*format.ChunkSize {
		t.Fatalf("status %d %d %v", b, prefix, all)
	}
	takeAll(t, s, last, 39, 40)
	if c := s.claim(0, taskChunks); c != nil {
		t.Errorf("a claim after every chunk was verified: %v", c.sp)
	}
}

// Until the size is known only the first source asks; once its worker
// stopped, another may.
func TestSchedProbeFirstSource(t *testing.T) {
	s := newSched(t, 2)
	got := make(chan *task)
	go func() { got <- s.claim(1, taskChunks) }()
	p := s.claim(0, taskChunks)
	s.giveBack(p, 0) // the first source's probe failed: it asks again
	if p = s.claim(0, taskChunks); p.sp != (span{0, taskChunks}) {
		t.Fatalf("second probe %v", p.sp)
	}
	s.giveBack(p, 0)
	s.exit(0) // dropped
	if c := <-got; c.sp != (span{0, taskChunks}) {
		t.Fatalf("the second source's probe %v", c.sp)
	}
}

// End game: with nothing left to hand out, an idle worker copies the task
// with the fewest copies and the most chunks missing, from its first chunk
// not taken; the first copy of a chunk is taken, the other dropped; a task
// whose every chunk another copy took is lost; a chunk whose write failed
// goes back.
func TestSchedEndGame(t *testing.T) {
	s := newSched(t, 3)
	a := s.claim(0, taskChunks)
	s.sized(40*format.ChunkSize, a)
	b, c := s.claim(1, taskChunks), s.claim(2, taskChunks) // [16,32) [32,40)
	takeAll(t, s, a, 0, 16)
	s.finished(a)
	takeAll(t, s, c, 32, 35) // c has 5 missing, b 16

	ab := s.claim(0, taskChunks) // the idle first source copies b
	if ab == nil || ab.sp != b.sp {
		t.Fatalf("first copy %v, want %v", ab, b.sp)
	}
	takeAll(t, s, b, 16, 18)
	ac := s.claim(0, taskChunks) // b has two copies now: c next, from its first missing chunk
	if ac == nil || ac.sp != (span{35, 40}) {
		t.Fatalf("second copy %v", ac)
	}
	if copies, _ := s.endGame(); copies != 2 {
		t.Errorf("copies %d", copies)
	}

	// b's copy wins chunk 18; b's own is dropped.
	if won, _ := s.take(ab, 18); !won {
		t.Fatal("the copy's chunk 18")
	}
	if won, done := s.take(b, 18); won || done {
		t.Fatalf("b's chunk 18: won %v, done %v", won, done)
	}
	s.verified(18)
	if _, dropped := s.endGame(); dropped != 1 {
		t.Errorf("dropped %d", dropped)
	}
	// The copy takes the rest but 31: b is not lost yet.
	for i := 19; i < 31; i++ {
		s.take(ab, i)
	}
	if b.ctx.Err() != nil || s.isLost(b) {
		t.Fatal("b lost with a chunk missing")
	}
	// A failed write gives chunk 20 back: b may take it.
	s.release(20)
	if won, _ := s.take(b, 20); !won {
		t.Fatal("chunk 20 given back")
	}
	s.release(20)
	s.take(ab, 20)
	if won, done := s.take(ab, 31); !won || !done {
		t.Fatalf("the copy's last chunk: won %v, done %v", won, done)
	}
	if b.ctx.Err() == nil || !s.isLost(b) {
		t.Fatal("b not lost once the copy took its every chunk")
	}
	if ab.ctx.Err() != nil || s.isLost(ab) {
		t.Fatal("the winning copy was lost")
	}
	s.giveBack(b, 18) // nothing missing: nothing queued
	if len(s.back) != 0 {
		t.Fatalf("queued %v", s.back)
	}
	s.finished(ab)
	for i := 19; i < 32; i++ {
		s.verified(i)
	}
	// c's own worker wins the rest: the copy is lost.
	takeAll(t, s, c, 35, 40)
	if !s.isLost(ac) || s.isLost(c) {
		t.Fatal("c's copy should be lost, c not")
	}
	if _, _, all := s.status(); !all {
		t.Fatal("not complete")
	}
	if x := s.claim(1, taskChunks); x != nil {
		t.Fatalf("a claim after the end: %v", x.sp)
	}
}
