package files

import (
	"context"
	"fmt"
	"sync"

	"github.com/kez-lat/kez-chat/files/format"
)

// decryptDepth is how many verified chunks may wait for the decryption,
// which runs on its own goroutine beside the verification.
const decryptDepth = 16

// decrypter turns the verified chunks of an encrypted blob, which arrive
// in order, into the plaintext in the partial file: segment by segment,
// holding only the start of a segment that continues in the next chunk.
// The state file then records the chunks whose every segment is written,
// and a resumed fetch re-verifies the plaintext by encrypting it again.
type decrypter struct {
	fx        *fetcher
	key       format.FileKey
	plainSize int64
	encSize   int64
	op        *format.SegmentOpener

	seg  []byte // the segment being gathered across chunks
	fill int    // bytes of seg gathered
	next int64  // the segment being gathered
	pos  int64  // the offset in the blob of the next byte due

	in   chan decryptItem
	done chan struct{}
	err  error // the first failure, read after done

	mu      sync.Mutex
	written int64 // segments decrypted and written
}

type decryptItem struct {
	idx  int
	buf  []byte
	free chan []byte // where buf goes back
}

func newDecrypter(fx *fetcher, d *decryption) (*decrypter, error) {
	if d.plainSize < 0 || d.plainSize > format.MaxBlobSize {
		return nil, fmt.Errorf("%w: a plaintext of %d bytes", format.ErrDecrypt, d.plainSize)
	}
	enc := format.EncryptedSize(d.plainSize)
	op, err := format.NewSegmentOpener(d.key, enc)
	if err != nil {
		return nil, err
	}
	return &decrypter{fx: fx, key: d.key, plainSize: d.plainSize, encSize: enc, op: op, seg: make([]byte, format.EncSegmentSize)}, nil
}

// resumed sets the decryption up after the first v chunks of the
// ciphertext were re-verified from the plaintext kept: the segments they
// cover whole are written; the start of the next one is encrypted again.
func (d *decrypter) resumed(v int) error {
	vb := min(int64(v)*format.ChunkSize, d.encSize)
	d.next = vb / format.EncSegmentSize
	d.fill = int(vb - d.next*format.EncSegmentSize)
	d.pos = vb
	d.written = d.next
	if d.fill > 0 {
		enc, err := format.NewEncryptReader(d.fx.f, d.plainSize, d.key)
		if err == nil {
			_, err = enc.ReadAt(d.seg[:d.fill], d.next*format.EncSegmentSize)
		}
		if err != nil { // re-verified a moment ago
			return fmt.Errorf("files: reading the partial file: %w", err)
		}
	}
	return nil
}

// start runs the decryption goroutine.
func (d *decrypter) start() error {
	if d.fill > 0 && d.fill == d.op.SegmentLen(d.next) { // the last segment, complete
		if err := d.flush(); err != nil {
			return err
		}
	}
	d.in = make(chan decryptItem, decryptDepth)
	d.done = make(chan struct{})
	go func() {
		defer close(d.done)
		for it := range d.in {
			if d.err == nil {
				if d.err = d.chunk(it.idx, it.buf); d.err != nil {
					d.fx.cancel(d.err)
				}
			}
			it.free <- it.buf[:format.ChunkSize]
		}
	}()
	return nil
}

// stop waits for the decryption of every chunk handed over and returns the
// first failure.
func (d *decrypter) stop() error {
	close(d.in)
	<-d.done
	if d.err != nil {
		return d.err
	}
	if _, _, all := d.fx.sch.status(); all && d.next != d.op.NumSegments() {
		return fmt.Errorf("%w: the blob ends inside segment %d", format.ErrDecrypt, d.next)
	}
	return nil
}

// add hands verified chunk idx over; buf goes back to free once decrypted.
func (d *decrypter) add(idx int, buf []byte, free chan []byte) error {
	select {
	case d.in <- decryptItem{idx: idx, buf: buf, free: free}:
		return nil
	case <-d.fx.ctx.Done():
		free <- buf[:format.ChunkSize]
		return context.Cause(d.fx.ctx)
	}
}

// chunk decrypts what chunk idx completes and writes the plaintext.
func (d *decrypter) chunk(idx int, b []byte) error {
	if off := int64(idx) * format.ChunkSize; off != d.pos {
		return fmt.Errorf("files: decrypting chunk %d out of order", idx) // unreachable: one source, in order
	}
	d.pos += int64(len(b))
	for len(b) > 0 {
		sl := d.op.SegmentLen(d.next)
		if d.fill > 0 || len(b) < sl {
			k := copy(d.seg[d.fill:sl], b)
			d.fill += k
			b = b[k:]
			if d.fill == sl {
				if err := d.flush(); err != nil {
					return err
				}
			}
			continue
		}
		// Whole segments: decrypted in place and packed at the start of b.
		first, out, k := d.next, b[:0], 0
		for d.next < d.op.NumSegments() && len(b)-k >= d.op.SegmentLen(d.next) {
			sl := d.op.SegmentLen(d.next)
			pt, err := d.op.Open(b[k:k+sl], d.next)
			if err != nil {
				return err
			}
			out = append(out, pt...)
			k += sl
			d.next++
		}
		if err := d.write(out, first); err != nil {
			return err
		}
		b = b[k:]
	}
	d.mu.Lock()
	d.written = d.next
	d.mu.Unlock()
	d.fx.maybeCheckpoint(d.keptChunks())
	return nil
}

// flush decrypts and writes the gathered segment.
func (d *decrypter) flush() error {
	pt, err := d.op.Open(d.seg[:d.fill], d.next)
	if err != nil {
		return err
	}
	if err := d.write(pt, d.next); err != nil {
		return err
	}
	d.fill = 0
	d.next++
	d.mu.Lock()
	d.written = d.next
	d.mu.Unlock()
	return nil
}

func (d *decrypter) write(pt []byte, seg int64) error {
	if len(pt) == 0 {
		return nil
	}
	if _, err := d.fx.f.WriteAt(pt, seg*format.SegmentSize); err != nil {
		return fmt.Errorf("files: writing the partial file: %w", err)
	}
	return nil
}

// keptChunks is the number of chunks of the blob whose every segment is
// decrypted and written.
func (d *decrypter) keptChunks() int {
	d.mu.Lock()
	w := d.written
	d.mu.Unlock()
	if w == d.op.NumSegments() {
		return format.NumChunks(d.encSize)
	}
	return int(w * format.EncSegmentSize / format.ChunkSize)
}

// keptBytes is the length of the plaintext written.
func (d *decrypter) keptBytes() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return min(d.written*format.SegmentSize, d.plainSize)
}
