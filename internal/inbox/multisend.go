package inbox

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ErrMultiSendUnsupported: the chat-server, or the NATS configuration in
// front of it, does not take multi-recipient sends (a release before
// them, or a nats.conf without the kez.v1.msend.> export): nothing was
// stored; send to each device on its own.
var ErrMultiSendUnsupported = errors.New("inbox: the chat-server does not take multi-recipient sends")

// DefaultMultiSendTimeout bounds a multi-recipient send whose context has
// no deadline.
const DefaultMultiSendTimeout = 30 * time.Second

// MultiSend sends payload once for every device of devices (at most
// wire.MaxMultiRecipients, distinct, not me) as the user with key me on
// nc, with the Nats-Msg-Id msgID (may be empty), and returns the gate's
// answer. A refusal of the whole send is a *jetstream.APIError, as a
// send's; a gate that does not know the subject is
// [ErrMultiSendUnsupported]: the broker refused the publish (a
// permissions violation, which nc reports as its last error) or nothing
// listens (no responders).
func MultiSend(ctx context.Context, nc *nats.Conn, me kez.PublicKey, devices []kez.PublicKey, payload []byte, msgID string) (wire.MultiAnswer, error) {
	body, err := wire.EncodeMultiSend(devices, payload)
	if err != nil {
		return wire.MultiAnswer{}, err
	}
	return multiRequest(ctx, nc, me, body, devices, msgID)
}

// MultiSendEach sends each copy's payload to its device (at most
// wire.MaxMultiRecipients copies, to distinct devices, not me) in one
// multi-recipient send with a payload per recipient, as the user with key
// me on nc, with the Nats-Msg-Id msgID (the gate stores each copy with
// its own ID, <me>-<msgID>-<device>), and returns the gate's answer. The
// body must fit nc's maximum payload. Errors are MultiSend's.
func MultiSendEach(ctx context.Context, nc *nats.Conn, me kez.PublicKey, copies []wire.MultiCopy, msgID string) (wire.MultiAnswer, error) {
	body, err := wire.EncodeMultiPayload(copies)
	if err != nil {
		return wire.MultiAnswer{}, err
	}
	devices := make([]kez.PublicKey, len(copies))
	for i, c := range copies {
		devices[i] = c.Device
	}
	return multiRequest(ctx, nc, me, body, devices, msgID)
}

// multiRequest publishes the multi-recipient send body to devices and
// waits for the gate's answer.
func multiRequest(ctx context.Context, nc *nats.Conn, me kez.PublicKey, body []byte, devices []kez.PublicKey, msgID string) (wire.MultiAnswer, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultMultiSendTimeout)
		defer cancel()
	}
	subject := wire.MultiSendSubjectPrefix + me.String()
	reply := nc.NewInbox()
	sub, err := nc.SubscribeSync(reply)
	if err != nil {
		return wire.MultiAnswer{}, err
	}
	defer sub.Unsubscribe()
	sub.SetPendingLimits(4, wire.MaxMultiAnswer*4)
	m := &nats.Msg{Subject: subject, Reply: reply, Data: body, Header: nats.Header{}}
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	before := nc.LastError()
	if err := nc.PublishMsg(m); err != nil {
		return wire.MultiAnswer{}, err
	}
	// The broker refuses a publish it does not permit before it answers
	// the flush's ping: a refusal naming the subject is an older server.
	if err := nc.FlushWithContext(ctx); err != nil {
		return wire.MultiAnswer{}, err
	}
	if last := nc.LastError(); !sameError(last, before) && errors.Is(last, nats.ErrPermissionViolation) && strings.Contains(last.Error(), `"`+subject+`"`) {
		return wire.MultiAnswer{}, fmt.Errorf("%w: %w", ErrMultiSendUnsupported, last)
	}
	for {
		resp, err := sub.NextMsgWithContext(ctx)
		if err == nil && resp.Header.Get("Status") == "503" {
			err = nats.ErrNoResponders
		}
		if errors.Is(err, nats.ErrNoResponders) {
			return wire.MultiAnswer{}, fmt.Errorf("%w: %w", ErrMultiSendUnsupported, err)
		}
		if err != nil {
			return wire.MultiAnswer{}, err
		}
		a, err := wire.ParseMultiAnswer(resp.Data, devices)
		if errors.Is(err, wire.ErrMultiSend) {
			// Others may drop junk into a reply namespace: wait for
			// the gate's answer.
			continue
		}
		return a, err
	}
}

// sameError reports whether a and b are the same error value (false for
// values Go cannot compare).
func sameError(a, b error) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if !reflect.TypeOf(a).Comparable() || !reflect.TypeOf(b).Comparable() {
		return false
	}
	return a == b
}
