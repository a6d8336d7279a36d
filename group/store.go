package group

import (
	"context"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/kez"
)

// ErrNotFound reports a group the sig-server or store does not have.
var ErrNotFound = errors.New("group: no such group")

// ErrConflict reports an append that does not follow the stored head:
// another append won, or the writer is behind. It is returned as a
// *[ConflictError] carrying the current head.
var ErrConflict = errors.New("group: the group's head has moved")

// Head is a stored membership chain's last link. The zero value means
// no chain.
type Head struct {
	Seqno uint64
	ID    cid.Cid // cid.Undef when Seqno is 0
}

// ConflictError is [ErrConflict] with the head the link had to follow.
type ConflictError struct {
	Head Head
}

// Error says where the head is now.
func (e *ConflictError) Error() string {
	if e.Head.Seqno == 0 {
		return "group: the group's head has moved: the group does not exist, so the first link must be its create link"
	}
	return fmt.Sprintf("group: the group's head has moved: it is now seqno %d (%s)", e.Head.Seqno, e.Head.ID)
}

// Is matches [ErrConflict].
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Store keeps membership chains for the sig-server, by group name
// ("name@domain"). Implementations must be safe for concurrent use and
// make Append atomic; sigchain/sqlitestore/groupstore and
// sigchain/jsstore implement it, and group/storetest is the contract
// they keep. A Store never verifies: [NewHandler] does.
type Store interface {
	// Head returns the group's head, or [ErrNotFound].
	Head(ctx context.Context, name string) (Head, error)
	// Links returns the exact bytes of up to limit links with seqno >
	// since, in seqno order, and the head at the time of reading (never
	// a link beyond it), or [ErrNotFound] when there is no such group.
	// A since at or beyond the head gives no links and the head.
	Links(ctx context.Context, name string, since uint64, limit int) ([][]byte, Head, error)
	// Append stores link if, atomically, it directly follows the stored
	// head of link.Group(): seqno 1 (a create link) when the name is
	// free, else seqno head+1 with prev = head ID. Otherwise it stores
	// nothing and returns a *[ConflictError] with the current head. A
	// create link also counts for [Store.CreatedBy] of its By().
	Append(ctx context.Context, link *Link) error
	// CreatedBy returns how many stored groups person created.
	CreatedBy(ctx context.Context, person kez.PublicKey) (int, error)
}

// Follows reports whether link directly follows head, the check every
// [Store] makes inside its atomic append.
func Follows(head Head, link *Link) bool {
	if head.Seqno == 0 {
		return link.Seqno() == 1
	}
	prev := link.Prev()
	return link.Seqno() == head.Seqno+1 && prev.Defined() && prev.Equals(head.ID)
}
