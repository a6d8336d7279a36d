package session

import "errors"

// Errors returned by [Accept], [Session.Open], [ParseHeader] and
// [ParseSession], and by the group functions ([ReceiverKey.Open],
// [ParseGroupHeader], [ParseSenderKeyDistribution], [ParseSenderKey],
// [ParseReceiverKey]). Every error they return wraps exactly one of these
// (a bad signature also wraps [kez.ErrBadSignature]), so callers branch
// with errors.Is; the message adds what was wrong. docs/spec/session.md §8
// and docs/spec/senderkeys.md §7 give the order in which they are checked.
var (
	// ErrMalformed reports bytes that are not a well-formed version-2 or
	// version-3 envelope (or stored session state, sender key
	// distribution or stored sender or receiver key), or a handshake given
	// to Accept that is not one.
	ErrMalformed = errors.New("session: malformed envelope")

	// ErrUnsupportedVersion reports an envelope of another format version
	// (version 1 is package chat's), an unknown envelope type, or a
	// handshake to a KEM this version does not know.
	ErrUnsupportedVersion = errors.New("session: unsupported envelope version")

	// ErrWrongRecipient reports an envelope whose header names another
	// recipient than the reader.
	ErrWrongRecipient = errors.New("session: envelope is addressed to someone else")

	// ErrWrongSender reports an envelope whose sender is not the session's
	// peer, or a group envelope from another device than its receiver
	// key's.
	ErrWrongSender = errors.New("session: envelope is from someone other than the session's peer")

	// ErrWrongSession reports an envelope of another session than the one
	// asked to open it: its session ID (or, for a handshake, its prefix)
	// differs.
	ErrWrongSession = errors.New("session: envelope belongs to another session")

	// ErrUnknownPrekey reports a handshake to a prekey the recipient does
	// not keep (never made, or rotated and deleted).
	ErrUnknownPrekey = errors.New("session: handshake to an unknown prekey")

	// ErrBadSignature reports a handshake whose signature does not verify
	// under its sender's key, or a group envelope whose signature does not
	// verify under its sender key's signing key.
	ErrBadSignature = errors.New("session: bad signature")

	// ErrDecrypt reports an envelope that does not decrypt: tampered with,
	// forged, or sealed under keys this session does not have.
	ErrDecrypt = errors.New("session: envelope does not decrypt")

	// ErrReplay reports a message whose key was already used or dropped: a
	// duplicate, a replay, or a message older than the skipped-key bounds.
	ErrReplay = errors.New("session: message already received (replay or duplicate)")

	// ErrTooFarAhead reports a message more than [MaxSkip] messages ahead
	// of the last one received in its chain, or a group message more than
	// [MaxSenderKeySkip] ahead of the next its receiver key expects.
	ErrTooFarAhead = errors.New("session: message too far ahead of its chain")

	// ErrWrongGroup reports a group envelope of another group or epoch
	// than the receiver key asked to open it.
	ErrWrongGroup = errors.New("session: group envelope of another group or epoch")

	// ErrOlderThanKey reports a group message sealed before the iteration
	// of the distribution its reader was given: sender keys give a new
	// reader no earlier message.
	ErrOlderThanKey = errors.New("session: group message older than the reader's sender key")

	// ErrTooLarge reports an envelope over [MaxEnvelopeSize] bytes, or a
	// plaintext that would make one.
	ErrTooLarge = errors.New("session: envelope too large")
)
