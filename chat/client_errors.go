package chat

import (
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
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

	// ErrFingerprintMismatch reports a fingerprint that is not the
	// contact's: the key may belong to someone else.
	ErrFingerprintMismatch = errors.New("chat: the fingerprint does not match the contact's key")

	// ErrOffline reports a call that needs NATS on a client opened without
	// a NATS URL.
	ErrOffline = errors.New("chat: the client was opened without a NATS URL")

	// ErrNoStream reports that the inbox stream does not exist on the NATS
	// server: the chat-server has not provisioned it.
	ErrNoStream = errors.New("chat: the inbox stream does not exist on the NATS server")
)

// NotContactError is [ErrNotContact] with the handle, in canonical form.
type NotContactError struct {
	Handle string
}

// Error says that the handle is not a contact and what to do.
func (e *NotContactError) Error() string {
	return fmt.Sprintf("chat: %s is not a contact yet; add it first", e.Handle)
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
