package stacktest

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Tarpit is a real TCP listener on loopback that accepts connections,
// counts them and never answers: a server that hangs whoever asks it, or
// (counting connections) proof that nobody asked.
type Tarpit struct {
	ln       net.Listener
	accepted atomic.Int32
	accepts  chan struct{}
	mu       sync.Mutex
	conns    []net.Conn
}

// StartTarpit starts a tarpit on 127.0.0.1; it and the connections it
// holds are closed in t.Cleanup.
func StartTarpit(t testing.TB) *Tarpit {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("stacktest: tarpit: %v", err)
	}
	tp := &Tarpit{ln: ln, accepts: make(chan struct{}, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tp.mu.Lock()
			tp.conns = append(tp.conns, c)
			tp.mu.Unlock()
			tp.accepted.Add(1)
			select {
			case tp.accepts <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		tp.mu.Lock()
		defer tp.mu.Unlock()
		for _, c := range tp.conns {
			c.Close()
		}
	})
	return tp
}

// Addr is "127.0.0.1:PORT", also usable as a development handle domain.
func (tp *Tarpit) Addr() string { return tp.ln.Addr().String() }

// Port is the tarpit's port.
func (tp *Tarpit) Port() string {
	_, p, _ := net.SplitHostPort(tp.Addr())
	return p
}

// Accepted is how many connections the tarpit accepted so far.
func (tp *Tarpit) Accepted() int { return int(tp.accepted.Load()) }

// Accepts receives a value for each accepted connection (the first 1024
// not yet received), for waiting on a connection without polling.
func (tp *Tarpit) Accepts() <-chan struct{} { return tp.accepts }
