package chatserver

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxMsgID bounds the Nats-Msg-Id the gate passes on.
const maxMsgID = 128

// onSend handles kez.v1.send.<recipient>.<sender>, which crossed from the
// user account as a stream: its reply subject, if any, is not used.
func (g *gate) onSend(m *nats.Msg) {
	// The subject's tokens are the keys' text form: the hot path keeps
	// them as text (the recipient is parsed when it is looked up).
	rest, _ := strings.CutPrefix(m.Subject, callout.SendSubjectPrefix)
	rcpt, sender, ok := strings.Cut(rest, ".")
	now := g.now()
	if !ok {
		g.drop("send", reasonForged)
		return
	}
	answer, from, ok := g.admitSender("send", m, sender, now)
	if !ok {
		return
	}
	size := float64(len(m.Data))
	if !g.takeSender(from, now, 1, size) {
		g.refuse("send", answer, reasonSenderQuota, 429, callout.ErrCodeSenderQuota, "sender over its rate limit")
		return
	}
	if d := g.admit(rcpt, from, m.Header.Get(wire.Devices), size, now); d != nil {
		g.refuse("send", answer, d.reason, d.status, d.code, d.desc)
		return
	}
	out := &nats.Msg{Subject: callout.InboxSubjectPrefix + rcpt + "." + sender, Reply: answer, Data: m.Data}
	if id := m.Header.Get(jetstream.MsgIDHeader); id != "" && len(id) <= maxMsgID {
		// The stream's duplicate window is shared by everyone: the
		// sender's key keeps one sender's IDs from shadowing another's.
		out.Header = nats.Header{jetstream.MsgIDHeader: {sender + "-" + id}}
	}
	if err := g.nc.PublishMsg(out); err != nil {
		g.refuse("send", answer, reasonUnavailable, 503, callout.ErrCodeUnavailable, "inbox unavailable")
		return
	}
	g.sendsForwarded.Inc()
}

// admitSender checks what a send and a multi-recipient send check first
// of their sender, the user whose key text the subject names: it is a
// key (else the request is dropped as forged); the reply subject is in
// its own reply namespace _INBOX.<sender>.…, where the answer goes and
// the chat account passes it on to the users (else dropped unanswered);
// it is no revoked device (else refused, 21403). It returns the answer
// subject and the sender's person, whose buckets the request draws on
// (a person with several devices has one allowance); ok is false when
// the request was dropped or refused.
func (g *gate) admitSender(kind string, m *nats.Msg, sender string, now time.Time) (answer, from string, ok bool) {
	if strings.IndexByte(sender, '.') >= 0 || !g.senderKey(sender, now) {
		g.drop(kind, reasonForged)
		return "", "", false
	}
	answer = m.Reply
	if !ownReply(answer, sender) {
		g.drop(kind, reasonReply)
		return "", "", false
	}
	if from, ok = g.senderPerson(sender, now); !ok {
		g.refuse(kind, answer, reasonRevoked, 403, callout.ErrCodeSenderRevoked, "the sender is a revoked device")
	}
	return answer, from, ok
}

// takeSender takes from the buckets of the sending person from one
// message, copies copies and size bytes (of all the copies together),
// and reports whether all of them could pay (refused requests count
// too).
func (g *gate) takeSender(from string, now time.Time, copies, size float64) bool {
	allowed := true
	g.users.with(from, now, func(b *userBuckets) {
		allowed = b.sendMsgs.take(now, g.lim.SenderRate, g.lim.SenderBurst, 1) &&
			b.sendCopies.take(now, g.lim.SenderCopyRate, g.lim.SenderCopyBurst, copies) &&
			b.sendBytes.take(now, g.lim.SenderBytesRate, g.lim.SenderBytesBurst, size)
	})
	return allowed
}

