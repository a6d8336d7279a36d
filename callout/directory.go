package callout

import (
	"context"
	"errors"
	"sync"

	"github.com/kez-lat/kez-chat/kez"
)

// ErrUnknownKey is returned by a [Directory] for a key that has no
// registered handle. The callout denies such a login.
var ErrUnknownKey = errors.New("callout: no handle is registered for this key")

// ErrRevokedKey is returned by a [Directory] for a device key its person
// revoked. The callout denies such a login ([DenyRevoked]); the
// chat-server's gate refuses mail to and from it.
var ErrRevokedKey = errors.New("callout: the key is a revoked device")

// Entry is what the callout needs to know about a registered key.
type Entry struct {
	// Handle is the registered handle (for example "alice@kez.lat") of
	// the key's person.
	Handle string
	// Person is the key of the person the key is a device of (docs/spec/
	// handles.md, "Devices"): the key itself for the person's own key.
	// The zero value means the key itself.
	Person kez.PublicKey
	// Suspended denies the login while keeping the registration.
	Suspended bool
}

// Directory maps a key to its registration. The handle registry
// implements it; [StaticDirectory] is a map-backed one.
//
// Lookup must return [ErrUnknownKey] (possibly wrapped) for a key that is
// not registered, [ErrRevokedKey] for a revoked device, and another error
// when it cannot tell (the store is
// down); both deny the login but only the second is logged as an error.
// It is called concurrently and must return within the context's
// deadline, which is shorter than the server's auth timeout.
type Directory interface {
	Lookup(ctx context.Context, key kez.PublicKey) (Entry, error)
}

// StaticDirectory is an in-memory [Directory] for small deployments, bots
// and tests. The zero value is empty and ready; it is safe for concurrent
// use.
type StaticDirectory struct {
	mu      sync.RWMutex
	entries map[kez.PublicKey]Entry
}

// Set registers or replaces key's entry.
func (d *StaticDirectory) Set(key kez.PublicKey, e Entry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.entries == nil {
		d.entries = make(map[kez.PublicKey]Entry)
	}
	d.entries[key] = e
}

// Delete removes key. Its current connections stay until their user JWT
// expires; new logins are denied.
func (d *StaticDirectory) Delete(key kez.PublicKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.entries, key)
}

// Lookup implements [Directory].
func (d *StaticDirectory) Lookup(_ context.Context, key kez.PublicKey) (Entry, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	e, ok := d.entries[key]
	if !ok {
		return Entry{}, ErrUnknownKey
	}
	return e, nil
}
