package chatserver

import (
	"context"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
)

// RegistryDirectory is the handle registry seen by the NATS auth callout
// and the gate: a key may log in when it holds a handle or is a current
// device of a person who does, and is refused while the handle is
// suspended or once the device is revoked. It is safe for
// concurrent use when Store is (every handles.Store is).
type RegistryDirectory struct {
	Store handles.Store
}

var _ callout.Directory = RegistryDirectory{}

// Lookup implements [callout.Directory]. A key without a handle gives an
// error wrapping [callout.ErrUnknownKey], a revoked device one wrapping
// [callout.ErrRevokedKey]; a registry failure is returned as is (the
// callout denies the login and logs it as an error).
func (d RegistryDirectory) Lookup(ctx context.Context, key kez.PublicKey) (callout.Entry, error) {
	rec, err := d.Store.LookupKey(ctx, key)
	switch {
	case errors.Is(err, handles.ErrNotFound):
		return callout.Entry{}, callout.ErrUnknownKey
	case errors.Is(err, handles.ErrDeviceRevoked):
		return callout.Entry{}, fmt.Errorf("%w: %w", callout.ErrRevokedKey, err)
	case err != nil:
		return callout.Entry{}, fmt.Errorf("chatserver: looking up %s in the handle registry: %w", key, err)
	}
	return callout.Entry{Handle: rec.Handle.String(), Person: rec.Key, Suspended: rec.Suspended}, nil
}
