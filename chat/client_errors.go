package chat

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go/jetstream"
)

// Errors of the [Client]. Callers branch with errors.Is; the messages say
// what to do.
var (
	// ErrNotContact reports a handle that is not a contact: add it first
	// ([Client.AddContact]); sending by handle never pins silently. It is
	// returned as a *[NotContactError].
	ErrNotContact = errors.New("chat: not a contact")

	// ErrKeyChanged reports a contact whose handle now names another key
	// than the one pinned. It is returned as a *[KeyChangedError].
	ErrKeyChanged = errors.New("chat: the contact's key changed")

	// ErrChainRewritten reports a contact whose sigchain, as the sig-server
	// now shows it, forks from or is shorter than the pinned head
	// (sigchain.ErrFork, sigchain.ErrRollback). It is returned as a
	// *[ChainRewrittenError].
	ErrChainRewritten = errors.New("chat: the contact's sigchain was rewritten")

	// ErrFingerprintMismatch reports a fingerprint or safety number that
	// is not the contact's: the key may belong to someone else.
	ErrFingerprintMismatch = errors.New("chat: the fingerprint or safety number does not match the contact's key")

	// ErrOffline reports a call that needs NATS on a client opened without
	// a NATS URL.
	ErrOffline = errors.New("chat: the client was opened without a NATS URL")

	// ErrNoStream reports that the inbox stream does not exist on the NATS
	// server: the chat-server has not provisioned it.
	ErrNoStream = errors.New("chat: the inbox stream does not exist on the NATS server")

	// ErrUnknownRecipient reports a send to a key that holds no handle at
	// the chat-server: nothing was stored.
	ErrUnknownRecipient = errors.New("chat: the recipient is not registered")

	// ErrQuotaExceeded reports a send the chat-server refused for a limit:
	// the sender's or the recipient's rate, or the unread messages one
	// sender may leave in one inbox. Nothing was stored; the same message
	// may be sent again later. It is returned as a *[QuotaError].
	ErrQuotaExceeded = errors.New("chat: over a sending limit")

	// ErrQueued reports a message stored (state pending) that waits for
	// the connection to NATS, or for the stream after a reconnect: the
	// client publishes it, as sealed, once they are back (or, if it
	// closes first, the next client of the state folder does). It is not
	// a failure: the message's Entry.State stays pending until the stream
	// stores it.
	ErrQueued = errors.New("chat: queued until the connection to NATS is back")
)

// QuotaError is [ErrQuotaExceeded] with the limit that was hit.
type QuotaError struct {
	// Limit is "sender" (your sending rate), "recipient" (the rate the
	// recipient takes mail at), "unread" (your unread messages, in the
	// recipient's inbox or in all) or "stream" (the chat-server's storage
	// is full).
	Limit string
}

// Error says which limit refused the message.
func (e *QuotaError) Error() string {
	return "chat: over the " + e.Limit + " limit; nothing was stored"
}

// Is matches [ErrQuotaExceeded].
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// refusal turns the stream's or the gate's refusal of a send into the
// client's typed errors; other errors are returned as they are.
func refusal(err error) error {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return err
	}
	switch {
	case ae.ErrorCode == wire.ErrCodeUnknownRecipient:
		return fmt.Errorf("%w: %w", ErrUnknownRecipient, err)
	case ae.ErrorCode == wire.ErrCodeSenderQuota:
		return fmt.Errorf("%w: %w", &QuotaError{Limit: "sender"}, err)
	case ae.ErrorCode == wire.ErrCodeSenderUnread:
		return fmt.Errorf("%w: %w", &QuotaError{Limit: "unread"}, err)
	case ae.ErrorCode == wire.ErrCodeRecipientQuota:
		return fmt.Errorf("%w: %w", &QuotaError{Limit: "recipient"}, err)
	case strings.Contains(ae.Description, "maximum messages per subject"):
		return fmt.Errorf("%w: %w", &QuotaError{Limit: "unread"}, err)
	case strings.Contains(ae.Description, "maximum bytes") || strings.Contains(ae.Description, "maximum messages exceeded"):
		return fmt.Errorf("%w: %w", &QuotaError{Limit: "stream"}, err)
	}
	return err
}

// NotContactError is [ErrNotContact] with the handle, in canonical form.
type NotContactError struct {
	Handle string
}

// Error says that the handle is not a contact.
func (e *NotContactError) Error() string {
	return fmt.Sprintf("chat: %s is not a contact", e.Handle)
}

// Is matches [ErrNotContact].
func (e *NotContactError) Is(target error) bool { return target == ErrNotContact }

// KeyChangedError is [ErrKeyChanged] with the details: the contact is
// flagged, their messages are held and sending to them is refused until the
// user accepts the new key by adding the contact again.
type KeyChangedError struct {
	Handle  string        // the contact's handle
	Pinned  kez.PublicKey // the key pinned when the contact was added
	Current kez.PublicKey // the key the handle names now
	Since   time.Time     // when this client noticed
}

// Error is the warning to show: both keys with their fingerprints, and
// what the user should do.
func (e *KeyChangedError) Error() string {
	return fmt.Sprintf("chat: WARNING: the key of %s changed: it was %s (fingerprint %s) and is now %s (fingerprint %s). "+
		"Someone may be impersonating them, or they made a new identity. Their messages are held and sending is refused until you "+
		"compare the new fingerprint with them in person or by voice and accept it by adding the contact again",
		e.Handle, e.Pinned, e.Pinned.Fingerprint(), e.Current, e.Current.Fingerprint())
}

// Is matches [ErrKeyChanged].
func (e *KeyChangedError) Is(target error) bool { return target == ErrKeyChanged }

// ChainRewrittenError is [ErrChainRewritten] with the details.
type ChainRewrittenError struct {
	Handle string        // the contact's handle
	Key    kez.PublicKey // their pinned key
	Pinned sigchain.Pin  // the pinned head the server contradicts
	Err    error         // sigchain.ErrFork or sigchain.ErrRollback, with the server's details
	Since  time.Time     // when this client noticed
}

// Error is the warning to show: the pinned head the server contradicts,
// and what the user should do.
func (e *ChainRewrittenError) Error() string {
	return fmt.Sprintf("chat: WARNING: the sigchain of %s (%s) no longer contains the pinned link %d (%s): %v. "+
		"The sig-server is showing a rewritten history. Their messages are held and sending is refused until you "+
		"check with them and accept the chain by adding the contact again",
		e.Handle, e.Key, e.Pinned.Seqno, e.Pinned.Head, e.Err)
}

// Is matches [ErrChainRewritten].
func (e *ChainRewrittenError) Is(target error) bool { return target == ErrChainRewritten }

// Unwrap returns the sigchain error (ErrFork or ErrRollback).
func (e *ChainRewrittenError) Unwrap() error { return e.Err }
