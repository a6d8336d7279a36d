package logserver

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/sumdb/note"
)

// ErrBadKey reports a log key file that does not hold a note key pair, or
// one whose name is not the origin asked for.
var ErrBadKey = errors.New("logserver: bad log key")

// keySigner is a note signer that knows its verifier key text.
type keySigner struct {
	note.Signer
	vkey string
}

// VerifierKey returns the verifier key text of the signer.
func (k keySigner) VerifierKey() string { return k.vkey }

// verifierKeyer is what [Open] asks of a [Config].Signer without a
// [Config].VerifierKey: a signer made by [LoadOrCreateKey].
type verifierKeyer interface{ VerifierKey() string }

// LoadOrCreateKey reads the log's note key pair from the file at path, or
// makes one named origin (an Ed25519 note key, golang.org/x/mod/sumdb/note)
// and writes it there, mode 0600. The file holds two lines: the private
// key text ("PRIVATE+KEY+origin+…") and the verifier key text
// ("origin+hash+base64key"). An existing key must be named origin, unless
// origin is "" (then any name). The signer it returns also gives its
// verifier key text to [Open].
func LoadOrCreateKey(path, origin string) (note.Signer, note.Verifier, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return parseKeyFile(b, origin)
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("reading the log key: %w", err)
	}
	if origin == "" {
		return nil, nil, fmt.Errorf("%w: a new key needs an origin", ErrBadKey)
	}
	skey, vkey, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: origin %q: %w", ErrBadKey, origin, err)
	}
	data := []byte(skey + "\n" + vkey + "\n")
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, nil, fmt.Errorf("making the log key's folder: %w", err)
		}
	}
	if err := writeNew(path, data); err != nil {
		if errors.Is(err, os.ErrExist) { // another process made it first
			return LoadOrCreateKey(path, origin)
		}
		return nil, nil, fmt.Errorf("writing the log key: %w", err)
	}
	return parseKeyFile(data, origin)
}

// parseKeyFile reads a key file's two lines and checks that they are one
// key pair named origin (any name if origin is "").
func parseKeyFile(b []byte, origin string) (note.Signer, note.Verifier, error) {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) != 2 {
		return nil, nil, fmt.Errorf("%w: want two lines, the private and the verifier key", ErrBadKey)
	}
	s, err := note.NewSigner(string(lines[0]))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	v, err := note.NewVerifier(string(lines[1]))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if err := checkPair(s, v); err != nil {
		return nil, nil, err
	}
	if origin != "" && s.Name() != origin {
		return nil, nil, fmt.Errorf("%w: the key is named %q, not %q", ErrBadKey, s.Name(), origin)
	}
	return keySigner{Signer: s, vkey: string(lines[1])}, v, nil
}

// checkPair reports whether v verifies what s signs.
func checkPair(s note.Signer, v note.Verifier) error {
	msg, err := note.Sign(&note.Note{Text: "kez log key check\n"}, s)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		return fmt.Errorf("%w: the verifier key is not the signer's: %w", ErrBadKey, err)
	}
	return nil
}

// writeNew writes data to a new file at path, mode 0600, through a
// temporary file linked into place, so a crash never leaves half a key
// and of two writers one wins (the other gets os.ErrExist).
func writeNew(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".log-key-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}
