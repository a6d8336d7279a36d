package files

import (
	"bytes"
	"testing"

	"github.com/kez-lat/kez-chat/files/format"
)

// Test identities of docs/spec/manifest.md: kez.FromSeed of 64 bytes of
// one value (see docs/spec/identity.md for the derivation).
const (
	seedOwner = 0x01
	seedBob   = 0x02
	seedCarol = 0x03
	seedDave  = 0x04
)

// pattern returns the deterministic test bytes of docs/spec/blobs.md:
// byte i is i mod 251.
func pattern(n int64) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func treeOf(t testing.TB, data []byte) *format.Tree {
	t.Helper()
	tr, err := format.BuildTree(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
