package format

import (
	"bytes"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
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
