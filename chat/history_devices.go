package chat

import (
	"context"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
)

// ErrNotOwnDevice reports a key that is not a current device of this
// person's own chain (or is this device itself).
var ErrNotOwnDevice = errors.New("chat: not another current device of this person")

// checkOwnDevice checks that device is another current device of this
// person.
func (c *Client) checkOwnDevice(ctx context.Context, device kez.PublicKey) error {
	return fmt.Errorf("%w: %s", ErrNotOwnDevice, device)
}

// sendToOwnDevice seals one message of kind to another device of this
// person and publishes it.
func (c *Client) sendToOwnDevice(ctx context.Context, device kez.PublicKey, kind Kind, body []byte) error {
	return ErrOffline
}
