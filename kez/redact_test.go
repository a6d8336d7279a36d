package kez_test

import (
	"strings"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/redacttest"
	"github.com/kez-lat/kez-chat/kez"
)

// An identity and its paper backup never print their secrets: not the
// seed, the private key, an encryption key, nor the words.
func TestSecretsDoNotPrint(t *testing.T) {
	id, m, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	secrets := redacttest.Identity(id)
	words := m.Words()
	for i := 0; i+1 < len(words); i++ {
		secrets = append(secrets, words[i]+" "+words[i+1]) // any two words in order
	}
	// The words as a list; two of them, since one quoted word alone may
	// be a log key ("time" and "level" are BIP-39 words).
	secrets = append(secrets, `"`+words[0]+`","`+words[1]+`"`, `"`+words[0]+`" "`+words[1]+`"`)
	redacttest.Check(t, id, secrets...)
	redacttest.Check(t, m, secrets...)

	// What they do print: the public key, and that words are there.
	if s := id.String(); s != "kez.Identity("+id.PublicKey().String()+")" {
		t.Errorf("Identity.String() = %q", s)
	}
	if s := m.String(); s != "kez.Mnemonic(24 words, redacted)" {
		t.Errorf("Mnemonic.String() = %q", s)
	}
	if s := (kez.Mnemonic{}).String(); s != "kez.Mnemonic(empty)" {
		t.Errorf("the zero Mnemonic's String() = %q", s)
	}
	if p := m.Phrase(); p != strings.Join(words, " ") {
		t.Errorf("Phrase() = %q, want the words", p)
	}
}
