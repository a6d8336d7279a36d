package lifecycle

import (
	"context"
	"errors"
	"testing"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestGate(t *testing.T) {
	var g Gate
	if !g.Enter() || !g.Enter() {
		t.Fatal("an open gate refused a call")
	}
	if closed(g.Stopped()) || closed(g.Idle()) {
		t.Fatal("stopped or idle before Stop")
	}
	g.Leave()
	g.Stop()
	g.Stop() // twice is harmless
	if !closed(g.Stopped()) {
		t.Error("Stopped not closed after Stop")
	}
	if closed(g.Idle()) {
		t.Error("idle with a call under way")
	}
	if g.Enter() {
		t.Error("a stopped gate let a call in")
	}
	g.Leave()
	if !closed(g.Idle()) {
		t.Error("not idle once the last call left")
	}
}

func TestGateStopWhileIdle(t *testing.T) {
	var g Gate
	g.Stop()
	if !closed(g.Idle()) {
		t.Error("a gate stopped with nothing under way is not idle")
	}
}

func TestWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	if err := Wait(ctx, done); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait with an ended ctx: %v", err)
	}
	close(done)
	if err := Wait(ctx, done); err != nil {
		t.Errorf("Wait on a closed channel with an ended ctx: %v", err)
	}
}
