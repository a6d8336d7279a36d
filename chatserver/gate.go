package chatserver

import (
	"context"
	"encoding/json"
	"errors"
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
// without JetStream; their service imports (send, consumer, pull) arrive
// here, in the chat account, where the gate
//
//   - takes the sender from the subject, where only that user may publish
//     (callout.Permissions), and checks that the request came from a
//     user's own connection: nats-server stamps every request crossing an
//     import with the account it came from (Nats-Request-Info), and an
//     answer the server delivered to a subject a user named as a reply
//     would come from the chat account instead;
//   - answers only the server-made "_R_." reply subject of the import,
//     by publishing to it; what it sends to JetStream carries reply
//     subjects the gate chose (its own inbox for a store acknowledgement,
//     the user's own deliver subject for a pull), so no subject a user
//     picks is acted on by JetStream;
//   - builds every message it forwards afresh (subject, the Nats-Msg-Id
//     header, the body), so no other header or field a user chose
//     reaches JetStream;
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
)

// relayToken starts the gate's own reply subjects for store
// acknowledgements: _INBOX.<gate key>.relay.<the _R_ tokens>.
const relayToken = ".relay."

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

	subs        []*nats.Subscription
	relayPrefix string // _INBOX.<gate key>.relay.
}

type knownEntry struct {
	registered bool
	until      time.Time
}

// gateMetrics are the gate's Prometheus metrics:
//
//	kez_chat_gate_requests_total{kind="send|consumer|pull",result="forwarded|refused|dropped"}
//	kez_chat_gate_refusals_total{reason=…}
//	kez_chat_gate_tracked_users
//	kez_chat_gate_limit{name=…}   the configured limits
type gateMetrics struct {
	requests *prometheus.CounterVec
	refusals *prometheus.CounterVec
}

// Refusal reasons, the label values of kez_chat_gate_refusals_total.
const (
	reasonForged         = "forged_sender"     // the request info does not name the subject's key (dropped)
	reasonReply          = "reply_subject"     // not an import's reply subject (dropped)
	reasonBadRequest     = "bad_request"       // malformed subject or body
	reasonUnknown        = "unknown_recipient" // recipient not registered
	reasonSenderQuota    = "sender_quota"
	reasonRecipientQuota = "recipient_quota"
	reasonSenderUnread   = "sender_unread"
	reasonAPIQuota       = "pull_quota"
	reasonUnavailable    = "unavailable"
)

