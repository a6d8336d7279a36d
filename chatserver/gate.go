package chatserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The gate stands between users and JetStream. Users live in an account
// without JetStream and hold no JetStream subject. Their sends, pulls and
// acknowledgements cross into the chat account as streams (the user
// account exports kez.v1.send.>, kez.v1.pull.> and kez.v1.ack.> to it
// alone), their consumer requests as a service import; here the gate
//
//   - takes the sender from the subject, where only that user may publish
//     (callout.Permissions). Nothing else reaches these subjects in the
//     chat account: nats-server never passes a message that came through
//     a service import (an answer to a reply subject a user chose, say)
//     on to a stream export, and only the chat-server's own key and the
//     operator's admin login live in the chat account. The admin may
//     publish none of these subjects, but may name one as the reply
//     subject of a request it may make, and the server's answer (JSON it
//     does not choose) then lands here: the gate drops it before it costs
//     the user named anything (an acknowledgement line is charged only
//     once it parses). A consumer request, a service import, must also
//     carry the user account's stamp (Nats-Request-Info), which
//     nats-server writes on every request crossing an import;
//   - never answers on a subject outside the sender's own: a send is
//     answered on its reply subject only if that is in the sender's reply
//     namespace _INBOX.<sender>.… (which the chat account passes on to
//     the users as a stream; the chat-server's own replies use another
//     prefix), a pull by what it delivers to kez.v1.deliver.<key>.<token>,
//     a consumer request only on the import's server-made "_R_." reply
//     subject. What it sends to JetStream carries reply subjects the gate
//     chose or checked, so no subject a user picks is acted on by
//     JetStream in the chat account;
//   - builds every message it forwards afresh (subject, the Nats-Msg-Id
//     header, the body), so no other header or field a user chose
//     reaches JetStream;
//   - passes on an acknowledgement only when it names a delivery of the
//     sender's own consumer ($JS.ACK.<stream>.<sender>.<five numbers>)
//     with a verb it knows (+ACK, -NAK with or without a delay, +TERM,
//     +WPI), without a reply subject: no +NXT (a pull request that would
//     bypass the pull bounds below), no reasons, no other body;
//   - stores mail only for registered recipients, whose consumer it makes
//     first, within the sender's and the recipient's rate limits.
//
// docs/security.md explains the design; docs/spec/chat.md the wire.

// gateQueue is the queue group the gate's subscriptions share across
// chat-server replicas.
const gateQueue = "kez-gate"

// respPrefix starts every reply subject nats-server makes for a service
// import's request.
const respPrefix = "_R_."

// maxMsgID bounds the Nats-Msg-Id the gate passes on.
const maxMsgID = 128

// Bounds of a pull request the gate forwards.
const (
	maxPullBatch   = 1024
	maxPullExpires = time.Minute
	// maxNoWaitExpires bounds the expiry of a no-wait pull.
	maxNoWaitExpires = time.Second
	maxPullBody      = 1024
	// minPullHeartbeat is the shortest idle heartbeat a pull may ask for.
	// nats-server sets none for pulls: a heartbeat of 1 ns makes the
	// consumer send one about every millisecond for as long as the pull
	// waits, from the stream's outgoing queue, which carries everyone's
	// acknowledgements and deliveries.
	minPullHeartbeat = time.Second
)

// Bounds of a batch of acknowledgements (kez.v1.ack.<key>).
const (
	maxAckLines = wire.MaxAckLines
	maxAckBody  = wire.MaxAckBytes
)

type gate struct {
	nc          *nats.Conn
	js          jetstream.JetStream
	stream      string
	userAccount string
	dir         callout.Directory
	lim         MailLimits
	now         func() time.Time
	log         *slog.Logger
	m           *gateMetrics

	users   *tracker[userBuckets]
	pairs   *tracker[pairBuckets] // recipient + "." + sender
	known   *tracker[knownEntry]
	ensured sync.Map // consumer name → time.Duration (the AckWait it was made with)

	subs []*nats.Subscription
	// Counters of the hot path, looked up once.
	sendsForwarded, pullsForwarded, acksForwarded prometheus.Counter
	ackLines                                      [3]prometheus.Counter // by ackResults
}

type knownEntry struct {
	registered bool
	until      time.Time
}

