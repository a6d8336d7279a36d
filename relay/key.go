package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrKeyFile reports a key file [LoadKey] will not use.
var ErrKeyFile = errors.New("relay: bad key file")

// LoadKey returns the relay key kept in the file at path, making it
// (a new ed25519 key, mode 0600) if the file does not exist. The file is a
// PEM "PRIVATE KEY" block (PKCS #8), as `openssl genpkey -algorithm
// ed25519` writes one. A file that others may read or write, or that
// holds anything else, is refused with an error wrapping [ErrKeyFile]:
// the key is the relay's identity.
func LoadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return createKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("relay: reading the key: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("relay: reading the key: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %v; only its owner may read it (chmod 600)", ErrKeyFile, path, st.Mode().Perm())
	}
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" || len(bytes.TrimLeft(rest, "\n\r \t")) > 0 {
		return nil, fmt.Errorf("%w: %s is not one PEM PRIVATE KEY block", ErrKeyFile, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrKeyFile, path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s holds a %T, not an ed25519 key", ErrKeyFile, path, k)
	}
	return priv, nil
}

// createKey makes a new key at path, which must not exist.
func createKey(path string) (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("relay: making a key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("relay: encoding the key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("relay: making the key file: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("relay: writing the key file: %w", err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("relay: writing the key file: %w", err)
	}
	return priv, nil
}
