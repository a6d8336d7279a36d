package files

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/files/format"
)

func TestRequestRoundTrip(t *testing.T) {
	c := treeOf(t, []byte("x")).CID()
	for _, r := range []request{
		{cid: c, start: 0, count: 1},
		{cid: c, start: 12345, count: maxChunksPerRequest, hashesOnly: true},
	} {
		b := appendRequest(nil, r)
		if len(b) > maxRequestSize {
			t.Fatalf("request of %d bytes", len(b))
		}
		got, err := parseRequest(b)
		if err != nil || !got.cid.Equals(r.cid) || got.start != r.start || got.count != r.count || got.hashesOnly != r.hashesOnly {
			t.Fatalf("round trip: %+v, %v", got, err)
		}
	}
}

func TestParseRequestRejects(t *testing.T) {
	c := treeOf(t, []byte("x")).CID()
	good := appendRequest(nil, request{cid: c, start: 1, count: 2})
	cl := len(c.Bytes())
	mod := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := map[string][]byte{
		"empty":       nil,
		"version":     mod(func(b []byte) []byte { b[0] = 2; return b }),
		"flags":       mod(func(b []byte) []byte { b[1] = 2; return b }),
		"cid_len_0":   mod(func(b []byte) []byte { b[2] = 0; return b }),
		"cid_len_big": mod(func(b []byte) []byte { b[2] = 65; return b }),
		"short":       good[:len(good)-1],
		"long":        append(append([]byte(nil), good...), 0),
		"bad_cid":     mod(func(b []byte) []byte { b[3+1] ^= 1; return b }),
		"count_0":     mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[3+cl+8:], 0); return b }),
		"count_big":   mod(func(b []byte) []byte { binary.BigEndian.PutUint32(b[3+cl+8:], maxChunksPerRequest+1); return b }),
		"start_big":   mod(func(b []byte) []byte { binary.BigEndian.PutUint64(b[3+cl:], format.MaxChunks); return b }),
	}
	for name, b := range cases {
		if _, err := parseRequest(b); !errors.Is(err, errBadRequest) {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	c := treeOf(f, []byte("x")).CID()
	f.Add(appendRequest(nil, request{cid: c, start: 0, count: 1}))
	f.Add(appendRequest(nil, request{cid: c, start: 1 << 20, count: 4096, hashesOnly: true}))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRequest(b)
		if err != nil {
			return
		}
		if again := appendRequest(nil, r); !bytes.Equal(again, b) {
			t.Fatalf("accepted a non-canonical request:\n in %x\nout %x", b, again)
		}
		if r.count == 0 || r.count > maxChunksPerRequest || format.CheckCID(r.cid) != nil {
			t.Fatalf("accepted %+v", r)
		}
	})
}

func FuzzParseRespHeader(f *testing.F) {
	c := treeOf(f, []byte("x")).CID()
	h := appendRespHeader(nil, respHeader{size: 5 * format.ChunkSize, start: 1, count: 4, nproof: 1})
	f.Add(h[1:], uint64(1), uint32(4))
	f.Add(h[1:], uint64(0), uint32(4096))
	f.Fuzz(func(t *testing.T, b []byte, start uint64, count uint32) {
		req := request{cid: c, start: start, count: count}
		h, err := parseRespHeader(b, req)
		if err != nil {
			return
		}
		n := format.NumChunks(h.size)
		if h.size < 0 || h.size > format.MaxBlobSize || h.start < 0 || h.start >= n || h.count < 0 || h.start+h.count > n ||
			uint64(h.count) > uint64(count) || h.nproof > maxProofHashes {
			t.Fatalf("accepted %+v for %+v", h, req)
		}
	})
}
