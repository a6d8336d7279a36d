package chatserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Results of kez_chat_gate_msend_copies_total.
var copyResults = []string{"stored", "duplicate", "refused"}

// copyStallWait is how long storing one copy of a multi-recipient send
// waits for room among the copies in flight before it is refused.
const copyStallWait = 5 * time.Second

// copyTimeout is how long the gate waits for the stream's answer to one
// copy.
const copyTimeout = 10 * time.Second

// onMultiSend handles kez.v1.msend.<sender>, which crossed from the user
// account as a stream: up to wire.MaxMultiRecipients recipient devices,
// either with one payload for all (wire.ParseMultiSend: a group message)
// or with a payload each (wire.ParseMultiPayload: pairwise-sealed
// messages, such as a group key sent to every member device). The
// sender's buckets take one message, one copy per recipient and the
// bytes of every copy; each recipient is checked as a send's is (admit,
// with its own copy's size); each admitted copy is stored under
// kez.v1.inbox.<recipient>.<sender>, and one answer (wire.MultiAnswer)
// goes to the reply subject, which must be in the sender's own reply
// namespace, once every copy is settled. A request that fails before any
// copy is tried is refused whole, in the JetStream API error shape, as a
// send is.
func (g *gate) onMultiSend(m *nats.Msg) {
	sender, _ := strings.CutPrefix(m.Subject, callout.MultiSendSubjectPrefix)
	now := g.now()
	answer, from, ok := g.admitSender("msend", m, sender, now)
	if !ok {
		return
	}
	self, err := kez.ParsePublicKey(sender) // checked by senderKey
	if err != nil {
		g.drop("msend", reasonForged)
		return
	}
	copies, err := parseMulti(m.Data, self)
	if err != nil {
		g.refuse("msend", answer, reasonBadRequest, 400, callout.ErrCodeBadRequest, err.Error())
		return
	}
	var size float64
	for _, c := range copies {
		if g.maxCopy > 0 && len(c.Payload) > g.maxCopy {
			g.refuse("msend", answer, reasonBadRequest, 400, callout.ErrCodeBadRequest, "a payload is larger than the stream's messages may be")
			return
		}
		size += float64(len(c.Payload))
	}
	if !g.takeSender(from, now, float64(len(copies)), size) {
		g.refuse("msend", answer, reasonSenderQuota, 429, callout.ErrCodeSenderQuota, "sender over its rate limit")
		return
	}
	id := m.Header.Get(jetstream.MsgIDHeader)
	if len(id) > maxMsgID {
		id = ""
	}
	var res wire.MultiAnswer
	type pending struct {
		device kez.PublicKey
		f      jetstream.PubAckFuture
	}
	var sent []pending
	refused := func(d kez.PublicKey, reason string, code int) {
		res.Refused = append(res.Refused, wire.MultiRefusal{Device: d, Code: code})
		g.m.refusals.WithLabelValues(reason).Inc()
	}
	over := false // the sender could not pay for a recipient no one holds
	for _, c := range copies {
		d := c.Device
		rcpt := d.String()
		if over {
			refused(d, denySender.reason, denySender.code)
			continue
		}
		if den := g.admit(rcpt, from, "", float64(len(c.Payload)), now); den != nil {
			// A recipient that holds no handle costs the sender one
			// message of its send rate, as a send to it would: looking
			// up unknown keys costs no more through a multi-recipient
			// send than through sends. Once it cannot pay, the rest of
			// the request is refused unlooked-up.
			if den == denyUnknown && !g.takeUnknown(from, now) {
				over = true
				den = denySender
			}
			refused(d, den.reason, den.code)
			continue
		}
		out := &nats.Msg{Subject: callout.InboxSubjectPrefix + rcpt + "." + sender, Data: c.Payload}
		if id != "" {
			// Each copy has its own ID: the stream deduplicates a
			// copy sent again, never one recipient's against another's.
			out.Header = nats.Header{jetstream.MsgIDHeader: {sender + "-" + id + "-" + rcpt}}
		}
		f, err := g.copiesJS.PublishMsgAsync(out, jetstream.WithStallWait(copyStallWait))
		if err != nil {
			g.log.Warn("gate: cannot store a copy of a multi-recipient send", "recipient", rcpt, "err", err)
			refused(d, reasonStream, callout.ErrCodeUnavailable)
			continue
		}
		sent = append(sent, pending{d, f})
	}
	if len(sent) == 0 {
		g.answerMulti("msend", answer, res, "refused")
		return
	}
	// The stream answers each copy in its own time: wait for them apart
	// from the subscription, which goes on to the next request (the
	// copies in flight are bounded by copiesJS, whose publishes wait for
	// room above).
	g.m.inFlight.Inc()
	g.answering.Add(1)
	go func() {
		defer g.answering.Done()
		defer g.m.inFlight.Dec()
		timeout := time.NewTimer(copyTimeout)
		defer timeout.Stop()
		for _, p := range sent {
			select {
			case ack := <-p.f.Ok():
				if ack.Duplicate {
					res.Duplicates++
				} else {
					res.Stored++
				}
			case err := <-p.f.Err():
				refused(p.device, reasonStream, copyCode(err))
			case <-timeout.C:
				refused(p.device, reasonStream, callout.ErrCodeUnavailable)
			}
		}
		g.answerMulti("msend", answer, res, "forwarded")
	}()
}

// parseMulti parses the body of a multi-recipient send from sender, of
// either form, into its copies (a shared payload is each copy's).
func parseMulti(b []byte, sender kez.PublicKey) ([]wire.MultiCopy, error) {
	if bytes.HasPrefix(b, []byte(wire.MultiPayloadMagic)) {
		return wire.ParseMultiPayload(b, sender)
	}
	devices, payload, err := wire.ParseMultiSend(b, sender)
	if err != nil {
		return nil, err
	}
	copies := make([]wire.MultiCopy, len(devices))
	for i, d := range devices {
		copies[i] = wire.MultiCopy{Device: d, Payload: payload}
	}
	return copies, nil
}

// copyCode is the code of a copy the stream refused: the sender's cap of
// unread messages in that inbox (the stream's per-subject limit), or
// unavailable for anything else (the stream full, no answer).
func copyCode(err error) int {
	var ae *jetstream.APIError
	if errors.As(err, &ae) && strings.Contains(ae.Description, "maximum messages per subject") {
		return callout.ErrCodeSenderUnread
	}
	return callout.ErrCodeUnavailable
}

// answerMulti sends the answer of a multi-recipient send and counts it
// and its copies.
func (g *gate) answerMulti(kind, answer string, res wire.MultiAnswer, result string) {
	g.m.requests.WithLabelValues(kind, result).Inc()
	g.m.copies.WithLabelValues("stored").Add(float64(res.Stored))
	g.m.copies.WithLabelValues("duplicate").Add(float64(res.Duplicates))
	g.m.copies.WithLabelValues("refused").Add(float64(len(res.Refused)))
	body, err := json.Marshal(res)
	if err != nil {
		g.log.Error("gate: cannot encode a multi-recipient answer", "err", err)
		return
	}
	g.nc.Publish(answer, body)
}