// gateMetrics are the gate's Prometheus metrics:
//
//	kez_chat_gate_requests_total{kind="send|consumer|pull|ack",result="forwarded|refused|dropped"}
//	kez_chat_gate_refusals_total{reason=…}
//	kez_chat_gate_ack_lines_total{result="forwarded|dropped|limited"}
//	kez_chat_gate_tracked_users
//	kez_chat_gate_limit{name=…}   the configured limits
type gateMetrics struct {
	requests *prometheus.CounterVec
	refusals *prometheus.CounterVec
	ackLines *prometheus.CounterVec
}

// ackResults are the label values of kez_chat_gate_ack_lines_total: lines
// passed on to JetStream, dropped as malformed or not the sender's own,
// and dropped over the sender's acknowledgement rate.
var ackResults = [3]string{"forwarded", "dropped", "limited"}

const (
	ackForwarded = iota
	ackDropped
	ackLimited
)

// Refusal reasons, the label values of kez_chat_gate_refusals_total.
const (
	reasonForged         = "forged_sender"     // the subject or the request info does not name a key (dropped)
	reasonReply          = "reply_subject"     // no answer subject the gate may use (dropped)
	reasonBadRequest     = "bad_request"       // malformed subject or body
	reasonUnknown        = "unknown_recipient" // recipient not registered
	reasonSenderQuota    = "sender_quota"
	reasonRecipientQuota = "recipient_quota"
	reasonSenderUnread   = "sender_unread"
	reasonAPIQuota       = "pull_quota"
	reasonAckQuota       = "ack_quota" // every line of a batch over the acknowledgement rate (dropped)
	reasonUnavailable    = "unavailable"
)

func newGateMetrics(reg prometheus.Registerer, lim MailLimits, users func() int) (*gateMetrics, error) {
	m := &gateMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_requests_total",
			Help: "Requests users made through the gate, by kind (send, consumer, pull, ack: a batch of acknowledgements) and result (forwarded, refused with an answer, dropped without one; a batch is forwarded when any of its lines was).",
		}, []string{"kind", "result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_refusals_total",
			Help: "Requests the gate refused or dropped, by reason.",
		}, []string{"reason"}),
		ackLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_ack_lines_total",
			Help: "Acknowledgement lines users sent to the gate, by result: forwarded to JetStream, dropped (malformed, not the sender's own consumer, or in a batch over the size limits) or limited (over the sender's acknowledgement rate).",
		}, []string{"result"}),
	}
	for _, r := range ackResults {
		m.ackLines.WithLabelValues(r)
	}
	for _, k := range []string{"send", "consumer", "pull", "ack"} {
		for _, r := range []string{"forwarded", "refused", "dropped"} {
			m.requests.WithLabelValues(k, r)
		}
	}
	for _, r := range []string{reasonForged, reasonReply, reasonBadRequest, reasonUnknown, reasonSenderQuota, reasonRecipientQuota, reasonSenderUnread, reasonAPIQuota, reasonAckQuota, reasonUnavailable} {
		m.refusals.WithLabelValues(r)
	}
	limit := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kez_chat_gate_limit",
		Help: "The gate's configured limits (rates per second, bursts, counts); -1 is off.",
	}, []string{"name"})
	for name, v := range map[string]float64{
		"sender_rate": lim.SenderRate, "sender_burst": lim.SenderBurst,
		"sender_bytes_rate": lim.SenderBytesRate, "sender_bytes_burst": lim.SenderBytesBurst,
		"recipient_rate": lim.RecipientRate, "recipient_burst": lim.RecipientBurst,
		"recipient_bytes_rate": lim.RecipientBytesRate, "recipient_bytes_burst": lim.RecipientBytesBurst,
		"api_rate": lim.APIRate, "api_burst": lim.APIBurst, "max_tracked": float64(lim.MaxTracked),
		"ack_rate": lim.AckRate, "ack_burst": lim.AckBurst,
		"sender_unread": float64(lim.SenderUnread),
	} {
		limit.WithLabelValues(name).Set(v)
	}
	cs := []prometheus.Collector{m.requests, m.refusals, m.ackLines, limit,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kez_chat_gate_tracked_users",
			Help: "Users whose rate buckets the gate keeps.",
		}, func() float64 { return float64(users()) }),
	}
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// listen subscribes the gate (in the queue group) on nc.
func (g *gate) listen() error {
	g.sendsForwarded = g.m.requests.WithLabelValues("send", "forwarded")
	g.pullsForwarded = g.m.requests.WithLabelValues("pull", "forwarded")
	g.acksForwarded = g.m.requests.WithLabelValues("ack", "forwarded")
	for i, r := range ackResults {
		g.ackLines[i] = g.m.ackLines.WithLabelValues(r)
	}
	for _, h := range []struct {
		subject string
		f       nats.MsgHandler
	}{
		{callout.SendSubjectPrefix + "*.*", g.onSend},
		{callout.ConsumerSubjectPrefix + "*", g.onConsumer},
		{callout.PullSubjectPrefix + "*", g.onPull},
		{callout.AckSubjectPrefix + "*", g.onAck},
	} {
		sub, err := g.nc.QueueSubscribe(h.subject, gateQueue, h.f)
		if err != nil {
			g.close()
			return err
		}
		// A burst from one user must not make the gate a slow consumer
		// that drops everyone's requests.
		if err := sub.SetPendingLimits(1<<16, 256<<20); err != nil {
			g.close()
			return err
		}
		g.subs = append(g.subs, sub)
	}
	return nil
}

