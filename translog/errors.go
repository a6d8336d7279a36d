package translog

import (
	"errors"
	"fmt"
)

var (
	// ErrBadEntry reports bytes that are not a log entry in its one
	// canonical form.
	ErrBadEntry = errors.New("translog: bad entry")
	// ErrBadCheckpoint reports a checkpoint that does not parse or whose
	// signature does not verify with the log's key.
	ErrBadCheckpoint = errors.New("translog: bad checkpoint")
	// ErrBadProof reports an inclusion proof that does not prove the entry
	// in the checkpoint's tree.
	ErrBadProof = errors.New("translog: bad proof")
	// ErrInconsistent reports two checkpoints that a consistency proof does
	// not show to be one append-only history.
	ErrInconsistent = errors.New("translog: inconsistent checkpoints")
	// ErrNotLogged reports a chain head served without a log proof by a
	// server that keeps a log (or when the Monitor requires one).
	ErrNotLogged = errors.New("translog: head not logged")
	// ErrLogKeyChanged reports a sig-server that names another log key or
	// origin than the one pinned for it.
	ErrLogKeyChanged = errors.New("translog: log key changed")
	// ErrSplitView is what a [SplitViewError] is (errors.Is).
	ErrSplitView = errors.New("translog: split view")
)

// SplitViewError reports two checkpoints of one log that cannot both be
// true: the same size with different roots, or a consistency proof between
// them that fails. Both signed notes are evidence: whoever holds them can
// show anyone that the log's key signed two histories.
type SplitViewError struct {
	Origin string // the log
	Ours   []byte // the signed note we had accepted
	Theirs []byte // the signed note that contradicts it
	Reason string // why they cannot both be true
}

// Error returns a short description (the notes are in the fields).
func (e *SplitViewError) Error() string {
	return fmt.Sprintf("translog: split view of log %q: %s", e.Origin, e.Reason)
}

// Is reports whether target is [ErrSplitView].
func (e *SplitViewError) Is(target error) bool { return target == ErrSplitView }
