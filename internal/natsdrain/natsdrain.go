// Package natsdrain drains NATS subscriptions for a graceful stop: the
// server stops sending to them (a queue group's other members get the new
// messages), and the messages already received are still handled.
//
//	if err := natsdrain.Subs(ctx, subs...); err != nil {
//		// ctx ended first: some messages were not handled
//	}
package natsdrain

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
)

// Subs drains every subscription in subs (nats.Subscription.Drain) and
// waits until each has handled what it had received and closed, or ctx
// ends; then it returns ctx's error. A subscription closed already counts
// as drained; nil entries are skipped.
func Subs(ctx context.Context, subs ...*nats.Subscription) error {
	var waits []<-chan nats.SubStatus
	var errs []error
	for _, sub := range subs {
		if sub == nil {
			continue
		}
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			if !errors.Is(err, nats.ErrBadSubscription) && !errors.Is(err, nats.ErrConnectionClosed) {
				errs = append(errs, fmt.Errorf("natsdrain: draining %s: %w", sub.Subject, err))
			}
			continue
		}
		waits = append(waits, closed)
	}
	for _, closed := range waits {
		if err := wait(ctx, closed); err != nil {
			return err
		}
	}
	return errors.Join(errs...)
}

// wait waits until closed reports nats.SubscriptionClosed or is closed,
// or ctx ends.
func wait(ctx context.Context, closed <-chan nats.SubStatus) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for {
		select {
		case st, ok := <-closed:
			if !ok || st == nats.SubscriptionClosed {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
