package chat

import (
	"context"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// waiter is a Send waiting for the receipt of its message.
type waiter struct {
	to kez.PublicKey // only a receipt from a device of the recipient person counts
	ch chan time.Time
}

func (c *Client) addWaiter(id MessageID, to kez.PublicKey) chan time.Time {
	ch := make(chan time.Time, 1)
	c.waitMu.Lock()
	c.waiters[id] = waiter{to: to, ch: ch}
	c.waitMu.Unlock()
	return ch
}

func (c *Client) dropWaiter(id MessageID) {
	c.waitMu.Lock()
	delete(c.waiters, id)
	c.waitMu.Unlock()
}

// notifyReceipt wakes whoever waits for the receipt of id, if from (a
// person) is the message's recipient.
func (c *Client) notifyReceipt(id MessageID, from kez.PublicKey, at time.Time) {
	c.waitMu.Lock()
	w, ok := c.waiters[id]
	if ok && w.to == from {
		delete(c.waiters, id)
	}
	c.waitMu.Unlock()
	if ok && w.to == from {
		w.ch <- at
	}
}

// waitReceipt waits for the receipt of id. Without a Run loop it fetches
// from the inbox itself.
func (c *Client) waitReceipt(ctx context.Context, id MessageID, ch chan time.Time) (time.Time, error) {
	defer c.dropWaiter(id)
	for {
		select {
		case at := <-ch:
			return at, nil
		default:
		}
		if c.live.Load() > 0 {
			select {
			case at := <-ch:
				return at, nil
			case <-c.work.Stopped():
				return time.Time{}, fmt.Errorf("chat: waiting for the receipt of %s: %w", id, ErrClosed)
			case <-ctx.Done():
				return time.Time{}, fmt.Errorf("chat: waiting for the receipt of %s: %w", id, ctx.Err())
			}
		}
		if _, err := c.fetchOnce(ctx, 200*time.Millisecond); err != nil {
			if ctx.Err() != nil {
				return time.Time{}, fmt.Errorf("chat: waiting for the receipt of %s: %w", id, ctx.Err())
			}
			return time.Time{}, err
		}
	}
}
