package chat

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Size limits of the envelope format. The NATS stream's maximum message size
// is [MaxEnvelopeSize]; a body at [MaxBodySize] leaves room for the header,
// the signature and a larger post-quantum enc.
const (
	MaxBodySize     = 48 << 10 // bytes of Message.Body
	MaxEnvelopeSize = 64 << 10 // bytes of a sealed envelope
)

// MessageID identifies a message: 16 random bytes chosen by the sender.
// The zero value means "none". Receivers drop a second message with an ID
// they have already accepted from the same sender (Open does not: replay
// protection needs the client's history).
type MessageID [16]byte

// NewMessageID returns a fresh random message ID.
func NewMessageID() MessageID {
	var id MessageID
	rand.Read(id[:]) // never fails, see crypto/rand.Read
	return id
}

// IsZero reports whether id is the zero value.
func (id MessageID) IsZero() bool { return id == MessageID{} }

// String returns the 32-character lower-case hex form.
func (id MessageID) String() string { return hex.EncodeToString(id[:]) }

// MarshalText implements encoding.TextMarshaler with the hex form.
func (id MessageID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *MessageID) UnmarshalText(b []byte) error {
	p, err := ParseMessageID(string(b))
	if err != nil {
		return err
	}
	*id = p
	return nil
}

// ParseMessageID parses the 32-character hex form of a message ID.
func ParseMessageID(s string) (MessageID, error) {
	var id MessageID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("chat: a message ID is %d hex characters, got %d", 2*len(id), len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return MessageID{}, fmt.Errorf("chat: message ID %q is not hex", s)
	}
	return id, nil
}

// Kind says what a message is. Kinds are 1 to 32 bytes of lower-case
// letters, digits, '.', '_' or '-', starting with a letter; a receiver passes
// kinds it does not know to the application rather than failing.
type Kind string

// Kinds defined by KEZ chat v1.
const (
	// KindText is a chat message; its body is UTF-8 text. Ref, if set,
	// names the message it replies to.
	KindText Kind = "text"
	// KindReceipt acknowledges the message named by Ref; its body is
	// empty or a short status such as "read".
	KindReceipt Kind = "receipt"
	// KindSessionReset opens a new session with a peer whose messages
	// could not be decrypted (this client lost its session state); its
	// body is empty. The client sends it and never shows or stores it.
	KindSessionReset Kind = "session-reset"
)

// Message is the signed inner message of an envelope. [Opener.Open]
// returns it only after the signature verified, so every field is what From
// sent.
type Message struct {
	ID     MessageID     // random, chosen by the sender; see [NewMessageID]
	From   kez.PublicKey // the sender's primary key
	To     kez.PublicKey // the recipient's primary key
	SentAt time.Time     // the sender's clock, to the millisecond
	Kind   Kind          // what the body is
	Ref    MessageID     // the message this one refers to; zero if none
	Body   []byte        // at most MaxBodySize bytes
}

// Recipient is whom [Seal] encrypts to: the primary key and the X25519
// encryption key of the given generation, both taken from the recipient's
// verified sigchain.
type Recipient struct {
	Key           kez.PublicKey   // the recipient's primary key
	EncryptionKey *ecdh.PublicKey // their X25519 key of Generation
	Generation    uint32          // the generation the sigchain gives for EncryptionKey
}

// Seal signs m with sender's key and encrypts it to the recipient, returning
// the envelope to publish (at most [MaxEnvelopeSize] bytes).
//
// m.From and m.To may be left zero; they are filled with sender's and the
// recipient's keys, and an error is returned if they name anyone else.
// A zero m.ID gets a random one and a zero m.SentAt the current time; set
// them yourself (see [NewMessageID]) when you need them, for example as the
// JetStream Nats-Msg-Id. Kind is required; a text body must be UTF-8 and a
// receipt must have a Ref. The format is docs/spec/envelope.md.
//
// Seal is safe for concurrent use if sender is.
func Seal(sender kez.Signer, to Recipient, m Message) ([]byte, error) {
	if sender == nil {
		return nil, fmt.Errorf("chat: Seal needs a sender")
	}
	if to.Key.IsZero() {
		return nil, fmt.Errorf("chat: the recipient has no primary key")
	}
	if to.EncryptionKey == nil || to.EncryptionKey.Curve() != ecdh.X25519() {
		return nil, fmt.Errorf("chat: the recipient needs an X25519 encryption key")
	}
	from := sender.PublicKey()
	if !m.From.IsZero() && m.From != from {
		return nil, fmt.Errorf("chat: message From %s is not the sender %s", m.From, from)
	}
	if !m.To.IsZero() && m.To != to.Key {
		return nil, fmt.Errorf("chat: message To %s is not the recipient %s", m.To, to.Key)
	}
	m.From, m.To = from, to.Key
	if m.ID.IsZero() {
		m.ID = NewMessageID()
	}
	if m.SentAt.IsZero() {
		m.SentAt = time.Now()
	}
	m.SentAt = m.SentAt.Truncate(time.Millisecond)
	if err := m.validate(); err != nil {
		return nil, err
	}

	h := &header{suite: suiteX25519, generation: to.Generation, from: from, to: to.Key}
	pk, err := hpke.NewDHKEMPublicKey(to.EncryptionKey)
	if err != nil {
		return nil, fmt.Errorf("chat: recipient encryption key: %w", err)
	}
	enc, s, err := hpke.NewSender(pk, h.suite.kdf, h.suite.aead, h.info())
	if err != nil {
		return nil, fmt.Errorf("chat: sealing to %s: %w", to.Key, err)
	}
	h.enc = enc
	hdr := h.marshal()

	// The signature covers the whole header (enc included) and every inner
	// field, so the signed message cannot be lifted into another envelope.
	signed := make([]byte, 0, len(hdr)+innerLen(&m))
	signed = append(signed, hdr...)
	signed = appendInner(signed, &m)
	sig, err := sender.Sign(kez.ContextMessage, signed)
	if err != nil {
		return nil, fmt.Errorf("chat: signing the message: %w", err)
	}
	inner := append(signed[len(hdr):], sig...)

	out := make([]byte, len(hdr), len(hdr)+len(inner)+tagLen)
	copy(out, hdr)
	out, err = sealAppend(s, out, hdr, inner)
	if err != nil {
		return nil, err
	}
	if len(out) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: the envelope would be %d bytes, at most %d allowed", ErrTooLarge, len(out), MaxEnvelopeSize)
	}
	return out, nil
}

// sealAppend encrypts inner with hdr as associated data and appends the
// ciphertext to out.
func sealAppend(s *hpke.Sender, out, hdr, inner []byte) ([]byte, error) {
	ct, err := s.Seal(hdr, inner)
	if err != nil {
		return nil, fmt.Errorf("chat: encrypting: %w", err)
	}
	return append(out, ct...), nil
}
