package signal

import (
	"bytes"
	"flag"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
)

var update = flag.Bool("update", false, "rewrite the test vectors under testdata/")

// Test identities of docs/spec/signalling.md §5 (owner, requester, carol,
// mallory): kez.FromSeed of 64 bytes of one value.
const (
	seedOwner = 0x01
	seedBob   = 0x02
	seedCarol = 0x03
	seedDave  = 0x04
	seedRelay = 0x05
)

// testIdentity returns a deterministic identity; i picks which.
func testIdentity(t testing.TB, i byte) *kez.Identity {
	t.Helper()
	id, err := kez.FromSeed(bytes.Repeat([]byte{i}, 64))
	if err != nil {
		t.Fatal(err)
	}
	return id
}
