package chat

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stale device lists (docs/spec/chat.md §8). A copy to a recipient's
// device carries the digest of the recipient person's current devices as
// the chain it was sealed with lists them (the Kez-Devices header). The
// gate refuses it, storing nothing, when the registry lists other devices
// (wire.ErrCodeDevicesChanged): the person linked or revoked a device
// since this client last fetched their chain. The client then fetches the
// chain again (at most once per person per staleRefreshes), records the
// message as due (due.go) to each device the chain lists now and did not
// then, and publishes the refused copy once more: with the new digest,
// or without one if the chain did not change (the registry learned of the
// device first); a copy to a device the chain shows revoked is dropped.

// staleRefreshes bounds how often one person's chain is fetched again
// because the gate refused a send's device list.
var staleRefreshes = ratelimit.Limit{N: 1, Per: 5 * time.Second}

// devicesDigest is the Kez-Devices header of a send to a person with
// these current devices.
func devicesDigest(keys []kez.PublicKey) string {
	ts := make([]string, len(keys))
	for i, k := range keys {
		ts[i] = k.String()
	}
	return wire.DevicesDigest(ts)
}

// devicesChanged reports the gate's refusal of a send whose device list
// is stale.
func devicesChanged(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.ErrorCode == wire.ErrCodeDevicesChanged
}

// restale handles the gate's refusal of f (published as msg) for a stale
// device list: it refreshes the recipient's chain, records the message as
// due to the devices new in it, and sets msg's header for one more
// publish. It returns false if f's device is no longer current: f is
// dropped.
func (c *Client) restale(f *flight, msg *nats.Msg) bool {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.RefreshTimeout)
	defer cancel()
	c.log.Debug("the gate refused a copy: the recipient's devices changed since their chain was fetched", "id", f.msgID, "device", f.device, "person", f.person)
	cur, ok := c.staleChain(ctx, f.person)
	if !ok {
		msg.Header.Del(wire.Devices)
		return true
	}
	if !slices.Contains(cur, f.device) {
		c.log.Info("a copy of a message was refused for a stale device list, and its device is no longer current: dropped", "id", f.msgID, "device", f.device)
		return false
	}
	var added []kez.PublicKey
	for _, d := range cur {
		if !slices.Contains(f.chain, d) {
			added = append(added, d)
		}
	}
	if len(added) > 0 && f.durable && f.p.entry != nil {
		c.dueToNew(ctx, f, added)
	}
	if d := devicesDigest(cur); d != devicesDigest(f.chain) {
		msg.Header.Set(wire.Devices, d)
	} else {
		// The registry knows of a change the chain does not show yet.
		msg.Header.Del(wire.Devices)
	}
	return true
}

// staleChain returns person's current devices from their chain, fetched
// again unless it was so lately; false if they cannot be had.
func (c *Client) staleChain(ctx context.Context, person kez.PublicKey) ([]kez.PublicKey, bool) {
	again, _ := c.devs.stale.Allow(person.String())
	if cs := c.contactByKey(person); cs != nil {
		if again {
			if err := c.refreshContact(ctx, cs, false, true); err != nil {
				c.log.Debug("refreshing a contact whose devices changed", "person", person, "err", err)
			}
		}
		c.mu.Lock()
		ct, devs := cs.c, cs.devices
		c.mu.Unlock()
		if ct.Err() != nil || len(devs) == 0 {
			return nil, false
		}
		return currentDevices(devs, person), true
	}
	if again {
		kc := &c.keyChains
		kc.mu.Lock()
		if e, ok := kc.chains[person]; ok {
			e.checked = time.Time{}
			kc.chains[person] = e
		}
		kc.mu.Unlock()
	}
	st, err := c.keyChain(ctx, person)
	if err != nil {
		c.log.Debug("refreshing a chain whose devices changed", "person", person, "err", err)
		return nil, false
	}
	return currentDevices(chainDevices(st), person), true
}

// dueToNew records f's message as due to the devices added (they are
// new in its recipient's chain), and has the due loop try them at once.
func (c *Client) dueToNew(ctx context.Context, f *flight, added []kez.PublicKey) {
	var trimmed int64
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		now := c.now()
		trimmed = 0
		for _, d := range added {
			n, err := c.putDue(tx, f.msgID, target{rcpt: Recipient{Key: d}, person: f.person}, true, now)
			if err != nil {
				return err
			}
			trimmed += n
		}
		return nil
	})
	if err != nil {
		c.log.Warn("cannot record the copies of a message due to a recipient's new devices", "id", f.msgID, "err", err)
		return
	}
	if trimmed > 0 {
		c.stats.dueDropped.Add(uint64(trimmed))
	}
	c.stats.copiesDue.Add(uint64(len(added)))
	c.log.Info("the recipient linked devices since their chain was fetched: the message is due to them", "id", f.msgID, "devices", len(added))
	c.due.any.Store(true)
	c.dueKick(added...)
}
