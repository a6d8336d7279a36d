// Package lifecycle lets a client shut down gracefully: it counts the calls
// under way, refuses new ones once stopped, and says when the last one
// ended. chat.Client and files.Sharing use it for Shutdown and Close.
//
//	if !g.Enter() {
//		return ErrClosed
//	}
//	defer g.Leave()
//
// and, to shut down:
//
//	g.Stop()
//	err := lifecycle.Wait(ctx, g.Idle())
package lifecycle

import (
	"context"
	"sync"
	"time"
)

// Gate counts the calls under way. The zero Gate is open; it is safe for
// concurrent use.
type Gate struct {
	mu      sync.Mutex
	n       int
	stopped chan struct{} // closed by Stop
	idle    chan struct{} // closed once stopped with no call under way
}

// init makes the channels; g.mu is held.
func (g *Gate) init() {
	if g.stopped == nil {
		g.stopped, g.idle = make(chan struct{}), make(chan struct{})
	}
}

// isStopped reports whether Stop was called; g.mu is held.
func (g *Gate) isStopped() bool {
	select {
	case <-g.stopped:
		return true
	default:
		return false
	}
}

// Enter starts a call, or reports false once the gate is stopped. Every
// Enter that reports true is paired with a Leave.
func (g *Gate) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	if g.isStopped() {
		return false
	}
	g.n++
	return true
}

// Leave ends a call started by Enter.
func (g *Gate) Leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n--; g.n == 0 && g.isStopped() {
		close(g.idle)
	}
}

// Stop refuses new calls. It is safe to call more than once.
func (g *Gate) Stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	if g.isStopped() {
		return
	}
	close(g.stopped)
	if g.n == 0 {
		close(g.idle)
	}
}

// Stopped is closed once Stop was called.
func (g *Gate) Stopped() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	return g.stopped
}

// Idle is closed once Stop was called and every call under way ended.
func (g *Gate) Idle() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.init()
	return g.idle
}

// Wait waits until done is closed or ctx ends, and returns ctx's error in
// the second case (a done already closed wins over an ended ctx).
func Wait(ctx context.Context, done <-chan struct{}) error {
	select {
	case <-done:
		return nil
	default:
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Sleep waits d or until ctx ends; it reports whether d passed (false:
// ctx ended first).
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
