package relay_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kez-lat/kez-chat/relay"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// The key file is made with mode 0600 on first use and read back the
// same; the relay's peer id is the key's.
func TestLoadKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relay.key")
	k1, err := relay.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the key file: %v, mode %v", err, st.Mode().Perm())
	}
	k2, err := relay.LoadKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("the key read back: %v", err)
	}
	r, _ := startRelay(t, relay.Config{Key: k1})
	pub, _ := crypto.UnmarshalEd25519PublicKey(k1.Public().(ed25519.PublicKey))
	if id, _ := peer.IDFromPublicKey(pub); r.ID() != id {
		t.Fatalf("the relay's peer id %s is not its key's %s", r.ID(), id)
	}
}

// Key files that are not the relay's own are refused.
func TestLoadKeyRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	if _, err := relay.LoadKey(good); err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	goodPEM, _ := os.ReadFile(good)
	blk, _ := pem.Decode(goodPEM)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecdsaDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	for name, tc := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"readable by others": {goodPEM, 0o644},
		"writable by group":  {goodPEM, 0o620},
		"empty":              {nil, 0o600},
		"not PEM":            {[]byte("hello"), 0o600},
		"another PEM type":   {pemOf("EC PRIVATE KEY", blk.Bytes), 0o600},
		"two blocks":         {append(append([]byte{}, goodPEM...), goodPEM...), 0o600},
		"bad DER":            {pemOf("PRIVATE KEY", []byte{1, 2, 3}), 0o600},
		"not ed25519":        {pemOf("PRIVATE KEY", ecdsaDER), 0o600},
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, tc.data, tc.mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, tc.mode)
		if _, err := relay.LoadKey(path); !errors.Is(err, relay.ErrKeyFile) {
			t.Errorf("%s: %v, want ErrKeyFile", name, err)
		}
	}
	// A folder where the file should be: an error, nothing made.
	if _, err := relay.LoadKey(dir); err == nil {
		t.Errorf("a folder: %v", err)
	}
	// A key in a file openssl made has the same form.
	_, priv, _ := ed25519.GenerateKey(nil)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	path := filepath.Join(dir, "openssl.key")
	os.WriteFile(path, pemOf("PRIVATE KEY", der), 0o600)
	if k, err := relay.LoadKey(path); err != nil || !k.Equal(priv) {
		t.Errorf("a PKCS #8 ed25519 key: %v", err)
	}
}
