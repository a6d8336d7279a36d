package tlogtest_test

import (
	"context"
	"io"
	"net/http"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
)

// TestLog: entries appended to a real tessera log are provable at its
// published checkpoint, its handler serves checkpoint, tiles and
// consistency proofs, and refuses paths outside the tlog-tiles grammar.
func TestLog(t *testing.T) {
	l := tlogtest.New(t, tlogtest.Options{})
	var key kez.PublicKey
	key[0] = 1
	es := []translog.Entry{{Key: key}, {Key: key}, {Key: key}}
	idx := l.Append(t, es...)
	if idx[0] != 0 || idx[2] != 2 {
		t.Fatalf("indexes %v", idx)
	}
	cp := l.Checkpoint(t)
	if cp.Size != 3 || cp.Origin != tlogtest.DefaultOrigin {
		t.Fatalf("checkpoint %+v", cp)
	}
	hp := l.HeadProof(t, 1)
	cp2, err := translog.ParseCheckpoint([]byte(hp.Checkpoint), l.VKey)
	if err != nil {
		t.Fatal(err)
	}
	hashes := decode(t, hp.Proof)
	if err := translog.VerifyInclusion(es[1], 1, hashes, cp2); err != nil {
		t.Fatal(err)
	}
	url := l.Serve(t)
	for path, want := range map[string]int{
		"/v1/info":                        200,
		"/v1/log/checkpoint":              200,
		"/v1/log/tile/0/000.p/3":          200,
		"/v1/log/tile/entries/000.p/3":    200,
		"/v1/log/consistency?from=1&to=3": 200,
		"/v1/log/consistency?from=0&to=3": 400,
		"/v1/log/consistency?from=2&to=4": 400,
		"/v1/log/tile/0/x000/000.p/3":     400,
		"/v1/log/tile/0/../../etc":        404,
		"/v1/log/tile/entries/000.p/03":   400,
		"/v1/log/tile/64/000":             400,
	} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if _, err := l.Consistency(context.Background(), 1, 3); err != nil {
		t.Fatal(err)
	}
}

func decode(t *testing.T, ss []string) [][]byte {
	t.Helper()
	out, err := translog.DecodeHashes(ss)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
