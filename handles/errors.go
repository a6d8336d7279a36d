package handles

import (
	"errors"
	"fmt"
)

// Reason says why a text is not a valid handle. Its values are stable and
// also travel in HTTP error bodies ("reason"), so clients can branch on them.
type Reason string

// Reasons a handle is refused. See docs/spec/handles.md for the rules.
const (
	ReasonEmpty        Reason = "empty"               // nothing given
	ReasonTooShort     Reason = "too_short"           // name under MinNameLen
	ReasonTooLong      Reason = "too_long"            // name over MaxNameLen, or input over MaxInputLen
	ReasonBadCharacter Reason = "bad_character"       // an ASCII character outside a-z 0-9 . - _ (or a control character)
	ReasonBadSeparator Reason = "bad_separator"       // . - _ leading, trailing or doubled
	ReasonBadForm      Reason = "bad_form"            // not name@domain: empty parts, several @
	ReasonNoDomain     Reason = "no_domain"           // a bare name and no default domain
	ReasonInvalidUTF8  Reason = "invalid_utf8"        // bytes that are not UTF-8
	ReasonInvisible    Reason = "invisible_character" // zero-width, bidi control, soft hyphen, non-ASCII space, filler
	ReasonFullWidth    Reason = "full_width"          // full-width or half-width forms (Ａ, ＠)
	ReasonHomoglyph    Reason = "homoglyph"           // a non-Latin letter or sign that looks like an allowed one (Cyrillic а)
	ReasonMixedScript  Reason = "mixed_script"        // Latin letters mixed with letters of another script
	ReasonNonASCII     Reason = "non_ascii"           // any other non-ASCII character (é, ж, emoji, combining marks)
	ReasonBadDomain    Reason = "bad_domain"          // the domain is not a lower-case DNS name
	ReasonIDNA         Reason = "idna_unsupported"    // a punycode (xn--) label: internationalised domains are not supported in v0
	ReasonLocalDomain  Reason = "local_domain"        // localhost, an IP address or a port outside development
	ReasonReserved     Reason = "reserved"            // a name kept for the operator (see IsReserved)
)

// HandleError reports text that is not a valid handle, or a handle that may
// not be claimed. Branch on Reason; show Error() to people.
type HandleError struct {
	Input  string // the text as given
	Reason Reason // why it was refused
	Detail string // what exactly is wrong, in a sentence fragment
}

// Error says which text was refused and why, with look-alike characters
// shown as \u escapes.
func (e *HandleError) Error() string {
	in := e.Input
	if len(in) > 80 {
		in = in[:80] + "…"
	}
	return fmt.Sprintf("handles: %+q is not a valid handle: %s", in, e.Detail) // %+q shows look-alikes as \u escapes
}

func herr(in string, r Reason, detail string) *HandleError {
	return &HandleError{Input: in, Reason: r, Detail: detail}
}

// ReasonOf returns the Reason of a *HandleError in err's chain, or "".
func ReasonOf(err error) Reason {
	var he *HandleError
	if errors.As(err, &he) {
		return he.Reason
	}
	return ""
}

// Errors of the registry, the claim check and the resolver. Wrapped errors
// add the details; test with errors.Is.
var (
	// ErrNotFound: no such handle (or the domain is not served here).
	ErrNotFound = errors.New("handles: no such handle")
	// ErrTaken: the name is held by another key, or is too close to a
	// name that is (see docs/spec/handles.md, "Skeletons"). The error
	// is a *[TakenError] naming the held handle.
	ErrTaken = errors.New("handles: the name is taken")
	// ErrKeyHasHandle: the key already holds another handle in this registry.
	ErrKeyHasHandle = errors.New("handles: the key already holds a handle here")
	// ErrSuspended: the operator suspended the handle.
	ErrSuspended = errors.New("handles: the handle is suspended")
	// ErrBadClaim: the claim request is malformed.
	ErrBadClaim = errors.New("handles: malformed claim")
	// ErrBadSignature: the claim's signature does not verify with its key.
	ErrBadSignature = errors.New("handles: the claim's signature does not verify")
	// ErrClaimTime: the claim's timestamp is too old or in the future.
	ErrClaimTime = errors.New("handles: the claim's timestamp is outside the accepted window")
	// ErrChainMismatch: the key's sigchain does not claim the handle.
	ErrChainMismatch = errors.New("handles: the key's sigchain does not claim this handle")
	// ErrMismatch: a server's answer contradicts the verified sigchain (a
	// lying or broken server). Never accept the result.
	ErrMismatch = errors.New("handles: the server's answer does not match the verified sigchain")
	// ErrNewerSkeletonRule: a registry's skeletons were computed by a
	// newer rule than this program's [SkeletonVersion]; claims by this
	// program would miss look-alikes that rule folds together.
	ErrNewerSkeletonRule = errors.New("handles: the registry follows a newer skeleton rule; upgrade the program")
	// ErrUnreachable: a server could not be reached or failed (network
	// error, timeout, 5xx). Retrying later may help.
	ErrUnreachable = errors.New("handles: server unreachable")
)

// Why a claim was refused as taken, in the "reason" of a 409 answer.
const (
	ReasonTaken     Reason = "taken"      // another key holds the name itself
	ReasonLookAlike Reason = "look_alike" // another key holds a name with the same skeleton
)

// TakenError is the refusal of a claim because another key holds the
// name, or a look-alike of it (a name with the same [Skeleton]). It
// matches [ErrTaken] with errors.Is; errors.As gives the handle held.
type TakenError struct {
	Claimed Handle // the handle asked for
	Holder  Handle // the handle another key holds: Claimed, or its look-alike
}

// LookAlike reports whether the handle held is a look-alike of the one
// claimed rather than the same.
func (e *TakenError) LookAlike() bool { return e.Holder != e.Claimed }

// Reason is [ReasonLookAlike] or [ReasonTaken].
func (e *TakenError) Reason() Reason {
	if e.LookAlike() {
		return ReasonLookAlike
	}
	return ReasonTaken
}

// Error names both handles.
func (e *TakenError) Error() string {
	if e.LookAlike() {
		return fmt.Sprintf("handles: %s is too close to %s, which belongs to another key", e.Claimed, e.Holder)
	}
	return fmt.Sprintf("handles: %s belongs to another key", e.Claimed)
}

// Is makes errors.Is(err, ErrTaken) true.
func (e *TakenError) Is(target error) bool { return target == ErrTaken }

// taken returns the *TakenError of a claim of claimed refused because of
// holder.
func taken(claimed, holder Handle) error { return &TakenError{Claimed: claimed, Holder: holder} }
