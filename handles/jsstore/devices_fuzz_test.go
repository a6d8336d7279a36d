package jsstore

import (
	"testing"

	"github.com/kez-lat/kez-chat/handles/storetest"
)

// FuzzDecodeDevices feeds arbitrary bytes to the device value decoders
// (the bucket is the operator's): they return an error or a value that
// encodes back to one they accept.
func FuzzDecodeDevices(f *testing.F) {
	k := storetest.Key(1).String()
	for _, s := range []string{
		`{"v":1,"person":"` + k + `","name":"laptop","added":1800000000000}`,
		`{"v":1,"person":"` + k + `","name":"","added":1,"revoked_at":2}`,
		`{"v":1,"current":["` + k + `"],"revoked":["` + k + `"],"primary_revoked":true}`,
		`{"v":2,"person":"` + k + `"}`, `{"v":1,"person":"Uxyz"}`, `{"v":1,"current":["nope"]}`, `[]`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if d, err := decodeDevice(b); err == nil {
			d2, err := decodeDevice(d.encode())
			if err != nil || d2.person != d.person || d2.Name != d.Name || d2.RevokedAt != d.RevokedAt {
				t.Fatalf("re-encoding %q: %v", b, err)
			}
		}
		if p, err := decodePersonDevices(b); err == nil {
			p2, err := decodePersonDevices(p.encode())
			if err != nil || p2.count() != p.count() || len(p2.Revoked) != len(p.Revoked) {
				t.Fatalf("re-encoding %q: %v", b, err)
			}
		}
	})
}
