package kez

import (
	"crypto/ed25519"
	"errors"
	"fmt"
)

// Signature contexts used across KEZ. Every signature covers exactly one of
// them, so a signature made for one purpose never verifies for another.
// Packages may define their own; each must be unique and start with "kez/".
const (
	ContextSigchainLink = "kez/v1 sigchain link"
	ContextHandleClaim  = "kez/v1 handle claim"
	ContextMessage      = "kez/v1 message"
	ContextPeerAddrs    = "kez/v1 p2p addresses"
	// ContextDeviceLinkRequest signs a sigchain device link request: a new
	// device key asks to be added to a person's chain
	// (docs/spec/sigchain.md, "Devices").
	ContextDeviceLinkRequest = "kez/v1 device link request"
	// ContextGroupLink signs a link of a group's membership chain
	// (docs/spec/group.md §2).
	ContextGroupLink = "kez/v1 group link"
	// ContextClaim signs an identity claim's statement: the chain's key
	// says it is an identity on another service (docs/spec/claims.md).
	ContextClaim = "kez/v1 identity claim"
	// ContextTicket signs a file ticket: an owner says where and until
	// when their file may be fetched (docs/spec/ticket.md).
	ContextTicket = "kez/v1 file ticket"
)

// signPrefix starts every signed message. Its NUL bytes mean a signed KEZ
// statement can never equal a NATS nonce (base64 text) or a libp2p
// handshake payload, both of which the same key also signs.
const signPrefix = "KEZ\x00sig\x00v1\x00"

// MaxContextLen bounds a signature context.
const MaxContextLen = 255

// ErrBadSignature reports a signature that does not verify.
var ErrBadSignature = errors.New("kez: bad signature")

// Signer signs messages under a context with a primary key. It is small on
// purpose, so that a hardware key can implement it.
type Signer interface {
	// PublicKey returns the key that verifies the signatures.
	PublicKey() PublicKey
	// Sign signs msg under context (see [SignedMessage]).
	Sign(context string, msg []byte) ([]byte, error)
}

var _ Signer = (*Identity)(nil)

// SignedMessage returns the exact bytes an ed25519 signature covers for a
// context and message: "KEZ\0sig\0v1\0" || len(context) as one byte ||
// context || msg.
func SignedMessage(context string, msg []byte) ([]byte, error) {
	if err := checkContext(context); err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(signPrefix)+1+len(context)+len(msg))
	out = append(out, signPrefix...)
	out = append(out, byte(len(context)))
	out = append(out, context...)
	return append(out, msg...), nil
}

func checkContext(c string) error {
	if c == "" || len(c) > MaxContextLen {
		return fmt.Errorf("kez: a signature context must be 1 to %d bytes, got %d", MaxContextLen, len(c))
	}
	for i := 0; i < len(c); i++ {
		if c[i] < 0x20 || c[i] > 0x7e {
			return fmt.Errorf("kez: a signature context must be printable ASCII")
		}
	}
	return nil
}

// Sign signs msg under context with the primary key.
func (id *Identity) Sign(context string, msg []byte) ([]byte, error) {
	m, err := SignedMessage(context, msg)
	if err != nil {
		return nil, err
	}
	return ed25519.Sign(id.priv, m), nil
}

// Verify checks sig over msg under context. It returns nil or an error
// wrapping [ErrBadSignature].
func (k PublicKey) Verify(context string, msg, sig []byte) error {
	m, err := SignedMessage(context, msg)
	if err != nil {
		return err
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(k[:], m, sig) {
		return fmt.Errorf("%w (%s)", ErrBadSignature, context)
	}
	return nil
}

// maxNonce bounds what SignNATSNonce accepts; nats-server nonces are 11
// characters.
const maxNonce = 64

// SignNATSNonce signs a NATS connection nonce, which the broker's auth
// callout verifies as a plain ed25519 signature. It refuses anything that
// does not look like a nonce (printable base64 text of at most 64 bytes),
// so a hostile server cannot use it to obtain a signature over a KEZ
// statement.
func (id *Identity) SignNATSNonce(nonce []byte) ([]byte, error) {
	if len(nonce) == 0 || len(nonce) > maxNonce {
		return nil, fmt.Errorf("kez: refusing to sign a NATS nonce of %d bytes", len(nonce))
	}
	for _, c := range nonce {
		ok := c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '+' || c == '/' || c == '='
		if !ok {
			return nil, fmt.Errorf("kez: refusing to sign a NATS nonce that is not base64 text")
		}
	}
	return ed25519.Sign(id.priv, nonce), nil
}
