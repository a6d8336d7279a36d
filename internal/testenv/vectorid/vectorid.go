// Package vectorid gives the deterministic test identities the envelope
// and session vectors use (chat/testdata/envelope-vectors.json,
// session/testdata/session-vectors.json): the paper backup of a name is
// the BIP-39 words of SHA-256("kez envelope test identity " + name).
package vectorid

import (
	"crypto/sha256"
	"sync"
	"testing"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/tyler-smith/go-bip39"
)

// Words returns the fixed 24-word paper backup of the test identity name
// (alice, bob, carol, …).
func Words(name string) string {
	e := sha256.Sum256([]byte("kez envelope test identity " + name))
	w, err := bip39.NewMnemonic(e[:])
	if err != nil {
		panic(err) // 32 bytes of entropy always make 24 words
	}
	return w
}

var (
	mu  sync.Mutex
	ids = map[string]*kez.Identity{}
)

// Identity returns the identity of Words(name), derived once per process.
func Identity(tb testing.TB, name string) *kez.Identity {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if id, ok := ids[name]; ok {
		return id
	}
	id, err := kez.FromWords(Words(name))
	if err != nil {
		tb.Fatal(err)
	}
	ids[name] = id
	return id
}
