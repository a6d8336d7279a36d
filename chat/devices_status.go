package chat

import (
	"context"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// DeviceStatus is one device of the user's person as their chain lists
// it, with when the chat-server last saw it.
type DeviceStatus struct {
	sigchain.Device
	// This is the device this client logs in with.
	This bool
	// LastSeen is when the chat-server last saw the device pull from its
	// inbox (or ask for it), to the second; zero when it does not know:
	// the device never did, the servers restarted since, it is revoked,
	// or the chat-server is of a release that does not tell. This device
	// is seen now.
	LastSeen time.Time
}

// DeviceStatus returns the user's devices, as OwnDevices fetches them
// from their chain (primary first, revoked ones included), with when the
// chat-server last saw each (docs/spec/chat.md §1, "Last seen"). The
// chat-server answers about this client's own person only; names, order
// and revocations are the chain's, only the times are the server's.
func (c *Client) DeviceStatus(ctx context.Context) ([]DeviceStatus, error) {
	if !c.work.Enter() {
		return nil, ErrClosed
	}
	defer c.work.Leave()
	if c.nc == nil {
		return nil, ErrOffline
	}
	devs, err := c.OwnDevices(ctx)
	if err != nil {
		return nil, err
	}
	seen, err := inbox.Devices(ctx, c.nc, c.devKey.String())
	if err != nil {
		return nil, fmt.Errorf("chat: asking the chat-server when your devices were last seen: %w", refusal(err))
	}
	at := make(map[kez.PublicKey]time.Time, len(seen))
	for _, s := range seen {
		k, err := kez.ParsePublicKey(s.Key)
		if err != nil || s.LastActive <= 0 {
			continue
		}
		at[k] = time.Unix(s.LastActive, 0)
	}
	out := make([]DeviceStatus, 0, len(devs))
	for _, d := range devs {
		ds := DeviceStatus{Device: d, This: d.Key == c.devKey}
		if !d.Revoked {
			ds.LastSeen = at[d.Key]
		}
		out = append(out, ds)
	}
	return out, nil
}