func newGateMetrics(reg prometheus.Registerer, lim MailLimits, users func() int) (*gateMetrics, error) {
	m := &gateMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_requests_total",
			Help: "Requests users made through the gate, by kind (send, consumer, pull) and result (forwarded, refused with an answer, dropped without one).",
		}, []string{"kind", "result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_refusals_total",
			Help: "Requests the gate refused or dropped, by reason.",
		}, []string{"reason"}),
	}
	for _, k := range []string{"send", "consumer", "pull"} {
		for _, r := range []string{"forwarded", "refused", "dropped"} {
			m.requests.WithLabelValues(k, r)
		}
	}
	for _, r := range []string{reasonForged, reasonReply, reasonBadRequest, reasonUnknown, reasonSenderQuota, reasonRecipientQuota, reasonSenderUnread, reasonAPIQuota, reasonUnavailable} {
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
		"sender_unread": float64(lim.SenderUnread),
	} {
		limit.WithLabelValues(name).Set(v)
	}
	cs := []prometheus.Collector{m.requests, m.refusals, limit,
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

// listen subscribes the gate (in the queue group) on nc, whose inbox
// prefix is _INBOX.<key>.
func (g *gate) listen(key string) error {
	g.relayPrefix = wire.ReplyInbox(key) + relayToken
	for _, h := range []struct {
		subject, queue string
		f              nats.MsgHandler
	}{
		{callout.SendSubjectPrefix + "*.*", gateQueue, g.onSend},
		{callout.ConsumerSubjectPrefix + "*", gateQueue, g.onConsumer},
		{callout.PullSubjectPrefix + "*", gateQueue, g.onPull},
		{g.relayPrefix + ">", "", g.onRelay},
	} {
		var sub *nats.Subscription
		var err error
		if h.queue == "" {
			sub, err = g.nc.Subscribe(h.subject, h.f)
		} else {
			sub, err = g.nc.QueueSubscribe(h.subject, h.queue, h.f)
		}
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

// admit runs the checks every request shares: it came from a user's
// connection, its subject names a key (the sender: no one else may
// publish there) and, for a request that is answered (needReply), its
// reply is an import's. It counts what it drops.
func (g *gate) admit(kind string, m *nats.Msg, subjectKey string, needReply bool) (kez.PublicKey, bool) {
	if needReply && !strings.HasPrefix(m.Reply, respPrefix) {
		g.drop(kind, reasonReply)
		return kez.PublicKey{}, false
	}
	k, err := kez.ParsePublicKey(subjectKey)
	if err != nil || !g.fromUserAccount(m) {
		g.drop(kind, reasonForged)
		return kez.PublicKey{}, false
	}
	return k, true
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

// onSend handles kez.v1.send.<recipient>.<sender>.
func (g *gate) onSend(m *nats.Msg) {
	tok := strings.Split(m.Subject, ".")
	if len(tok) != 5 {
		g.drop("send", reasonBadRequest)
		return
	}
	// The subject's tokens are the keys' text form: no need to encode
	// them again on this path (admit checks the sender's is a key).
	sender, rcpt := tok[4], tok[3]
	if _, ok := g.admit("send", m, sender, false); !ok {
		return
	}
	// Where the answer goes: the sender's own acknowledgement subject,
	// when the send names a token (the stream answers there directly),
	// or the import's reply subject (the gate relays the stream's answer,
	// onRelay).
	var answer, streamReply string
	switch t := m.Header.Get(wire.AnswerTo); {
	case t != "":
		if !deliverToken(t) {
			g.drop("send", reasonBadRequest)
			return
		}
		answer = callout.AckedSubjectPrefix + sender + "." + t
		streamReply = answer
	case strings.HasPrefix(m.Reply, respPrefix):
		answer, streamReply = m.Reply, g.relayPrefix+m.Reply[len(respPrefix):]
	default:
		g.drop("send", reasonReply)
		return
	}
	to, err := kez.ParsePublicKey(rcpt)
	if err != nil {
		g.refuse("send", answer, reasonBadRequest, 400, callout.ErrCodeBadRequest, "the recipient is not a key")
		return
	}
	now := g.now()
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
	registered, err := g.registered(to, rcpt, now)
	switch {
	case err != nil:
		g.log.Warn("gate: cannot look up a recipient", "recipient", to, "err", err)
		g.refuse("send", answer, reasonUnavailable, 503, callout.ErrCodeUnavailable, "registry unavailable")
		return
	case !registered:
		g.refuse("send", answer, reasonUnknown, 404, callout.ErrCodeUnknownRecipient, "recipient not registered")
		return
	}
	g.pairs.with(rcpt+"."+sender, now, func(b *pairBuckets) {
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
	if err := g.ensure(to, 0); err != nil {
		g.log.Warn("gate: cannot make a recipient's consumer", "recipient", to, "err", err)
		g.refuse("send", answer, reasonUnavailable, 503, callout.ErrCodeUnavailable, "inbox unavailable")
		return
	}
	out := nats.NewMsg(callout.InboxSubjectPrefix + rcpt + "." + sender)
	if id := m.Header.Get(jetstream.MsgIDHeader); id != "" && len(id) <= maxMsgID {
		// The stream's duplicate window is shared by everyone: the
		// sender's key keeps one sender's IDs from shadowing another's.
		out.Header.Set(jetstream.MsgIDHeader, sender+"-"+id)
	}
	out.Data, out.Reply = m.Data, streamReply
	if err := g.nc.PublishMsg(out); err != nil {
		g.refuse("send", answer, reasonUnavailable, 503, callout.ErrCodeUnavailable, "inbox unavailable")
		return
	}
	g.forwarded("send")
}

// onRelay passes the stream's answer to a stored message on to the
// import reply subject its own subject names.
func (g *gate) onRelay(m *nats.Msg) {
	rest, ok := strings.CutPrefix(m.Subject, g.relayPrefix)
	if !ok || rest == "" {
		return
	}
	g.nc.Publish(respPrefix+rest, m.Data)
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

// registered reports whether key (text, its "U…" form) holds a handle,
// from a short-lived cache.
func (g *gate) registered(key kez.PublicKey, text string, now time.Time) (bool, error) {
	var hit, registered bool
	g.known.with(text, now, func(e *knownEntry) {
		if now.Before(e.until) {
			hit, registered = true, e.registered
		}
	})
	if hit {
		return registered, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := g.dir.Lookup(ctx, key)
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

// ensure makes key's consumer if this gate has not made it yet (with
// ackWait, when that is not zero: then an existing consumer is updated to
// it).
func (g *gate) ensure(key kez.PublicKey, ackWait time.Duration) error {
	cfg := callout.ConsumerConfig(key, ackWait)
	if v, ok := g.ensured.Load(cfg.Durable); ok && (ackWait == 0 || v.(time.Duration) == cfg.AckWait) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
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
	key, ok := g.ownRequest("consumer", m, true)
	if !ok {
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
	info, err := g.consumerInfo(key, wait)
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
func (g *gate) consumerInfo(key kez.PublicKey, ackWait time.Duration) (*jetstream.ConsumerInfo, error) {
	if err := g.ensure(key, ackWait); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := g.js.Consumer(ctx, g.stream, callout.ConsumerName(key))
	if err != nil {
		g.ensured.Delete(callout.ConsumerName(key)) // deleted behind the gate's back: make it again next time
		return nil, err
	}
	return c.CachedInfo(), nil
}

// ownRequest admits a request on kez.v1.<kind>.<key>, a subject that
// names only its sender, and returns the key.
func (g *gate) ownRequest(kind string, m *nats.Msg, needReply bool) (kez.PublicKey, bool) {
	tok := strings.Split(m.Subject, ".")
	if len(tok) != 4 {
		g.drop(kind, reasonBadRequest)
		return kez.PublicKey{}, false
	}
	return g.admit(kind, m, tok[3], needReply)
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
// not answered: what the pull delivers is the answer.
func (g *gate) onPull(m *nats.Msg) {
	key, ok := g.ownRequest("pull", m, false)
	if !ok {
		return
	}
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
	g.forwarded("pull")
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
