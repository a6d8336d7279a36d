package audit

import (
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
)

// The answers of /v1/info and /v1/log/consistency are parsed without a
// panic, and what parses is what was asked for.
func FuzzParseAnswers(f *testing.F) {
	_, vkey := tlogtest.NoteKey("fuzz", "sig.test/sigchain-log")
	f.Add([]byte(`{"log":{"origin":"sig.test/sigchain-log","key":"`+vkey+`"}}`), uint64(1), uint64(2))
	f.Add([]byte(`{"log":null}`), uint64(0), uint64(0))
	f.Add([]byte(`{"log":{"origin":"other","key":"`+vkey+`"}}`), uint64(0), uint64(0))
	f.Add([]byte(`{"from":1,"to":2,"proof":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}`), uint64(1), uint64(2))
	f.Add([]byte(`{"from":1,"to":3,"proof":[]}`), uint64(1), uint64(2))
	f.Add([]byte(`{"from":1,"to":2,"proof":["AA=="]}`), uint64(1), uint64(2))
	f.Fuzz(func(t *testing.T, body []byte, from, to uint64) {
		if li, err := parseInfo(body); err == nil && li != nil && li.Origin == "" {
			t.Errorf("a log without an origin parsed: %+v", li)
		}
		p, err := parseConsistency(body, from, to)
		if err != nil {
			return
		}
		for _, h := range p {
			if len(h) != 32 {
				t.Errorf("a hash of %d bytes parsed", len(h))
			}
		}
	})
}
