package handles

import (
	"context"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Record is one registry entry: a handle and the key that holds it.
type Record struct {
	Handle Handle
	Key    kez.PublicKey
	// EncryptionKey and Generation are the X25519 key the key's sigchain
	// published when the handle was last claimed (raw 32 bytes). They are
	// a hint for lookups; clients take the key from the verified chain.
	EncryptionKey []byte
	Generation    uint32
	ClaimedAt     time.Time // first claim
	UpdatedAt     time.Time // last claim or change
	Suspended     bool      // set by the operator; a suspended key may not connect
}

// Store is a handle registry. Implementations must be safe for concurrent
// use, and Claim must be atomic: of two claims of one name at once, one
// wins and the other gets [ErrTaken].
//
// Rules every Store keeps (docs/spec/handles.md, "Registry"):
//   - a name (per domain) is held by one key;
//   - a key holds at most one handle in a registry (a sigchain claims one
//     handle at a time, so a second one could never verify);
//   - names with the same [Skeleton] are one name: "al.ice", "a1ice" and
//     "al1ce" are taken when "alice" is, and the refusal is a
//     *[TakenError] naming the handle held;
//   - names that came to share a skeleton through a change of the
//     skeleton rule ([SkeletonVersion]) all stay valid, and a skeleton
//     stays held while any of them lives; only new claims are refused.
type Store interface {
	// Claim records rec.Handle for rec.Key. It returns created=true for a
	// new entry, created=false when the key already holds the handle
	// (the entry's encryption key and UpdatedAt are refreshed). Errors:
	// a *[TakenError] (matching [ErrTaken]), [ErrKeyHasHandle],
	// [ErrSuspended] (the key's entry is suspended).
	Claim(ctx context.Context, rec Record) (created bool, err error)
	// Lookup returns the entry of h, or [ErrNotFound].
	Lookup(ctx context.Context, h Handle) (Record, error)
	// LookupKey returns the entry held by key, or [ErrNotFound]. The NATS
	// auth callout uses it to admit a connecting key.
	LookupKey(ctx context.Context, key kez.PublicKey) (Record, error)
	// SetSuspended suspends or reinstates h ([ErrNotFound] if unknown).
	SetSuspended(ctx context.Context, h Handle, suspended bool) error
	// Release deletes the entry of h, freeing the name and the key
	// ([ErrNotFound] if unknown). It is an operator action.
	Release(ctx context.Context, h Handle) error
}
