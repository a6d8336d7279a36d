package chat

// What the client reads of a person's devices from their verified chain,
// and the sig-server's device index.

import (
	"context"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// chainDevice is one device a verified chain lists.
type chainDevice = sigchain.Device

// chainDevices returns every device st lists, primary first, revoked ones
// included.
func chainDevices(st *sigchain.State) []chainDevice { return st.Devices() }

// devicePerson asks the user's sig-server which person's chain lists the
// device key dev (GET /v1/devices/{key}): sigchain.ErrNotFound if none
// does.
func (c *Client) devicePerson(ctx context.Context, dev kez.PublicKey) (person kez.PublicKey, revoked bool, err error) {
	return c.sig.DevicePerson(ctx, dev)
}