// takeUnknown charges the person from one message of its send rate for
// a multi-recipient send's recipient that holds no handle.
func (g *gate) takeUnknown(from string, now time.Time) bool {
	allowed := true
	g.users.with(from, now, func(b *userBuckets) {
		allowed = b.sendMsgs.take(now, g.lim.SenderRate, g.lim.SenderBurst, 1)
	})
	return allowed
}

// denial is why the gate stores nothing for one recipient: the label of
// kez_chat_gate_refusals_total, the HTTP-like status and the code of the
// JetStream-style answer, and its description.
type denial struct {
	reason       string
	status, code int
	desc         string
}

var (
	denyNotAKey  = &denial{reasonBadRequest, 400, callout.ErrCodeBadRequest, "the recipient is not a key"}
	denyRegistry = &denial{reasonUnavailable, 503, callout.ErrCodeUnavailable, "registry unavailable"}
	denyRevoked  = &denial{reasonRevokedRcpt, 410, callout.ErrCodeRecipientRevoked, "the recipient is a revoked device"}
	denyUnknown  = &denial{reasonUnknown, 404, callout.ErrCodeUnknownRecipient, "recipient not registered"}
	denyDevices  = &denial{reasonDevices, 409, callout.ErrCodeDevicesChanged, "the recipient's devices changed"}
	denyPair     = &denial{reasonRecipientQuota, 429, callout.ErrCodeRecipientQuota, "over the rate limit for this recipient"}
	denyUnread   = &denial{reasonSenderUnread, 429, callout.ErrCodeSenderUnread, "sender has too many unread messages"}
	denyInbox    = &denial{reasonUnavailable, 503, callout.ErrCodeUnavailable, "inbox unavailable"}
	denySender   = &denial{reasonSenderQuota, 429, callout.ErrCodeSenderQuota, "sender over its rate limit"}
)

// admit checks one recipient device (its "U…" text) of a copy of size
// bytes from the person from (its "U…" text), the same for a send and for
// each recipient of a multi-recipient send: it is a registered key, a
// person or a current device (not a revoked one); when digest (a send's
// Devices header) is set, it matches the recipient person's current
// devices; the sender's bucket for that recipient takes the copy; the
// sender is under its cap of unread messages, which counts the copy; the
// recipient's consumer exists. It returns nil when the copy may be
// stored.
func (g *gate) admit(rcpt, from, digest string, size float64, now time.Time) *denial {
	rec, err := g.lookup(rcpt, now)
	switch {
	case errors.Is(err, errNotAKey):
		return denyNotAKey
	case err != nil:
		g.log.Warn("gate: cannot look up a recipient", "recipient", rcpt, "err", err)
		return denyRegistry
	case rec.state == keyRevoked:
		return denyRevoked
	case rec.state != keyRegistered:
		return denyUnknown
	}
	if digest != "" {
		have, err := g.devicesDigest(rec.person, now)
		switch {
		case err != nil:
			g.log.Warn("gate: cannot list a recipient's devices", "recipient", rcpt, "err", err)
			return denyRegistry
		case digest != have:
			return denyDevices
		}
	}
	// One bucket per recipient device and sending person.
	allowed := true
	g.pairs.with(rcpt+"."+from, now, func(b *pairBuckets) {
		allowed = b.msgs.take(now, g.lim.RecipientRate, g.lim.RecipientBurst, 1) &&
			b.bytes.take(now, g.lim.RecipientBytesRate, g.lim.RecipientBytesBurst, size)
	})
	if !allowed {
		return denyPair
	}
	if !g.underUnread(from, now) {
		return denyUnread
	}
	if err := g.ensureText(rcpt); err != nil {
		g.log.Warn("gate: cannot make a recipient's consumer", "recipient", rcpt, "err", err)
		return denyInbox
	}
	return nil
}

