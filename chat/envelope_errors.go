package chat

import "errors"

// Errors returned by [Seal] and [Opener.Open]. Every error Open returns wraps
// exactly one of these (a bad signature also wraps [kez.ErrBadSignature]), so
// callers branch with errors.Is; the message adds what a person needs to act.
var (
	// ErrMalformed reports bytes that are not a well-formed envelope, or an
	// authenticated inner message that breaks the format's rules.
	ErrMalformed = errors.New("chat: malformed envelope")

	// ErrUnsupportedVersion reports an envelope of a format version this
	// program does not know; a newer client probably sent it.
	ErrUnsupportedVersion = errors.New("chat: unsupported envelope version")

	// ErrUnsupportedSuite reports an envelope sealed with an HPKE suite this
	// program does not accept.
	ErrUnsupportedSuite = errors.New("chat: unsupported envelope cipher suite")

	// ErrUnknownGeneration reports an envelope sealed to an encryption key
	// generation the recipient does not accept (retired, or not yet
	// published).
	ErrUnknownGeneration = errors.New("chat: envelope sealed to an unknown encryption key generation")

	// ErrNotForMe reports an envelope whose header names another recipient.
	ErrNotForMe = errors.New("chat: envelope is addressed to someone else")

	// ErrWrongRecipient reports an envelope that decrypted but whose signed
	// inner message names another recipient: someone re-wrapped a message
	// that was sent to them.
	ErrWrongRecipient = errors.New("chat: signed message inside the envelope is addressed to someone else")

	// ErrDecrypt reports an envelope that does not decrypt: it was tampered
	// with, or sealed to another key.
	ErrDecrypt = errors.New("chat: envelope does not decrypt")

	// ErrBadSignature reports an inner message whose signature does not
	// verify under its sender's key, or does not cover this envelope.
	ErrBadSignature = errors.New("chat: bad message signature")

	// ErrSenderMismatch reports an envelope whose sender is not the one the
	// caller expected (the sender token of the NATS subject), or whose
	// header and signed inner message name different senders.
	ErrSenderMismatch = errors.New("chat: envelope sender does not match")

	// ErrTooLarge reports an envelope or body over [MaxEnvelopeSize] or
	// [MaxBodySize].
	ErrTooLarge = errors.New("chat: envelope too large")

	// ErrExpired reports a message sent longer ago than
	// [OpenOptions.MaxAge] allows.
	ErrExpired = errors.New("chat: message is too old")

	// ErrClockSkew reports a message whose send time lies further in the
	// future than [OpenOptions.MaxSkew] allows.
	ErrClockSkew = errors.New("chat: message send time is in the future")
)

// Errors of format v2 (sessions), besides the ones above, which a v2
// envelope that is malformed, tampered with or misaddressed also wraps
// (together with the error of package session).
var (
	// ErrDowngrade reports a format v1 envelope from a peer with whom a
	// session is established (a message from them was opened under v2):
	// their client sends v2 only, so a v1 envelope is refused.
	ErrDowngrade = errors.New("chat: a format v1 envelope from a peer with an established session")

	// ErrUnknownSession reports a v2 envelope for a session (or a prekey)
	// this client does not have: its state was lost (a wiped state folder,
	// a device restored from the words) or deleted. The client counts
	// these per sender and starts a new session to them (see
	// [SessionReset]).
	ErrUnknownSession = errors.New("chat: no session to decrypt the envelope")

	// ErrReplay reports a v2 envelope whose message key was already used
	// or dropped: a redelivery of a message already stored, or a replay.
	ErrReplay = errors.New("chat: the envelope's message key was already used")
)
