package group

import (
	"context"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ChainDeviceChecker returns the [DeviceChecker] of a client: lookup
// returns person's verified sigchain (its own cache, or a fetch checked
// against its pin), and device passes when that chain added it and either
// never revoked it or revoked it by a link whose ctime is after the group
// link's. A lookup error stops verification as it is (not [ErrInvalid]).
func ChainDeviceChecker(lookup func(ctx context.Context, person kez.PublicKey) (*sigchain.State, error)) DeviceChecker {
	return func(ctx context.Context, person, device kez.PublicKey, at time.Time) error {
		st, err := lookup(ctx, person)
		if err != nil {
			return err
		}
		if st == nil || st.Key() != person {
			return fmt.Errorf("%w: no sigchain of %s", ErrDeviceNotAllowed, person)
		}
		d, ok := st.DeviceOf(device)
		switch {
		case !ok:
			return fmt.Errorf("%w: %s is not on the sigchain of %s", ErrDeviceNotAllowed, device, person)
		case d.Revoked && !d.RevokedAt.After(at):
			return fmt.Errorf("%w: %s was revoked at %s, before the link's %s", ErrDeviceNotAllowed, device, d.RevokedAt.Format(time.RFC3339), at.UTC().Format(time.RFC3339))
		}
		return nil
	}
}