func (g *gate) close() {
	for _, s := range g.subs {
		s.Unsubscribe()
	}
	g.subs = nil
}

// requestInfo is the part of nats-server's Nats-Request-Info the gate reads.
type requestInfo struct {
	Account string `json:"acc"`
}

// fromUserAccount reports whether m came from a connection in the user
// account: false for a message the server delivered from the chat account
// (an answer chained into an import), another account, or a missing or
// doubled header.
func (g *gate) fromUserAccount(m *nats.Msg) bool {
	var ri requestInfo
	v := m.Header.Values(callout.RequestInfoHeader)
	return len(v) == 1 && json.Unmarshal([]byte(v[0]), &ri) == nil && ri.Account == g.userAccount
}

// senderKey checks that the subject token t, which only that user may
// publish under, is a key. It is checked in full once per tracked user.
func (g *gate) senderKey(t string, now time.Time) bool {
	ok := false
	g.users.with(t, now, func(b *userBuckets) {
		if !b.checked {
			_, err := kez.ParsePublicKey(t)
			b.checked = err == nil
		}
		ok = b.checked
	})
	return ok
}

func (g *gate) drop(kind, reason string) {
	g.log.Debug("gate: dropped", "kind", kind, "reason", reason)
	g.m.requests.WithLabelValues(kind, "dropped").Inc()
	g.m.refusals.WithLabelValues(reason).Inc()
}

// refuse answers a request, on the subject answer, with a JetStream API
// error and counts it.
func (g *gate) refuse(kind, answer, reason string, status, code int, description string) {
	g.m.requests.WithLabelValues(kind, "refused").Inc()
	g.m.refusals.WithLabelValues(reason).Inc()
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"code": status, "err_code": code, "description": description}})
	g.nc.Publish(answer, body)
}

func (g *gate) forwarded(kind string) { g.m.requests.WithLabelValues(kind, "forwarded").Inc() }

