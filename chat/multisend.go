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
