package files

import (
	"context"
	"testing"

	"github.com/kez-lat/kez-chat/files/format"
)

// The scheduler hands out the first span alone until the size is known,
// then tasks in order; given-back chunks (a broken stream, a relayed
// connection's shorter window) come first, lowest first.
func TestSched(t *testing.T) {
	var s sched
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.init(ctx, 2)
	probe, ok := s.claim(taskChunks)
	if !ok || probe != (span{0, taskChunks}) {
		t.Fatalf("probe %v %v", probe, ok)
	}
	s.shrink(&probe, 4) // a relayed connection asks for less
	if !s.sized(40*format.ChunkSize, &probe) || probe != (span{0, 4}) {
		t.Fatalf("sized: %v", probe)
	}
	a, _ := s.claim(taskChunks)
	b, _ := s.claim(taskChunks)
	if a != (span{4, 20}) || b != (span{20, 36}) {
		t.Fatalf("tasks %v %v", a, b)
	}
	s.giveBack(b, 25) // broke off at chunk 25
	s.shrink(&a, 10)
	if c, _ := s.claim(3); c != (span{10, 13}) {
		t.Fatalf("first given back: %v", c)
	}
	if c, _ := s.claim(taskChunks); c != (span{13, 20}) {
		t.Fatalf("the rest of it: %v", c)
	}
	if c, _ := s.claim(taskChunks); c != (span{25, 36}) {
		t.Fatalf("then the broken task: %v", c)
	}
	if c, _ := s.claim(taskChunks); c != (span{36, 40}) {
		t.Fatalf("then the last: %v", c)
	}
	if s.sized(41*format.ChunkSize, &a) {
		t.Error("a second size was accepted")
	}
	for i := range 39 {
		s.verified(i)
	}
	if b, prefix, all := s.state(); prefix != 39 || all || b != 39*format.ChunkSize {
		t.Fatalf("state %d %d %v", b, prefix, all)
	}
	s.verified(39)
	if _, ok := s.claim(taskChunks); ok {
		t.Error("a claim after every chunk was verified")
	}
}
