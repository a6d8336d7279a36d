package kez

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/nats-io/nkeys"
)

func TestDerivationDeterministic(t *testing.T) {
	a := mustIdentity(t, countingWords)
	b := mustIdentity(t, strings.ToUpper(countingWords))
	if a.PublicKey() != b.PublicKey() || !bytes.Equal(a.Seed(), b.Seed()) || !a.Ed25519PrivateKey().Equal(b.Ed25519PrivateKey()) {
		t.Fatal("the same words gave different identities")
	}
	for g := uint32(0); g < 3; g++ {
		if !a.EncryptionKey(g).Equal(b.EncryptionKey(g)) {
			t.Fatalf("generation %d differs", g)
		}
	}
	c, err := FromSeed(a.Seed())
	if err != nil || c.PublicKey() != a.PublicKey() {
		t.Fatalf("FromSeed: %v", err)
	}
	if _, err := FromSeed(make([]byte, 32)); err == nil {
		t.Error("FromSeed accepted 32 bytes")
	}
}

func TestKeysAreDistinct(t *testing.T) {
	id := mustIdentity(t, countingWords)
	seen := map[string]string{string(id.Ed25519PrivateKey().Seed()): "ed25519"}
	for g := uint32(0); g < 16; g++ {
		k := string(id.EncryptionKey(g).Bytes())
		if prev, dup := seen[k]; dup {
			t.Fatalf("x25519 generation %d equals %s", g, prev)
		}
		seen[k] = "x25519"
	}
	other := mustIdentity(t, strings.Repeat("zoo ", 23)+"vote")
	if other.PublicKey() == id.PublicKey() || other.EncryptionKey(0).Equal(id.EncryptionKey(0)) {
		t.Fatal("two backups share a key")
	}
}

func TestNewIdentity(t *testing.T) {
	id, m, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Words()) != MnemonicWords {
		t.Fatalf("%d words", len(m.Words()))
	}
	again, err := FromWords(m.Phrase())
	if err != nil || again.PublicKey() != id.PublicKey() {
		t.Fatalf("recovering from the words: %v", err)
	}
}

func TestEd25519PrivateKeyIsACopy(t *testing.T) {
	id := mustIdentity(t, countingWords)
	k := id.Ed25519PrivateKey()
	for i := range k {
		k[i] = 0
	}
	sig, err := id.Sign(ContextMessage, []byte("x"))
	if err != nil || id.PublicKey().Verify(ContextMessage, []byte("x"), sig) != nil {
		t.Fatal("mutating the returned key changed the identity")
	}
}

func TestNKeyMatchesNkeys(t *testing.T) {
	for _, words := range []string{countingWords, strings.Repeat("zoo ", 23) + "vote"} {
		id := mustIdentity(t, words)
		kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, id.Ed25519PrivateKey().Seed())
		if err != nil {
			t.Fatal(err)
		}
		want, _ := kp.PublicKey()
		if got := id.PublicKey().String(); got != want || id.PublicKey().NKey() != want {
			t.Fatalf("nkey %s, nkeys says %s", got, want)
		}
		// A signature by the nkeys pair verifies with our key and vice versa.
		nonce := []byte("Xk9_2mQ-7rTzYw0")
		nsig, _ := kp.Sign(nonce)
		if !ed25519.Verify(id.PublicKey().Ed25519(), nonce, nsig) {
			t.Fatal("nkeys signature does not verify with the KEZ key")
		}
		ksig, err := id.SignNATSNonce(nonce)
		if err != nil {
			t.Fatal(err)
		}
		if err := kp.Verify(nonce, ksig); err != nil {
			t.Fatalf("nkeys rejects SignNATSNonce: %v", err)
		}
		if !nkeys.IsValidPublicUserKey(want) {
			t.Fatal("not a valid user nkey")
		}
	}
}

