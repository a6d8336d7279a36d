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
	// Device is the device key [Store.LookupKey] was asked about when it
	// is one of Key's devices; zero for Key itself and for other lookups.
	Device kez.PublicKey
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
	// auth callout uses it to admit a connecting key. For a current
	// device of a person it returns the person's entry with Device set to
	// key; for a revoked device (the person's own key included, once
	// revoked as a device) a *[DeviceRevokedError] matching
	// [ErrDeviceRevoked].
	LookupKey(ctx context.Context, key kez.PublicKey) (Record, error)
	// SetSuspended suspends or reinstates h ([ErrNotFound] if unknown).
	SetSuspended(ctx context.Context, h Handle, suspended bool) error
	// Release deletes the entry of h, freeing the name and the key
	// ([ErrNotFound] if unknown). It is an operator action. The
	// person's device records stay (a released key's devices find no
	// entry, so they may not log in).
	Release(ctx context.Context, h Handle) error

	// AddDevice records d.Device as a current device of d.Person, which
	// must hold a handle ([ErrNotFound] otherwise). It returns
	// created=false when the device is already the person's and current.
	// Errors: [ErrDeviceRevoked] (the device was revoked: that is
	// permanent), [ErrDeviceTaken] (another person's device, or a key
	// holding a handle), [ErrTooManyDevices] (the person has [MaxDevices]
	// current devices, its own key counted unless revoked),
	// [ErrSuspended]. Of two adds at once that would pass the bound, one
	// fails.
	AddDevice(ctx context.Context, d DeviceRecord) (created bool, err error)
	// RevokeDevice marks device, a device of person or person itself (its
	// primary device), as revoked at at, permanently. Revoking a revoked
	// device again is no error. [ErrNotFound]: device is not person's.
	// A device the store never saw is recorded as person's, revoked:
	// callers check that person's chain shows it revoked first (the
	// registry's server does), since that record blocks the key here for
	// good.
	RevokeDevice(ctx context.Context, person, device kez.PublicKey, at time.Time) error
	// Devices returns person's device records, current and revoked,
	// oldest first (a store may keep only the latest revoked ones; see
	// its documentation). The person's own key appears only once
	// revoked.
	Devices(ctx context.Context, person kez.PublicKey) ([]DeviceRecord, error)
}
