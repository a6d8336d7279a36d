package claims

import "errors"

// Reasons a claim fails its check. A failed [Result]'s Err matches one of
// them with [errors.Is].
var (
	// ErrBadStatement: the proof is not a statement (or nostr event) in
	// the strict form of docs/spec/claims.md.
	ErrBadStatement = errors.New("claims: not a valid statement")
	// ErrBadSignature: the statement's (or the nostr event's) signature
	// does not verify.
	ErrBadSignature = errors.New("claims: bad signature")
	// ErrWrongKey: the statement names another key than the chain's, or
	// the nostr event is signed by another nostr key than the claimed one.
	ErrWrongKey = errors.New("claims: the statement is for another key")
	// ErrStale: the statement is for another claim or another position in
	// the chain (a revoked claim's statement, say).
	ErrStale = errors.New("claims: the statement is for another claim or chain position")
	// ErrNotFound: the statement is not published where the claim says.
	ErrNotFound = errors.New("claims: the statement is not published")
	// ErrUnsupported: a service this version cannot check.
	ErrUnsupported = errors.New("claims: unsupported service")
	// ErrBadIdentity: an identity that is not valid for its service.
	ErrBadIdentity = errors.New("claims: not a valid identity for the service")
	// ErrForbidden: an https identity at an IP address or port, or one
	// that resolves to an address that is not public, outside the
	// checker's local domains.
	ErrForbidden = errors.New("claims: refused to contact an address that is not public")
	// ErrUnavailable: the place the statement is published could not be
	// read (a network failure, a server error, a redirect, an answer too
	// large). It may work later.
	ErrUnavailable = errors.New("claims: the statement's location could not be read")
)