func TestPeerIDMatchesLibp2p(t *testing.T) {
	id := mustIdentity(t, countingWords)
	priv, err := crypto.UnmarshalEd25519PrivateKey(id.Ed25519PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	want, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pid := id.PublicKey().PeerID()
	if pid != want {
		t.Fatalf("PeerID %s, libp2p says %s", pid, want)
	}
	back, err := PublicKeyFromPeerID(pid)
	if err != nil || back != id.PublicKey() {
		t.Fatalf("PublicKeyFromPeerID round trip: %v", err)
	}
	decoded, err := peer.Decode(pid.String())
	if err != nil {
		t.Fatal(err)
	}
	if back, err := PublicKeyFromPeerID(decoded); err != nil || back != id.PublicKey() {
		t.Fatalf("round trip through text: %v", err)
	}
}

func TestPublicKeyFromPeerIDRejectsOtherKeys(t *testing.T) {
	// A secp256k1 peer: a valid PeerID, but not a KEZ key.
	priv, _, err := crypto.GenerateSecp256k1Key(nil)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PublicKeyFromPeerID(pid); !errors.Is(err, ErrBadKey) {
		t.Errorf("secp256k1 peer: got %v, want ErrBadKey", err)
	}
	// An RSA-style hashed PeerID does not inline its key.
	hashed, err := peer.Decode("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PublicKeyFromPeerID(hashed); !errors.Is(err, ErrBadKey) {
		t.Errorf("hashed peer: got %v, want ErrBadKey", err)
	}
	if _, err := PublicKeyFromPeerID(""); !errors.Is(err, ErrBadKey) {
		t.Errorf("empty peer: got %v, want ErrBadKey", err)
	}
}

func TestParsePublicKey(t *testing.T) {
	id := mustIdentity(t, countingWords)
	s := id.PublicKey().String()
	if len(s) != 56 || s[0] != 'U' {
		t.Fatalf("nkey form %q", s)
	}
	k, err := ParsePublicKey(s)
	if err != nil || k != id.PublicKey() {
		t.Fatalf("round trip: %v", err)
	}
	seed, _ := nkeys.FromRawSeed(nkeys.PrefixByteUser, id.Ed25519PrivateKey().Seed())
	seedText, _ := seed.Seed()
	acct, _ := nkeys.Encode(nkeys.PrefixByteAccount, k[:])
	for _, bad := range []string{"", "U", s[:55], s + "A", strings.ToLower(s), string(acct), string(seedText), "U" + strings.Repeat("A", 55), s[:10] + "0" + s[11:]} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrBadKey) {
			t.Errorf("ParsePublicKey(%q) = %v, want ErrBadKey", bad, err)
		}
	}
	if _, err := PublicKeyFromEd25519(make([]byte, 31)); !errors.Is(err, ErrBadKey) {
		t.Error("PublicKeyFromEd25519 accepted 31 bytes")
	}
}

func TestPublicKeyJSON(t *testing.T) {
	k := mustIdentity(t, countingWords).PublicKey()
	b, err := json.Marshal(map[string]PublicKey{"key": k})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"key":"`+k.String()+`"}` {
		t.Fatalf("JSON %s", b)
	}
	var back map[string]PublicKey
	if err := json.Unmarshal(b, &back); err != nil || back["key"] != k {
		t.Fatalf("unmarshal: %v", err)
	}
	if err := json.Unmarshal([]byte(`{"key":"Unot-a-key"}`), &back); !errors.Is(err, ErrBadKey) {
		t.Fatalf("bad key in JSON: %v", err)
	}
	if !(PublicKey{}).IsZero() || k.IsZero() {
		t.Error("IsZero")
	}
}

func TestFingerprint(t *testing.T) {
	k := mustIdentity(t, countingWords).PublicKey()
	fp := k.Fingerprint()
	groups := strings.Split(fp, " ")
	if len(groups) != 6 {
		t.Fatalf("fingerprint %q: want 6 groups", fp)
	}
	for _, g := range groups {
		if len(g) != 5 || strings.Trim(g, "0123456789") != "" {
			t.Fatalf("fingerprint %q: group %q is not 5 digits", fp, g)
		}
	}
	other := mustIdentity(t, strings.Repeat("zoo ", 23)+"vote").PublicKey()
	if other.Fingerprint() == fp {
		t.Fatal("two keys share a fingerprint")
	}
	var k2 PublicKey = k
	k2[31] ^= 1
	if k2.Fingerprint() == fp {
		t.Fatal("a one-bit change kept the fingerprint")
	}
}

func TestEncryptionKeyAgreement(t *testing.T) {
	alice := mustIdentity(t, countingWords)
	bob := mustIdentity(t, strings.Repeat("zoo ", 23)+"vote")
	s1, err := alice.EncryptionKey(0).ECDH(bob.EncryptionKey(0).PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	s2, err := bob.EncryptionKey(0).ECDH(alice.EncryptionKey(0).PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s1, s2) {
		t.Fatal("X25519 agreement failed")
	}
	if alice.EncryptionKey(0).Curve() != ecdh.X25519() {
		t.Fatal("not an X25519 key")
	}
}

func TestIdentityConcurrentUse(t *testing.T) {
	id := mustIdentity(t, countingWords)
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sig, err := id.Sign(ContextMessage, []byte("m"))
			if err != nil || id.PublicKey().Verify(ContextMessage, []byte("m"), sig) != nil {
				t.Error("concurrent sign/verify failed")
			}
			_ = id.EncryptionKey(1)
			_ = id.Seed()
			_ = id.PublicKey().PeerID()
		}()
	}
	wg.Wait()
}
