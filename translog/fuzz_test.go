package translog_test

import (
	"encoding/json"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/translog"
)

// FuzzHeadProofJSON: whatever a chain GET's "log" object holds, decoding
// and verifying it never panics, and only the true proof verifies.
func FuzzHeadProofJSON(f *testing.F) {
	l := tlogtest.New(f, tlogtest.Options{})
	es := chainEntries("alice", 3)
	l.Append(f, es...)
	good, _ := json.Marshal(l.HeadProof(f, 2))
	f.Add(good)
	f.Add([]byte(`{"checkpoint":"","index":0,"proof":[]}`))
	f.Add([]byte(`{"checkpoint":"x\n1\nAAAA\n","index":18446744073709551615,"proof":["AAAA"]}`))
	f.Add([]byte(`{"proof":null}`))
	f.Add([]byte(`null`))
	vkey := l.VKey
	f.Fuzz(func(t *testing.T, b []byte) {
		var p translog.HeadProof
		if json.Unmarshal(b, &p) != nil {
			return
		}
		cp, err := translog.ParseCheckpoint([]byte(p.Checkpoint), vkey)
		if err != nil {
			return
		}
		hs, err := translog.DecodeHashes(p.Proof)
		if err != nil {
			return
		}
		for i, e := range es {
			if translog.VerifyInclusion(e, p.Index, hs, cp) == nil && p.Index != uint64(i) {
				t.Fatalf("entry %d verified at index %d", i, p.Index)
			}
		}
	})
}
