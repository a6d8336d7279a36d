package files

import (
	"errors"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Errors a fetch reports; callers branch on them with [errors.Is].
var (
	// ErrNotFound: the owner does not have the blob (or no longer shares it).
	ErrNotFound = errors.New("files: the owner does not have this blob; it may have been unshared")

	// ErrForbidden: the owner's access policy refuses this blob to the
	// fetching key (a private share meant for someone else).
	ErrForbidden = errors.New("files: the owner refuses to send this blob to your key; it is shared privately with others")

	// ErrBusy: the owner is serving as many transfers as it allows; retry later.
	ErrBusy = errors.New("files: the owner is busy with other transfers; try again shortly")

	// ErrCorrupt: the owner sent bytes that do not match the CID. Nothing
	// unverified was written; the error is a *[CorruptError].
	ErrCorrupt = errors.New("files: the owner sent data that does not match the CID")
)

// CorruptError reports the first chunk (or, for a bad leaf-hash list, the
// first chunk of the range it covers) that failed verification. It matches
// [ErrCorrupt] with errors.Is.
type CorruptError struct {
	Index  int    // chunk index
	Reason string // what did not match
}

// Error names the chunk and what did not match.
func (e *CorruptError) Error() string {
	return fmt.Sprintf("files: the owner sent a corrupt chunk %d (%s); nothing unverified was kept", e.Index, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// SourceError reports a source of a fetch from several peers (see
// [WithSources]) that was dropped: it sent a bad chunk, refused, or could
// not be reached. A fetch that lost every source returns the first
// source's. It unwraps to the cause.
type SourceError struct {
	Peer peer.ID // the source
	Err  error   // why it was dropped
}

// Error names the source and the cause.
func (e *SourceError) Error() string {
	return fmt.Sprintf("files: source %s: %v", e.Peer, e.Err)
}

// Unwrap returns the cause.
func (e *SourceError) Unwrap() error { return e.Err }

// RemoteError is an error reported by the owner that has no sentinel
// (a malformed request or an internal failure on their side).
type RemoteError struct {
	Status byte
	Text   string // the owner's explanation, sanitised
}

// Error gives the owner's status code and explanation.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("files: the owner could not serve the request (status %d): %s", e.Status, e.Text)
}

func statusError(status byte, text string) error {
	switch status {
	case statusNotFound:
		if text != "" && text != notFoundText {
			return fmt.Errorf("%w (the owner says: %s)", ErrNotFound, text)
		}
		return ErrNotFound
	case statusForbidden:
		return ErrForbidden
	case statusBusy:
		return ErrBusy
	}
	return &RemoteError{Status: status, Text: text}
}

// ErrUnreachable: the owner answered where it listens, but no connection
// to it could be made within the node's DialTimeout, directly or through
// a relay. The error is an *[UnreachableError].
var ErrUnreachable = errors.New("files: cannot reach the owner's device")

// UnreachableError is [ErrUnreachable] with who could not be reached and
// what was tried. It matches ErrUnreachable with errors.Is and unwraps to
// the last dial error.
type UnreachableError struct {
	Owner  string // the owner's handle, or their PeerID when no handle is known
	Device string // the device's name when it is not the owner's primary key
	Addrs  int    // addresses tried, circuit addresses included
	Relays int    // distinct relays among them
	Err    error  // the dial's error
}

// Error names the device and what was tried.
func (e *UnreachableError) Error() string {
	who := e.Owner + "'s device"
	if e.Device != "" {
		who = fmt.Sprintf("%s %q", who, e.Device)
	}
	via := ""
	switch {
	case e.Relays == 1:
		via = ", through 1 relay"
	case e.Relays > 1:
		via = fmt.Sprintf(", through %d relays", e.Relays)
	}
	return fmt.Sprintf("files: cannot reach %s: no address answered (tried %d%s)", who, e.Addrs, via)
}

// Is makes errors.Is(err, ErrUnreachable) true.
func (e *UnreachableError) Is(target error) bool { return target == ErrUnreachable }

// Unwrap returns the dial's error.
func (e *UnreachableError) Unwrap() error { return e.Err }
