package files

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
)

// protocolID is the libp2p protocol of the blob exchange
// (docs/spec/blobs.md, "Exchange protocol").
const protocolID = "/kez/blobs/1.0.0"

// Wire limits of the blob exchange.
const (
	// maxChunksPerRequest bounds the chunks one request may ask for
	// (1 GiB of data, 128 KiB of leaf hashes).
	maxChunksPerRequest = 4096

	// maxRequestSize bounds a request on the wire.
	maxRequestSize = 3 + maxCIDLen + 8 + 4

	requestVersion = 1
	flagHashesOnly = 1 << 0 // answer with leaf hashes and proof, no chunk data
	maxCIDLen      = 64
	maxProofHashes = 128 // a proof of a range in a 2^22-leaf tree has at most 44
	maxErrorText   = 255
	respHeaderLen  = 1 + 8 + 8 + 4 + 1 // status, size, start, count, proof count
)

// Response status codes.
const (
	statusOK         = 0
	statusNotFound   = 1
	statusForbidden  = 2
	statusBadRequest = 3
	statusBusy       = 4
	statusInternal   = 5
)

// request asks for the leaf hashes, proof and (unless hashesOnly) data of
// chunks [start, start+count) of one blob.
type request struct {
	cid        cid.Cid
	start      uint64
	count      uint32
	hashesOnly bool
}

var errBadRequest = errors.New("files: malformed blob request")

// appendRequest appends the wire form of a request:
// version(1) | flags(1) | cid length(1) | cid | start(8) | count(4).
func appendRequest(b []byte, r request) []byte {
	cb := r.cid.Bytes()
	var flags byte
	if r.hashesOnly {
		flags |= flagHashesOnly
	}
	b = append(b, requestVersion, flags, byte(len(cb)))
	b = append(b, cb...)
	b = binary.BigEndian.AppendUint64(b, r.start)
	return binary.BigEndian.AppendUint32(b, r.count)
}

// parseRequest decodes exactly one request from untrusted bytes.
func parseRequest(b []byte) (request, error) {
	var r request
	if len(b) < 3 {
		return r, fmt.Errorf("%w: %d bytes is too short", errBadRequest, len(b))
	}
	if b[0] != requestVersion {
		return r, fmt.Errorf("%w: unknown version %d", errBadRequest, b[0])
	}
	if b[1]&^flagHashesOnly != 0 {
		return r, fmt.Errorf("%w: unknown flags %#02x", errBadRequest, b[1])
	}
	r.hashesOnly = b[1]&flagHashesOnly != 0
	cl := int(b[2])
	if cl == 0 || cl > maxCIDLen {
		return r, fmt.Errorf("%w: CID length %d", errBadRequest, cl)
	}
	if len(b) != 3+cl+12 {
		return r, fmt.Errorf("%w: %d bytes for a %d-byte CID", errBadRequest, len(b), cl)
	}
	b = b[3:]
	c, err := format.CastCID(b[:cl])
	if err != nil {
		return r, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	r.cid = c
	r.start = binary.BigEndian.Uint64(b[cl:])
	r.count = binary.BigEndian.Uint32(b[cl+8:])
	if r.count == 0 || r.count > maxChunksPerRequest {
		return r, fmt.Errorf("%w: chunk count %d is outside 1..%d", errBadRequest, r.count, maxChunksPerRequest)
	}
	if r.start >= format.MaxChunks {
		return r, fmt.Errorf("%w: start chunk %d is beyond any blob", errBadRequest, r.start)
	}
	return r, nil
}

// respHeader is the fixed part of an OK response. It is followed by
// nproof proof hashes, count leaf hashes, then the bytes of the chunks.
type respHeader struct {
	size   int64
	start  int
	count  int
	nproof int
}

func appendRespHeader(b []byte, h respHeader) []byte {
	b = append(b, statusOK)
	b = binary.BigEndian.AppendUint64(b, uint64(h.size))
	b = binary.BigEndian.AppendUint64(b, uint64(h.start))
	b = binary.BigEndian.AppendUint32(b, uint32(h.count))
	return append(b, byte(h.nproof))
}

// appendRespError appends an error response: status | length(1) | text.
func appendRespError(b []byte, status byte, text string) []byte {
	if len(text) > maxErrorText {
		text = text[:maxErrorText]
	}
	b = append(b, status, byte(len(text)))
	return append(b, text...)
}

// parseRespHeader decodes the fixed part of an OK response (b starts after
// the status byte) and checks it against the request it answers.
func parseRespHeader(b []byte, req request) (respHeader, error) {
	var h respHeader
	if len(b) != respHeaderLen-1 {
		return h, fmt.Errorf("files: malformed response header of %d bytes", len(b))
	}
	size := binary.BigEndian.Uint64(b[0:8])
	start := binary.BigEndian.Uint64(b[8:16])
	count := binary.BigEndian.Uint32(b[16:20])
	nproof := int(b[20])
	if size > format.MaxBlobSize {
		return h, fmt.Errorf("files: the owner claims a blob of %d bytes, more than the %d allowed", size, int64(format.MaxBlobSize))
	}
	h = respHeader{size: int64(size), start: int(start), count: int(count), nproof: nproof}
	n := format.NumChunks(h.size)
	if start != req.start || uint64(n) <= start {
		return h, fmt.Errorf("files: the owner answered chunk %d of a %d-chunk blob for a request at chunk %d", start, n, req.start)
	}
	if want := min(uint64(req.count), uint64(n)-start); uint64(count) != want {
		return h, fmt.Errorf("files: the owner sent %d chunks where %d were due", count, want)
	}
	if nproof > maxProofHashes {
		return h, fmt.Errorf("files: the owner sent a proof of %d hashes", nproof)
	}
	return h, nil
}

// errorText sanitises an error text from the remote peer for display.
func errorText(b []byte) string {
	if !utf8.Valid(b) {
		return fmt.Sprintf("%q", b)
	}
	out := make([]rune, 0, len(b))
	for _, r := range string(b) {
		if r < 0x20 || r == 0x7f {
			r = '?'
		}
		out = append(out, r)
	}
	return string(out)
}
