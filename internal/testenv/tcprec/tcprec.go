// Package tcprec is a recording TCP proxy for tests: it listens on a
// loopback port, forwards each connection to a target address and keeps
// every byte it forwards, each way, in the order it was read. Pointing a
// client at the proxy instead of its server puts a wiretap on the real
// connection, with nothing mocked:
//
//	rec := tcprec.Start(t, "127.0.0.1:4222") // stopped in t.Cleanup
//	cfg.NATSURL = "nats://" + rec.Addr()
//	… // the client talks to the server through rec
//	msgs, err := rec.NATSMessages() // every PUB/HPUB/MSG/HMSG that crossed
//
// A byte is recorded before it is passed on, so whatever the server (or
// the client) has received is in the recording. [Proxy.Mark] names a point
// of the recording, to tell what crossed before it from what crossed
// after. [ParseNATS] reads the NATS client protocol out of one direction
// of one connection.
//
// The package is for tests only.
package tcprec

import (
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
)

// Dir is the direction a chunk of bytes travelled.
type Dir uint8

const (
	// Up is from the client (who dialled the proxy) to the server.
	Up Dir = iota
	// Down is from the server to the client.
	Down
)

// String is "up" or "down".
func (d Dir) String() string {
	if d == Up {
		return "up"
	}
	return "down"
}

// Chunk is one read the proxy forwarded.
type Chunk struct {
	// Seq is the chunk's place in the whole recording, from 0, across
	// connections and directions.
	Seq int
	// Conn numbers the connection, from 0 in the order they were accepted.
	Conn int
	Dir  Dir
	Data []byte
}

// Mark is a point in a recording: the number of chunks recorded before it.
type Mark int

// Proxy is a running recording proxy. Its methods are safe for concurrent
// use.
type Proxy struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	chunks []Chunk
	conns  []net.Conn // both ends of every connection, closed in Cleanup
	nconn  int
	closed bool
}

// Start starts a proxy on 127.0.0.1 that forwards every connection it
// accepts to target (host:port). It, and every connection through it, is
// closed in t.Cleanup. A connection that cannot reach target is closed.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("tcprec: %v", err)
	}
	p := &Proxy{ln: ln, target: target}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's "127.0.0.1:PORT", to dial instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			up.Close()
			return
		}
		n := p.nconn
		p.nconn++
		p.conns = append(p.conns, c, up)
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(up, c, n, Up)
		go p.pipe(c, up, n, Down)
	}
}

// pipe copies src to dst, recording each read, and closes dst when src
// ends (which ends the other direction's pipe too).
func (p *Proxy) pipe(dst, src net.Conn, conn int, d Dir) {
	defer p.wg.Done()
	defer dst.Close()
	io.Copy(dst, io.TeeReader(src, &tap{p: p, conn: conn, dir: d}))
}

// tap records what one direction of one connection read.
type tap struct {
	p    *Proxy
	conn int
	dir  Dir
}

func (w *tap) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	w.p.chunks = append(w.p.chunks, Chunk{Seq: len(w.p.chunks), Conn: w.conn, Dir: w.dir, Data: bytes.Clone(b)})
	return len(b), nil
}

func (p *Proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// Mark returns the current end of the recording: everything recorded so
// far is before it.
func (p *Proxy) Mark() Mark {
	p.mu.Lock()
	defer p.mu.Unlock()
	return Mark(len(p.chunks))
}

// Chunks returns what was recorded so far, in order.
func (p *Proxy) Chunks() []Chunk {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.chunks)
}

// Bytes returns every byte recorded so far, both directions of every
// connection, in the order read (for a search over the whole wire).
func (p *Proxy) Bytes() []byte {
	var b []byte
	for _, c := range p.Chunks() {
		b = append(b, c.Data...)
	}
	return b
}

// NATSMessages parses the NATS client protocol out of every direction of
// every connection recorded so far and returns the message frames (PUB,
// HPUB, MSG, HMSG), ordered by the chunk that completed each. A frame cut
// off at the end of the recording is left out; bytes that are not the NATS
// protocol are an error (ErrNotNATS).
func (p *Proxy) NATSMessages() ([]NATSMsg, error) {
	type stream struct {
		data []byte
		ends []int // the end offset of each chunk in data
		seqs []int // the Seq of each chunk
	}
	streams := map[[2]int]*stream{}
	var keys [][2]int
	for _, c := range p.Chunks() {
		k := [2]int{c.Conn, int(c.Dir)}
		s := streams[k]
		if s == nil {
			s = &stream{}
			streams[k] = s
			keys = append(keys, k)
		}
		s.data = append(s.data, c.Data...)
		s.ends = append(s.ends, len(s.data))
		s.seqs = append(s.seqs, c.Seq)
	}
	var out []NATSMsg
	for _, k := range keys {
		s := streams[k]
		msgs, _, err := ParseNATS(s.data)
		if err != nil {
			return nil, err
		}
		for _, m := range msgs {
			m.Conn, m.Dir = k[0], Dir(k[1])
			// The chunk holding the frame's last byte.
			i, _ := slices.BinarySearch(s.ends, m.End)
			m.Seq = s.seqs[i]
			out = append(out, m)
		}
	}
	slices.SortStableFunc(out, func(a, b NATSMsg) int { return a.Seq - b.Seq })
	return out, nil
}

// ErrNotNATS reports bytes that are not the NATS client protocol.
var ErrNotNATS = errors.New("tcprec: not the NATS protocol")