// underUnread reports whether the person from may store one more
// message under its cap of unread messages in all inboxes (what all its
// devices sent together), and counts it. The gate keeps an
// estimate (the last count plus what it stored since) and counts in the
// stream only when the estimate reaches half the cap: then at most every
// 10 s, and while over the cap at most once a second. A failed count lets
// the message through (the rate limits still hold) and is logged.
func (g *gate) underUnread(from string, now time.Time) bool {
	limit := g.lim.SenderUnread
	if limit < 0 {
		return true
	}
	ok, count := false, false
	g.users.with(from, now, func(b *userBuckets) {
		switch {
		case b.unread < limit/2 || b.unread < limit && now.Sub(b.unreadAt) < 10*time.Second:
			b.unread++
			ok = true
		case b.unread >= limit && now.Sub(b.unreadAt) < time.Second:
		default:
			count = true
		}
	})
	if !count {
		return ok
	}
	n, err := g.countUnread(from)
	if err != nil {
		g.log.Warn("gate: cannot count a sender's unread messages", "sender", from, "err", err)
		return true
	}
	g.users.with(from, now, func(b *userBuckets) {
		b.unread, b.unreadAt = n, now
		if ok = n < limit; ok {
			b.unread++
		}
	})
	return ok
}

// countUnread counts the messages of the person with key from (its "U…"
// form) in the stream: the subjects of each of its current devices in
// every inbox, kez.v1.inbox.*.<device>.
func (g *gate) countUnread(from string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	devices := []string{from}
	if person, err := kez.ParsePublicKey(from); err == nil && g.devices != nil {
		keys, err := g.devices(ctx, person)
		if err != nil {
			return 0, err
		}
		devices = devices[:0]
		for _, k := range keys {
			devices = append(devices, k.String())
		}
	}
	st, err := g.js.Stream(ctx, g.stream)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range devices {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(callout.InboxSubjectPrefix+"*."+d))
		if err != nil {
			return 0, err
		}
		for _, c := range info.State.Subjects {
			n += int(c)
		}
	}
	return n, nil
}

// ensureText is ensure(key, 0) for a registered key's text form, without
// parsing it when this gate made the consumer already.
func (g *gate) ensureText(text string) error {
	if _, ok := g.ensured.Load(text); ok {
		return nil
	}
	key, err := kez.ParsePublicKey(text)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return g.ensure(ctx, key, 0)
}

// ensure makes key's consumer if this gate has not made it yet (with
// ackWait, when that is not zero: then an existing consumer is updated to
// it).
func (g *gate) ensure(ctx context.Context, key kez.PublicKey, ackWait time.Duration) error {
	cfg := callout.ConsumerConfig(key, ackWait)
	if v, ok := g.ensured.Load(cfg.Durable); ok && (ackWait == 0 || v.(time.Duration) == cfg.AckWait) {
		return nil
	}
	if ackWait == 0 {
		// Keep whatever AckWait the user asked for before.
		if c, err := g.js.Consumer(ctx, g.stream, cfg.Durable); err == nil {
			g.ensured.Store(cfg.Durable, c.CachedInfo().Config.AckWait)
			return nil
		} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return err
		}
	}
	if _, err := g.js.CreateOrUpdateConsumer(ctx, g.stream, cfg); err != nil {
		return err
	}
	g.ensured.Store(cfg.Durable, cfg.AckWait)
	return nil
}

// maxReply bounds a send's reply subject.
const maxReply = 160

// ownReply reports whether reply is a subject in the reply namespace of
// the user with key text key: _INBOX.<key>.<tokens>, no wildcard, no
// white space, no empty token.
func ownReply(reply, key string) bool {
	rest, ok := strings.CutPrefix(reply, wire.ReplyPrefix)
	if !ok || len(reply) > maxReply {
		return false
	}
	rest, ok = strings.CutPrefix(rest, key)
	if !ok || len(rest) < 2 || rest[0] != '.' {
		return false
	}
	prev := byte('.')
	for _, c := range []byte(rest[1:]) {
		switch {
		case c == '*' || c == '>' || c <= ' ' || c == 0x7f:
			return false
		case c == '.' && prev == '.':
			return false
		}
		prev = c
	}
	return prev != '.'
}
