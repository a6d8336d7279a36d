package chat

import (
	"context"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// ErrMultiSendUnsupported reports a chat-server (or a NATS configuration
// in front of it) that does not take multi-recipient sends, which group
// messages need: nothing was stored. The operator has to upgrade it
// (docs/operators.md).
var ErrMultiSendUnsupported = errors.New("chat: the chat-server does not take multi-recipient sends")

// publishMulti stores payload once in the inbox of every device of
// devices through the gate's multi-recipient send (kez.v1.msend), in
// messages of at most wire.MaxMultiRecipients devices, each with the
// Nats-Msg-Id msgID (the gate gives every copy its own ID, so the same
// msgID sent again is a duplicate for the devices that have it and
// stored for the others). It returns the answers summed. A refusal of a
// whole message maps to the client's typed errors (*QuotaError,
// ErrMultiSendUnsupported, …) and stops there: the answer then holds
// what the messages before it stored. Devices refused one by one are in
// the answer's Refused, with a code [multiRefusalError] explains.
func (c *Client) publishMulti(ctx context.Context, devices []kez.PublicKey, payload []byte, msgID string) (wire.MultiAnswer, error) {
	var total wire.MultiAnswer
	if c.nc == nil {
		return total, ErrOffline
	}
	for start := 0; start < len(devices); start += wire.MaxMultiRecipients {
		part := devices[start:min(start+wire.MaxMultiRecipients, len(devices))]
		a, err := inbox.MultiSend(ctx, c.nc, c.devKey, part, payload, msgID)
		if err != nil {
			if errors.Is(err, inbox.ErrMultiSendUnsupported) {
				err = fmt.Errorf("%w: %w", ErrMultiSendUnsupported, err)
			}
			return total, fmt.Errorf("chat: sending to %d devices: %w", len(part), refusal(err))
		}
		total.Stored += a.Stored
		total.Duplicates += a.Duplicates
		total.Refused = append(total.Refused, a.Refused...)
	}
	return total, nil
}

// maxMultiBody bounds the body of one multi-recipient send with a payload
// per recipient, below the connection's maximum payload: the user
// connections' default (callout.DefaultMaxPayload, 128 KiB) less room for
// the headers, whatever larger maximum the server announces.
const maxMultiBody = 127 << 10

// publishMultiEach stores each copy's payload in its device's inbox
// through the gate's multi-recipient send with a payload per recipient
// (kez.v1.msend, "KZMP"), in requests of at most wire.MaxMultiRecipients
// copies and maxMultiBody bytes, each with the Nats-Msg-Id msgID (the
// gate stores each copy as <device key>-<msgID>-<recipient>, what a
// one-to-one send with the ID <msgID>-<recipient> stores: the copies of
// the outbox are kept once whichever way they go). A request that gets
// no answer (a timeout, a dropped connection) is sent again, the same
// bytes, up to maxPublishAttempts times. It returns the answers summed;
// when a request fails for good, the error (mapped as publishMulti's)
// and the copies of that request and the ones after it, whose outcome is
// unknown.
func (c *Client) publishMultiEach(ctx context.Context, copies []wire.MultiCopy, msgID string) (wire.MultiAnswer, []wire.MultiCopy, error) {
	var total wire.MultiAnswer
	if c.nc == nil {
		return total, copies, ErrOffline
	}
	maxBody := maxMultiBody
	if mp := int(c.nc.MaxPayload()) - 1<<10; mp > 0 && mp < maxBody {
		maxBody = mp
	}
	runs := wire.SplitMultiPayload(copies, maxBody)
	for i, run := range runs {
		a, err := c.multiEachAttempts(ctx, run, msgID)
		if err != nil {
			var left []wire.MultiCopy
			for _, r := range runs[i:] {
				left = append(left, r...)
			}
			return total, left, fmt.Errorf("chat: sending to %d devices: %w", len(run), err)
		}
		total.Stored += a.Stored
		total.Duplicates += a.Duplicates
		total.Refused = append(total.Refused, a.Refused...)
	}
	return total, nil, nil
}

// multiEachAttempts sends one request of publishMultiEach, again while
// its outcome is unknown and the client is not closing.
func (c *Client) multiEachAttempts(ctx context.Context, run []wire.MultiCopy, msgID string) (wire.MultiAnswer, error) {
	for attempt := 1; ; attempt++ {
		recon := c.nextReconnect()
		a, err := inbox.MultiSendEach(ctx, c.nc, c.devKey, run, msgID)
		switch {
		case err == nil:
			return a, nil
		case errors.Is(err, inbox.ErrMultiSendUnsupported):
			return a, fmt.Errorf("%w: %w", ErrMultiSendUnsupported, err)
		case attempt >= maxPublishAttempts || ctx.Err() != nil || !transient(err):
			return a, refusal(err)
		}
		if !c.nc.IsConnected() {
			select {
			case <-recon:
			case <-c.closing:
				return a, fmt.Errorf("%w: %w", ErrClosed, err)
			case <-ctx.Done():
				return a, ctx.Err()
			}
		}
	}
}

// multiRefusalError is the client's typed error for a device the gate
// refused in a multi-recipient send's answer, with its code: the error a
// one-to-one send to it would have returned.
func multiRefusalError(r wire.MultiRefusal) error {
	var err error
	switch r.Code {
	case wire.ErrCodeUnknownRecipient:
		err = ErrUnknownRecipient
	case wire.ErrCodeRecipientRevoked:
		err = errRecipientRevoked
	case wire.ErrCodeSenderQuota:
		err = &QuotaError{Limit: "sender"}
	case wire.ErrCodeRecipientQuota:
		err = &QuotaError{Limit: "recipient"}
	case wire.ErrCodeSenderUnread:
		err = &QuotaError{Limit: "unread"}
	case wire.ErrCodeUnavailable:
		err = errInboxUnavailable
	default:
		err = fmt.Errorf("chat: refused with code %d", r.Code)
	}
	return fmt.Errorf("chat: device %s: %w", r.Device, err)
}

var (
	errRecipientRevoked = errors.New("chat: the recipient is a revoked device")
	errInboxUnavailable = errors.New("chat: the recipient's inbox is unavailable for now")
)
