package chat

import (
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// Format version 2: a message sealed in a session (package session,
// docs/spec/session.md). The session's envelope authenticates both keys
// and its header; its plaintext is the inner message v2 below
// (docs/spec/chat.md §7): the inner message of version 1 without the two
// keys, which the envelope carries, and without the signature, which the
// session replaces.

// envelopeV2 is the version byte of a session envelope.
const envelopeV2 = 2

// envelopeVersionOf returns an envelope's version byte (the one after the
// magic), or 0 when data is too short or not an envelope.
func envelopeVersionOf(data []byte) byte {
	if len(data) < 5 || string(data[:4]) != envelopeMagic {
		return 0
	}
	return data[4]
}

// marshalInnerV2 returns the plaintext of m in a session envelope: id,
// then the v1 inner fields from sent_at on. m must have passed validate.
func marshalInnerV2(m *Message) []byte {
	b := make([]byte, 0, innerLen(m)-2*keyLen-sigLen)
	b = append(b, m.ID[:]...)
	return appendInnerTail(b, m)
}

// parseInnerV2 parses the plaintext of a session envelope from `from` to
// `to` (the envelope's authenticated keys). It accepts only the exact
// layout and the rules of validate; errors wrap ErrMalformed or
// ErrTooLarge. Body aliases b.
func parseInnerV2(b []byte, from, to kez.PublicKey) (*Message, error) {
	if len(b) < idLen {
		return nil, fmt.Errorf("%w: the inner message is truncated (%d bytes)", ErrMalformed, len(b))
	}
	m := &Message{From: from, To: to}
	copy(m.ID[:], b[:idLen])
	if err := parseInnerTail(b[idLen:], m); err != nil {
		return nil, err
	}
	return m, nil
}

// sessionSentinels maps the errors of package session to the matching
// sentinels of this package, first match wins.
var sessionSentinels = []struct{ session, chat error }{
	{session.ErrTooLarge, ErrTooLarge},
	{session.ErrUnsupportedVersion, ErrUnsupportedVersion},
	{session.ErrWrongRecipient, ErrNotForMe},
	{session.ErrWrongSender, ErrSenderMismatch},
	{session.ErrBadSignature, ErrBadSignature},
	{session.ErrReplay, ErrReplay},
	{session.ErrUnknownPrekey, ErrUnknownSession},
	{session.ErrDecrypt, ErrDecrypt},
	{session.ErrTooFarAhead, ErrDecrypt},
	{session.ErrWrongSession, ErrDecrypt},
	{session.ErrMalformed, ErrMalformed},
}

// sessionError wraps an error of package session with the matching
// sentinel of this package, so that errors.Is works with either: a
// tampered v2 envelope is chat.ErrDecrypt as a tampered v1 one is.
func sessionError(err error) error {
	for _, s := range sessionSentinels {
		if errors.Is(err, s.session) {
			return fmt.Errorf("%w: %w", s.chat, err)
		}
	}
	return err
}
