package kez

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
)

// The types that hold secrets print without them, whatever the verb
// (fmt), the handler (log/slog) or the encoder (encoding/json, which sees
// no exported field in them): an [Identity] prints its public key, a
// [Mnemonic] how many words it holds. Read the secrets with the methods
// that name them (Seed, Ed25519PrivateKey, EncryptionKey, Words, Phrase).
// A value kept in an unexported field of a struct of the caller's is
// printed by fmt without these methods: keep a pointer there instead.

// String returns "kez.Identity(<public key>)": never the private key or
// the seed.
func (id Identity) String() string { return "kez.Identity(" + id.pub.String() + ")" }

// GoString is String, for %#v.
func (id Identity) GoString() string { return id.String() }

// Format prints String for every verb, so that no verb (%x, %v on the
// struct) shows the key material.
func (id Identity) Format(f fmt.State, _ rune) { io.WriteString(f, id.String()) }

// LogValue logs the public key only.
func (id Identity) LogValue() slog.Value { return slog.StringValue(id.String()) }

// String returns "kez.Mnemonic(24 words, redacted)" (or
// "kez.Mnemonic(empty)"): never the words. [Mnemonic.Phrase] returns them.
func (m Mnemonic) String() string {
	if m.IsZero() {
		return "kez.Mnemonic(empty)"
	}
	return "kez.Mnemonic(" + strconv.Itoa(len(m.words)) + " words, redacted)"
}

// GoString is String, for %#v.
func (m Mnemonic) GoString() string { return m.String() }

// Format prints String for every verb.
func (m Mnemonic) Format(f fmt.State, _ rune) { io.WriteString(f, m.String()) }

// LogValue logs String, never the words.
func (m Mnemonic) LogValue() slog.Value { return slog.StringValue(m.String()) }

// Phrase returns the words separated by single spaces, in order: the
// paper backup itself, to show the user once (or to write where they
// asked). It is the one method that spells the secret out.
func (m Mnemonic) Phrase() string { return strings.Join(m.words, " ") }
