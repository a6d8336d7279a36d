package files

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// changedText is what a fetcher is told about a shared file that changed
// on the owner's disk (ErrChanged).
const changedText = "the file changed on the owner's disk since it was shared; ask the owner to share it again"

// notFoundText is the text of a plain "not found" answer.
const notFoundText = "no such blob"

// serveBufSize is the unit in which a node reads a blob and writes it to a
// stream: four chunks, so that each write is large.
const serveBufSize = 4 * format.ChunkSize

var serveBufs = sync.Pool{New: func() any { b := make([]byte, serveBufSize); return &b }}

// acquire takes a serving slot for p, or reports false if a limit is reached.
func (n *Node) acquire(p peer.ID) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.total >= n.totalMax || n.perPeer[p] >= n.perPeerMax {
		return false
	}
	if n.total == 0 {
		n.idle = make(chan struct{})
		n.busySpells++
	}
	n.total++
	n.perPeer[p]++
	return true
}

// transfersQuiet is how long a node must serve nothing before the
// transfers under way count as done: a fetch asks for a blob in several
// requests, one after another.
const transfersQuiet = 500 * time.Millisecond

// transfersDone returns once no request has been served for
// transfersQuiet, or with ctx's error.
func (n *Node) transfersDone(ctx context.Context) error {
	for {
		n.mu.Lock()
		idle, spell := n.idle, n.busySpells
		n.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
		t := time.NewTimer(transfersQuiet)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		n.mu.Lock()
		quiet := n.busySpells == spell && n.total == 0
		n.mu.Unlock()
		if quiet {
			return nil
		}
	}
}

func (n *Node) release(p peer.ID) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.total--; n.total == 0 {
		close(n.idle)
	}
	if n.perPeer[p]--; n.perPeer[p] == 0 {
		delete(n.perPeer, p)
	}
}

// refuse answers a request with an error status and closes the stream.
func (n *Node) refuse(s network.Stream, status byte, text string) {
	n.stats.refused.Add(1)
	s.SetWriteDeadline(time.Now().Add(n.idleTimeout))
	if _, err := s.Write(appendRespError(nil, status, text)); err != nil {
		s.Reset()
		return
	}
	s.Close()
}

// handleStream serves one request of protocolID.
func (n *Node) handleStream(s network.Stream) {
	remote := s.Conn().RemotePeer()
	if !n.acquire(remote) {
		n.refuse(s, statusBusy, "too many transfers at once")
		return
	}
	defer n.release(remote)

	s.SetReadDeadline(time.Now().Add(n.idleTimeout))
	var buf [maxRequestSize]byte
	if _, err := io.ReadFull(s, buf[:3]); err != nil {
		s.Reset()
		return
	}
	reqLen := 3 + int(buf[2]) + 12
	if reqLen > maxRequestSize {
		n.refuse(s, statusBadRequest, "request too long")
		return
	}
	if _, err := io.ReadFull(s, buf[3:reqLen]); err != nil {
		s.Reset()
		return
	}
	req, err := parseRequest(buf[:reqLen])
	if err != nil {
		n.refuse(s, statusBadRequest, err.Error())
		return
	}
	who, err := kez.PublicKeyFromPeerID(remote)
	if err != nil || !n.policy.Allow(who, req.cid) {
		n.refuse(s, statusForbidden, "not shared with this key")
		return
	}
	if n.source == nil {
		n.refuse(s, statusNotFound, notFoundText)
		return
	}
	blob, err := n.source.OpenBlob(n.ctx, req.cid)
	if errors.Is(err, ErrChanged) {
		n.refuse(s, statusNotFound, changedText)
		return
	}
	if errors.Is(err, ErrNotFound) {
		n.refuse(s, statusNotFound, notFoundText)
		return
	}
	if err != nil {
		n.log.Warn("files: opening a blob to serve", "cid", req.cid, "err", err)
		n.refuse(s, statusInternal, "the blob cannot be read right now")
		return
	}
	defer blob.Close()
	t := blob.Tree()
	if !t.CID().Equals(req.cid) {
		n.log.Error("files: the blob source returned the wrong blob", "want", req.cid, "got", t.CID())
		n.refuse(s, statusInternal, "the blob cannot be read right now")
		return
	}
	nc := t.NumChunks()
	if req.start >= uint64(nc) {
		n.refuse(s, statusBadRequest, fmt.Sprintf("chunk %d is beyond the blob's %d chunks", req.start, nc))
		return
	}
	n.stats.requests.Add(1)
	start := int(req.start)
	end := start + min(int(req.count), nc-start)
	if err := n.serve(s, blob, t, start, end, req.hashesOnly); err != nil {
		n.log.Debug("files: serving a blob", "cid", req.cid, "peer", remote, "err", err)
		s.Reset()
		return
	}
	s.Close()
}

// serve writes the OK response for chunks [start, end) of blob.
func (n *Node) serve(s network.Stream, blob Blob, t *format.Tree, start, end int, hashesOnly bool) error {
	proof, err := t.Proof(start, end)
	if err != nil {
		return err
	}
	hdr := make([]byte, 0, respHeaderLen+(len(proof)+end-start)*format.HashSize)
	hdr = appendRespHeader(hdr, respHeader{size: t.Size(), start: start, count: end - start, nproof: len(proof)})
	for _, h := range proof {
		hdr = append(hdr, h[:]...)
	}
	for _, h := range t.Leaves(start, end) {
		hdr = append(hdr, h[:]...)
	}
	s.SetWriteDeadline(time.Now().Add(n.idleTimeout))
	if _, err := s.Write(hdr); err != nil {
		return err
	}
	if hashesOnly {
		return nil
	}
	bp := serveBufs.Get().(*[]byte)
	defer serveBufs.Put(bp)
	buf := *bp
	off := int64(start) * format.ChunkSize
	stop := min(int64(end)*format.ChunkSize, t.Size())
	for off < stop {
		if err := n.ctx.Err(); err != nil {
			return err
		}
		m := int(min(int64(len(buf)), stop-off))
		if k, err := blob.ReadAt(buf[:m], off); k < m {
			return fmt.Errorf("reading the blob at %d: %w", off, err)
		}
		if err := n.send(s, buf[:m]); err != nil {
			return err
		}
		n.stats.bytes.Add(int64(m))
		n.stats.chunks.Add(int64((m + format.ChunkSize - 1) / format.ChunkSize))
		off += int64(m)
	}
	return nil
}

// send writes chunk bytes to s: at once, or, under an upload limit
// ([NodeConfig.MaxUploadRate]), a chunk at a time, each once the token
// bucket lets it go.
func (n *Node) send(s network.Stream, b []byte) error {
	step := len(b)
	if n.upload != nil {
		step = format.ChunkSize
	}
	for len(b) > 0 {
		k := min(len(b), step)
		if n.upload != nil {
			if err := n.upload.WaitN(n.ctx, k); err != nil {
				return err
			}
		}
		s.SetWriteDeadline(time.Now().Add(n.idleTimeout))
		if _, err := s.Write(b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}