// onSend handles kez.v1.send.<recipient>.<sender>, which crossed from the
// user account as a stream: its reply subject, if any, is not used.
func (g *gate) onSend(m *nats.Msg) {
	// The subject's tokens are the keys' text form: the hot path keeps
	// them as text (the recipient is parsed when it is looked up).
	rest, _ := strings.CutPrefix(m.Subject, callout.SendSubjectPrefix)
	rcpt, sender, ok := strings.Cut(rest, ".")
	now := g.now()
	if !ok || strings.IndexByte(sender, '.') >= 0 || !g.senderKey(sender, now) {
		g.drop("send", reasonForged)
		return
	}
	// The answer goes to the send's reply subject, which must be in the
	// sender's own reply namespace (_INBOX.<sender>.…): the stream answers
	// there directly, and the chat account passes it on to the users.
	answer := m.Reply
	if !ownReply(answer, sender) {
		g.drop("send", reasonReply)
		return
	}
	size := float64(len(m.Data))
	allowed := true
	g.users.with(sender, now, func(b *userBuckets) {
		allowed = b.sendMsgs.take(now, g.lim.SenderRate, g.lim.SenderBurst, 1) &&
			b.sendBytes.take(now, g.lim.SenderBytesRate, g.lim.SenderBytesBurst, size)
	})
	if !allowed {
		g.refuse("send", answer, reasonSenderQuota, 429, callout.ErrCodeSenderQuota, "sender over its rate limit")
		return
	}
	registered, err := g.registered(rcpt, now)
	switch {
	case errors.Is(err, errNotAKey):
		g.refuse("send", answer, reasonBadRequest, 400, callout.ErrCodeBadRequest, "the recipient is not a key")
		return
	case err != nil:
		g.log.Warn("gate: cannot look up a recipient", "recipient", rcpt, "err", err)
		g.refuse("send", answer, reasonUnavailable, 503, callout.ErrCodeUnavailable, "registry unavailable")
		return
	case !registered:
		g.refuse("send", answer, reasonUnknown, 404, callout.ErrCodeUnknownRecipient, "recipient not registered")
		return
	}
	g.pairs.with(rest, now, func(b *pairBuckets) {
		allowed = b.msgs.take(now, g.lim.RecipientRate, g.lim.RecipientBurst, 1) &&
			b.bytes.take(now, g.lim.RecipientBytesRate, g.lim.RecipientBytesBurst, size)
	})
	if !allowed {
		g.refuse("send", answer, reasonRecipientQuota, 429, callout.ErrCodeRecipientQuota, "over the rate limit for this recipient")
		return
	}
	if !g.underUnread(sender, now) {
		g.refuse("send", answer, reasonSenderUnread, 429, callout.ErrCodeSenderUnread, "sender has too many unread messages")
		return
	}
	if err := g.ensureText(rcpt); err != nil {
		g.log.Warn("gate: cannot make a recipient's consumer", "recipient", rcpt, "err", err)
		g.refuse("send", answer, reasonUnavailable, 503, callout.ErrCodeUnavailable, "inbox unavailable")
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

// underUnread reports whether from may store one more message under its
// cap of unread messages in all inboxes, and counts it. The gate keeps an
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

// countUnread counts the messages of the sender with key from (its "U…"
// form) in the stream: its subjects in every inbox, kez.v1.inbox.*.<from>.
func (g *gate) countUnread(from string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := g.js.Stream(ctx, g.stream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(callout.InboxSubjectPrefix+"*."+from))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range info.State.Subjects {
		n += int(c)
	}
	return n, nil
}

// errNotAKey: a recipient token that is not a key.
var errNotAKey = errors.New("not a key")

// registered reports whether the key with text form text holds a handle,
// from a short-lived cache; errNotAKey if text is not a key.
func (g *gate) registered(text string, now time.Time) (bool, error) {
	var hit, registered bool
	g.known.with(text, now, func(e *knownEntry) {
		if now.Before(e.until) {
			hit, registered = true, e.registered
		}
	})
	if hit {
		return registered, nil
	}
	key, err := kez.ParsePublicKey(text)
	if err != nil {
		return false, errNotAKey
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = g.dir.Lookup(ctx, key)
	switch {
	case errors.Is(err, callout.ErrUnknownKey):
		registered = false
	case err != nil:
		return false, err
	default:
		registered = true
	}
	ttl := g.lim.KnownTTL
	if !registered {
		ttl /= 10
	}
	g.known.with(text, now, func(e *knownEntry) { *e = knownEntry{registered, now.Add(ttl)} })
	return registered, nil
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

// onConsumer handles kez.v1.consumer.<key>: the gate makes (or updates)
// the user's durable consumer, with the AckWait the request's header asks
// for, and answers {"num_pending":N,"num_ack_pending":M} or an error.
func (g *gate) onConsumer(m *nats.Msg) {
	// A service import: answered on its "_R_." reply subject only, and
	// only when nats-server stamped it as coming from the user account.
	t, ok := subjectKey(m.Subject, callout.ConsumerSubjectPrefix)
	if !ok || !strings.HasPrefix(m.Reply, respPrefix) || !g.fromUserAccount(m) {
		g.drop("consumer", reasonForged)
		return
	}
	key, err := kez.ParsePublicKey(t)
	if err != nil {
		g.drop("consumer", reasonForged)
		return
	}
	if !g.takePull(key) {
		g.refuse("consumer", m.Reply, reasonAPIQuota, 429, callout.ErrCodeSenderQuota, "too many consumer requests")
		return
	}
	var wait time.Duration
	if v := m.Header.Get(callout.AckWaitHeader); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			g.refuse("consumer", m.Reply, reasonBadRequest, 400, callout.ErrCodeBadRequest, "bad "+callout.AckWaitHeader)
			return
		}
		wait = d
	}
	// Answer within the import's response threshold, an error if need
	// be (the client asks again), rather than after nats-server dropped
	// the way back.
	ctx, cancel := context.WithTimeout(context.Background(), callout.ResponseThreshold-time.Second)
	defer cancel()
	info, err := g.consumerInfo(ctx, key, wait)
	if err != nil {
		g.log.Warn("gate: cannot make a user's consumer", "user", key, "err", err)
		g.refuse("consumer", m.Reply, reasonUnavailable, 503, callout.ErrCodeUnavailable, "inbox unavailable")
		return
	}
	body, _ := json.Marshal(map[string]uint64{"num_pending": info.NumPending, "num_ack_pending": uint64(info.NumAckPending)})
	g.nc.Publish(m.Reply, body)
	g.forwarded("consumer")
}

// consumerInfo makes key's consumer if need be and returns its state.
func (g *gate) consumerInfo(ctx context.Context, key kez.PublicKey, ackWait time.Duration) (*jetstream.ConsumerInfo, error) {
	if err := g.ensure(ctx, key, ackWait); err != nil {
		return nil, err
	}
	c, err := g.js.Consumer(ctx, g.stream, callout.ConsumerName(key))
	if err != nil {
		g.ensured.Delete(callout.ConsumerName(key)) // deleted behind the gate's back: make it again next time
		return nil, err
	}
	return c.CachedInfo(), nil
}

// subjectKey returns the key token of kez.v1.<kind>.<key>, a subject
// that names only its sender.
func subjectKey(subject, prefix string) (string, bool) {
	t, ok := strings.CutPrefix(subject, prefix)
	return t, ok && t != "" && strings.IndexByte(t, '.') < 0
}

// takePull takes a token from key's pull bucket.
func (g *gate) takePull(key kez.PublicKey) bool {
	now := g.now()
	allowed := true
	g.users.with(key.String(), now, func(b *userBuckets) { allowed = b.api.take(now, g.lim.APIRate, g.lim.APIBurst, 1) })
	return allowed
}

// onPull handles kez.v1.pull.<key>: a pull request for the user's own
// consumer, passed on to JetStream (clamped) with the reply
// kez.v1.deliver.<key>.<token>, the user's own deliver subject. It is
// not answered: what the pull delivers is the answer. It crossed from the
// user account as a stream: its reply subject, if any, is not used.
func (g *gate) onPull(m *nats.Msg) {
	t, ok := subjectKey(m.Subject, callout.PullSubjectPrefix)
	if !ok || !g.senderKey(t, g.now()) {
		g.drop("pull", reasonForged)
		return
	}
	key, _ := kez.ParsePublicKey(t)
	var req wire.PullRequest
	if len(m.Data) > maxPullBody || json.Unmarshal(m.Data, &req) != nil || !deliverToken(req.Deliver) {
		g.drop("pull", reasonBadRequest)
		return
	}
	if !g.takePull(key) {
		g.drop("pull", reasonAPIQuota)
		return
	}
	req.Batch = min(max(req.Batch, 1), maxPullBatch)
	switch {
	case req.NoWait:
		// What is waiting now. With a short expiry the consumer also
		// delivers what the stream stored a moment before but has not
		// signalled to it yet; without one it answers 404 at once.
		req.Expires = min(max(req.Expires, 0), int64(maxNoWaitExpires))
	case req.Expires <= 0 || req.Expires > int64(maxPullExpires):
		req.Expires = int64(maxPullExpires)
	}
	if req.Heartbeat > 0 {
		req.Heartbeat = max(req.Heartbeat, int64(minPullHeartbeat))
	}
	if req.Heartbeat < 0 || req.Heartbeat > req.Expires/2 {
		req.Heartbeat = 0
	}
	body, _ := json.Marshal(struct {
		Batch     int   `json:"batch"`
		Expires   int64 `json:"expires,omitempty"`
		NoWait    bool  `json:"no_wait,omitempty"`
		Heartbeat int64 `json:"idle_heartbeat,omitempty"`
	}{req.Batch, req.Expires, req.NoWait, req.Heartbeat})
	out := nats.NewMsg("$JS.API.CONSUMER.MSG.NEXT." + g.stream + "." + callout.ConsumerName(key))
	out.Data, out.Reply = body, callout.DeliverSubjectPrefix+key.String()+"."+req.Deliver
	if err := g.nc.PublishMsg(out); err != nil {
		g.drop("pull", reasonUnavailable)
		return
	}
	g.pullsForwarded.Inc()
}

// onAck handles kez.v1.ack.<key>: a batch of the user's acknowledgements,
// one line each, "<verb> <ack subject>" (wire.AckSubjectPrefix). Each line
// naming a delivery of the user's own consumer with a verb the gate knows
// is published to its subject, with the body JetStream reads and no reply
// subject; any other line is dropped and counted, at no cost to the
// user's acknowledgement bucket. Acknowledgements beyond the bucket are
// dropped too (JetStream delivers those
// messages again after the ack wait). It is not answered. It crossed from
// the user account as a stream: its reply subject, if any, is not used.
func (g *gate) onAck(m *nats.Msg) {
	t, ok := subjectKey(m.Subject, callout.AckSubjectPrefix)
	now := g.now()
	if !ok || !g.senderKey(t, now) {
		g.drop("ack", reasonForged)
		return
	}
	body := m.Data
	if len(body) > 0 && body[len(body)-1] == '\n' {
		body = body[:len(body)-1] // the last line's end
	}
	n := bytes.Count(body, []byte{'\n'}) + 1
	if len(m.Data) == 0 || len(m.Data) > maxAckBody || n > maxAckLines {
		if len(m.Data) > 0 {
			g.ackLines[ackDropped].Add(float64(n))
		}
		g.drop("ack", reasonBadRequest)
		return
	}
	// Only lines that are acknowledgements cost the user a token: what
	// reaches this subject is not always the user's own (the operator's
	// admin login may name it as a reply subject, and the server's answer
	// lands here), and junk must not spend the user's allowance.
	prefix := "$JS.ACK." + g.stream + "." + t + "."
	var counts [3]int
	type ack struct {
		subject string
		verb    []byte
	}
	var acks []ack // grown only for valid lines: junk allocates nothing
	for range n {
		var line []byte
		line, body, _ = bytes.Cut(body, []byte{'\n'})
		subject, verb, ok := ackLine(line, prefix)
		if !ok {
			counts[ackDropped]++
			continue
		}
		acks = append(acks, ack{subject, verb})
	}
	var allowed int
	if len(acks) > 0 {
		g.users.with(t, now, func(b *userBuckets) { allowed = b.acks.takeUpTo(now, g.lim.AckRate, g.lim.AckBurst, len(acks)) })
	}
	counts[ackLimited] = len(acks) - allowed
	for _, a := range acks[:allowed] {
		if err := g.nc.Publish(a.subject, a.verb); err != nil {
			counts[ackDropped]++
			continue
		}
		counts[ackForwarded]++
	}
	for i, c := range counts {
		if c > 0 {
			g.ackLines[i].Add(float64(c))
		}
	}
	switch {
	case counts[ackForwarded] > 0:
		g.acksForwarded.Inc()
	case counts[ackLimited] > 0:
		g.drop("ack", reasonAckQuota)
	default:
		g.drop("ack", reasonBadRequest)
	}
}

// ackLine parses one acknowledgement line, "<verb> <subject>", where the
// subject must be prefix (the sender's own consumer's "$JS.ACK.<stream>.
// <key>.") followed by five numbers (delivered, stream and consumer
// sequence, time, pending): the nine-token form nats-server delivers with.
// It returns the subject and the body JetStream reads: +ACK, -NAK, -NAK
// {"delay":ns} for "-NAK <Go duration>" (a positive one), +TERM or +WPI.
func ackLine(line []byte, prefix string) (subject string, body []byte, ok bool) {
	verb, rest, _ := bytes.Cut(line, []byte{' '})
	switch string(verb) {
	case wire.AckVerbAck, wire.AckVerbTerm, wire.AckVerbProgress:
		body = verb
	case wire.AckVerbNak:
		body = verb
		if d, subj, found := bytes.Cut(rest, []byte{' '}); found {
			delay, err := time.ParseDuration(string(d))
			if err != nil || delay < 0 {
				return "", nil, false
			}
			if delay > 0 {
				body = fmt.Appendf(nil, `%s {"delay":%d}`, wire.AckVerbNak, delay.Nanoseconds())
			}
			rest = subj
		}
	default:
		return "", nil, false
	}
	if !bytes.HasPrefix(rest, []byte(prefix)) || !ackNumbers(rest[len(prefix):]) {
		return "", nil, false
	}
	return string(rest), body, true
}

// ackNumbers reports whether s is five dot-separated decimal numbers of
// 1 to 20 digits each.
func ackNumbers(s []byte) bool {
	tokens, digits := 1, 0
	for _, c := range s {
		switch {
		case c == '.':
			if digits == 0 {
				return false
			}
			tokens, digits = tokens+1, 0
		case '0' <= c && c <= '9':
			if digits++; digits > 20 {
				return false
			}
		default:
			return false
		}
	}
	return tokens == 5 && digits > 0
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

// deliverToken reports whether t may end a deliver subject: 1 to 32
// ASCII letters and digits.
func deliverToken(t string) bool {
	if len(t) == 0 || len(t) > 32 {
		return false
	}
	for _, c := range []byte(t) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
