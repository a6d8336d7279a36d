package callout

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/nacl/box"
)

// The per-login key work that does not depend on the login is done once
// per service instead of once per request: nkeys derives the ed25519 key
// from the seed on every Sign and PublicKey call (two derivations per
// encoded JWT, two JWTs per login), and an xkey Open or Seal computes the
// curve25519 shared key with the server anew each time, although the
// server's xkey lives as long as the server process.

// signingKey is an nkeys.KeyPair whose ed25519 key pair is derived from
// the seed once. It signs what the wrapped pair would sign, byte for byte
// (ed25519 is deterministic).
type signingKey struct {
	nkeys.KeyPair
	pub  string
	priv ed25519.PrivateKey
}

func newSigningKey(kp nkeys.KeyPair) (*signingKey, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	if prefix == nkeys.PrefixByteCurve || len(raw) != ed25519.SeedSize {
		return nil, errors.New("callout: the key is not an ed25519 signing key")
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, err
	}
	return &signingKey{KeyPair: kp, pub: pub, priv: ed25519.NewKeyFromSeed(raw)}, nil
}

// PublicKey returns the cached public key.
func (k *signingKey) PublicKey() (string, error) { return k.pub, nil }

// Sign signs input with the cached private key.
func (k *signingKey) Sign(input []byte) ([]byte, error) { return ed25519.Sign(k.priv, input), nil }

// Verify checks sig over input with the cached public key.
func (k *signingKey) Verify(input, sig []byte) error {
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(k.priv.Public().(ed25519.PublicKey), input, sig) {
		return nkeys.ErrInvalidSignature
	}
	return nil
}

// maxSharedKeys bounds the cache of shared keys: one per nats-server
// process (a server makes its xkey when it starts). Past it the cache is
// emptied, so a flood of made-up keys costs memory only up to the bound.
const maxSharedKeys = 256

// xkeyBox opens and seals callout messages in the nkeys xkey format
// (nkeys.XKeyVersionV1, a 24-byte nonce, then a NaCl box), keeping the
// shared key with each server's xkey.
type xkeyBox struct {
	seed [32]byte // the service's curve private key

	mu     sync.Mutex
	shared map[string]*[32]byte // by the server's curve key ("X…")
}

func newXKeyBox(kp nkeys.KeyPair) (*xkeyBox, error) {
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	prefix, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, err
	}
	if prefix != nkeys.PrefixByteCurve || len(raw) != 32 {
		return nil, errors.New("callout: the xkey is not a curve key")
	}
	b := &xkeyBox{shared: map[string]*[32]byte{}}
	copy(b.seed[:], raw)
	return b, nil
}

// sharedKey returns the box shared key with the server's curve key peer.
func (b *xkeyBox) sharedKey(peer string) (*[32]byte, error) {
	b.mu.Lock()
	k := b.shared[peer]
	b.mu.Unlock()
	if k != nil {
		return k, nil
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteCurve, []byte(peer))
	if err != nil || len(raw) != 32 {
		return nil, nkeys.ErrInvalidCurveKey
	}
	var pub [32]byte
	copy(pub[:], raw)
	k = new([32]byte)
	box.Precompute(k, &pub, &b.seed)
	b.mu.Lock()
	if len(b.shared) >= maxSharedKeys {
		clear(b.shared)
	}
	b.shared[peer] = k
	b.mu.Unlock()
	return k, nil
}

const xkeyHeaderLen = len(nkeys.XKeyVersionV1) + 24

// Open opens a message the server with curve key sender sealed to the
// service, as nkeys.KeyPair.Open does.
func (b *xkeyBox) Open(input []byte, sender string) ([]byte, error) {
	if len(input) <= xkeyHeaderLen {
		return nil, nkeys.ErrInvalidEncrypted
	}
	if !bytes.HasPrefix(input, []byte(nkeys.XKeyVersionV1)) {
		return nil, nkeys.ErrInvalidEncVersion
	}
	k, err := b.sharedKey(sender)
	if err != nil {
		return nil, nkeys.ErrInvalidSender
	}
	var nonce [24]byte
	copy(nonce[:], input[len(nkeys.XKeyVersionV1):xkeyHeaderLen])
	out, ok := box.OpenAfterPrecomputation(nil, input[xkeyHeaderLen:], &nonce, k)
	if !ok {
		return nil, nkeys.ErrCouldNotDecrypt
	}
	return out, nil
}

// Seal seals input to the server with curve key recipient, as
// nkeys.KeyPair.Seal does.
func (b *xkeyBox) Seal(input []byte, recipient string) ([]byte, error) {
	k, err := b.sharedKey(recipient)
	if err != nil {
		return nil, nkeys.ErrInvalidRecipient
	}
	var nonce [24]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, fmt.Errorf("callout: a nonce: %w", err)
	}
	out := make([]byte, xkeyHeaderLen, xkeyHeaderLen+len(input)+box.Overhead)
	copy(out, nkeys.XKeyVersionV1)
	copy(out[len(nkeys.XKeyVersionV1):], nonce[:])
	return box.SealAfterPrecomputation(out, input, &nonce, k), nil
}
