package chat

import (
	"crypto/hpke"
	"fmt"
	"slices"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// OpenOptions are the recipient's settings for opening envelopes. The zero
// value accepts generation 0 only and does no freshness check.
type OpenOptions struct {
	// Generations lists the encryption key generations the recipient
	// accepts: those published in their sigchain and not retired. Empty
	// means generation 0 only.
	Generations []uint32

	// MaxAge, if positive, rejects a message whose SentAt is older than
	// Now() - MaxAge with ErrExpired. Leave it at zero, or set it longer
	// than the stream keeps messages, so an offline recipient still reads
	// what was sent while they were away.
	MaxAge time.Duration
	// MaxSkew, if positive, rejects a message whose SentAt is later than
	// Now() + MaxSkew with ErrClockSkew.
	MaxSkew time.Duration
	// Now is the clock for MaxAge and MaxSkew; nil means time.Now.
	Now func() time.Time
}

// Opener opens envelopes sent to one identity. It derives the recipient's
// HPKE keys once, so it is the form to keep when opening many envelopes.
// It is safe for concurrent use.
type Opener struct {
	me      kez.PublicKey
	keys    map[uint32]hpke.PrivateKey
	maxAge  time.Duration
	maxSkew time.Duration
	now     func() time.Time
}

// NewOpener returns an Opener for recipient with the given options (nil
// means the zero OpenOptions).
func NewOpener(recipient *kez.Identity, opts *OpenOptions) (*Opener, error) {
	if recipient == nil {
		return nil, fmt.Errorf("chat: NewOpener needs a recipient identity")
	}
	if opts == nil {
		opts = &OpenOptions{}
	}
	gens := opts.Generations
	if len(gens) == 0 {
		gens = []uint32{0}
	}
	o := &Opener{
		me:      recipient.PublicKey(),
		keys:    make(map[uint32]hpke.PrivateKey, len(gens)),
		maxAge:  opts.MaxAge,
		maxSkew: opts.MaxSkew,
		now:     opts.Now,
	}
	if o.now == nil {
		o.now = time.Now
	}
	for _, g := range gens {
		if _, ok := o.keys[g]; ok {
			continue
		}
		k, err := hpke.NewDHKEMPrivateKey(recipient.EncryptionKey(g))
		if err != nil {
			return nil, fmt.Errorf("chat: encryption key generation %d: %w", g, err)
		}
		o.keys[g] = k
	}
	return o, nil
}

// OpenEnvelope opens one envelope with a throw-away [Opener]; see
// [Opener.Open]. It derives the recipient's keys on every call; keep an
// Opener to open many.
func OpenEnvelope(recipient *kez.Identity, data []byte, sender kez.PublicKey, opts *OpenOptions) (*Message, error) {
	o, err := NewOpener(recipient, opts)
	if err != nil {
		return nil, err
	}
	return o.Open(data, sender)
}

// Open decrypts and verifies an envelope and returns its inner message.
//
// sender is the sender the caller expects: for a message read from NATS,
// the sender token of its subject, which the broker has already checked
// against the publisher's credentials. A zero sender accepts anyone, and
// the caller must then look at Message.From.
//
// Open checks, in order: the size, the header (magic, version, suite), that
// the header names this recipient and the expected sender, that the key
// generation is accepted, that HPKE opens the ciphertext under the header,
// that the signed inner message names this recipient and the header's
// sender, that the sender's signature covers this very envelope, and the
// freshness limits of the options. Each failure returns an error wrapping
// one of the package's sentinel errors (ErrTooLarge, ErrMalformed, …); no
// failure returns a message.
//
// Open does not detect replays: a client keeps the IDs it has accepted and
// drops a repeated one. The returned Body is a fresh slice the caller owns.
func (o *Opener) Open(data []byte, sender kez.PublicKey) (*Message, error) {
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: %d bytes, at most %d allowed", ErrTooLarge, len(data), MaxEnvelopeSize)
	}
	h, n, err := parseHeader(data)
	if err != nil {
		return nil, err
	}
	if h.to != o.me {
		return nil, fmt.Errorf("%w: it is for %s, not %s", ErrNotForMe, h.to, o.me)
	}
	if !sender.IsZero() && h.from != sender {
		return nil, fmt.Errorf("%w: the envelope says it is from %s, but it came from %s", ErrSenderMismatch, h.from, sender)
	}
	key, ok := o.keys[h.generation]
	if !ok {
		return nil, fmt.Errorf("%w: generation %d (accepted: %v)", ErrUnknownGeneration, h.generation, o.generations())
	}
	ct := data[n:]
	if len(ct) < minInnerLen+tagLen {
		return nil, fmt.Errorf("%w: the ciphertext is truncated (%d bytes)", ErrMalformed, len(ct))
	}
	r, err := hpke.NewRecipient(h.enc, key, h.suite.kdf, h.suite.aead, h.info())
	if err != nil {
		return nil, fmt.Errorf("%w: bad encapsulated key: %w", ErrDecrypt, err)
	}
	hdr := data[:n]
	inner, err := r.Open(hdr, ct)
	if err != nil {
		return nil, fmt.Errorf("%w: it was altered or sealed to another key", ErrDecrypt)
	}
	m, signed, sig, err := parseInner(inner)
	if err != nil {
		return nil, err
	}
	if m.To != o.me {
		return nil, fmt.Errorf("%w: it was sent to %s and re-wrapped", ErrWrongRecipient, m.To)
	}
	if m.From != h.from {
		return nil, fmt.Errorf("%w: the header says %s but the signed message says %s", ErrSenderMismatch, h.from, m.From)
	}
	msg := make([]byte, 0, len(hdr)+len(signed))
	msg = append(append(msg, hdr...), signed...)
	if err := m.From.Verify(kez.ContextMessage, msg, sig); err != nil {
		return nil, fmt.Errorf("%w from %s: %w", ErrBadSignature, m.From, err)
	}
	if o.maxAge > 0 || o.maxSkew > 0 {
		now := o.now()
		if o.maxAge > 0 && m.SentAt.Before(now.Add(-o.maxAge)) {
			return nil, fmt.Errorf("%w: sent at %s, more than %s ago", ErrExpired, m.SentAt.Format(time.RFC3339), o.maxAge)
		}
		if o.maxSkew > 0 && m.SentAt.After(now.Add(o.maxSkew)) {
			return nil, fmt.Errorf("%w: sent at %s, more than %s ahead of this clock", ErrClockSkew, m.SentAt.Format(time.RFC3339), o.maxSkew)
		}
	}
	return m, nil
}

// generations returns the accepted generations, sorted, for messages.
func (o *Opener) generations() []uint32 {
	gs := make([]uint32, 0, len(o.keys))
	for g := range o.keys {
		gs = append(gs, g)
	}
	slices.Sort(gs)
	return gs
}
