package chatserver

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// The gate stands between users and JetStream. Users live in an account
// without JetStream and hold no JetStream subject. Their sends (one to
// one and multi-recipient), pulls and acknowledgements cross into the
// chat account as streams (the user account exports kez.v1.send.>,
// kez.v1.msend.>, kez.v1.pull.> and kez.v1.ack.> to it alone), their
// consumer requests as a service import; here the gate
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
//     first, within the sender's and the recipient's rate limits; a
//     multi-recipient send (gate_msend.go) is checked per recipient
//     exactly as a send is, and answered once.
//
// docs/security.md explains the design; docs/spec/chat.md the wire.
// gateQueue is the queue group the gate's subscriptions share across
// chat-server replicas.
const gateQueue = "kez-gate"

// respPrefix starts every reply subject nats-server makes for a service
// import's request.
const respPrefix = "_R_."

type gate struct {
	nc *nats.Conn
	js jetstream.JetStream
	// copiesJS stores the copies of multi-recipient sends: at most
	// lim.CopiesInFlight wait for the stream's answer at once.
	copiesJS jetstream.JetStream
	// answering counts the multi-recipient sends waiting for the stream
	// apart from their subscription; a drain waits for them.
	answering sync.WaitGroup
	// maxCopy is the stream's largest message (its MaxMsgSize): a
	// multi-recipient send with a larger payload is refused whole.
	maxCopy     int
	stream      string
	userAccount string
	dir         callout.Directory
	syncDir     func(context.Context) error // waits for dir's view to hold every stored change; nil: dir has none
	resyncMu    sync.Mutex
	resyncKeys  map[kez.PublicKey]struct{} // keys to forget again after the next sync
	resyncing   bool                       // a forgetAfterSync goroutine runs
	// devices lists a person's current devices (the person's own key
	// first), for counting what the person has unread; nil: the person's
	// own key only.
	devices func(ctx context.Context, person kez.PublicKey) ([]kez.PublicKey, error)
	lim     MailLimits
	now     func() time.Time
	log     *slog.Logger
	m       *gateMetrics
	notices prometheus.Counter // revocation notices from other chat-servers
	self    string             // this Start's ID in its own revocation notices

	users   *tracker[userBuckets]
	pairs   *tracker[pairBuckets] // recipient + "." + sender
	known   *tracker[knownEntry]
	seen    *tracker[seenEntry]   // person → their devices' consumer information (gate_seen.go)
	digests *tracker[digestEntry] // person → the digest of their current devices (gate_digest.go)
	// digestEpoch moves each time digests are forgotten: a lookup that
	// began before keeps its answer out of the cache (gate_digest.go).
	digestEpoch atomic.Uint64
	ensured     sync.Map // consumer name → time.Duration (the AckWait it was made with)
	read        *readRemover
	readM       readMetrics
	purges      atomic.Bool // the stream needs the gate to remove read mail (callout.RemovesReadMail)

	subs []*nats.Subscription
	// Counters of the hot path, looked up once.
	sendsForwarded, pullsForwarded, acksForwarded prometheus.Counter
	ackLines                                      [3]prometheus.Counter // by ackResults
}

// knownEntry is what the registry said of a key, until when the gate
// trusts it.
type knownEntry struct {
	state  keyState
	person string // the key's person (the key itself for a person); "" unless registered
	until  time.Time
}

// keyState is a key in the registry: unknown, a person or a current
// device of one, or a revoked device.
type keyState uint8

const (
	keyUnknown keyState = iota
	keyRegistered
	keyRevoked
)

// gateMetrics are the gate's Prometheus metrics:
//
//	kez_chat_gate_requests_total{kind="send|msend|consumer|pull|ack",result="forwarded|refused|dropped"}
//	kez_chat_gate_refusals_total{reason=…}   requests, and copies of multi-recipient sends, refused
//	kez_chat_gate_msend_copies_total{result="stored|duplicate|refused"}
//	kez_chat_gate_msends_in_flight   multi-recipient sends waiting for the stream's answers
//	kez_chat_gate_ack_lines_total{result="forwarded|dropped|limited"}
//	kez_chat_gate_tracked_users
//	kez_chat_gate_limit{name=…}   the configured limits
type gateMetrics struct {
	requests *prometheus.CounterVec
	refusals *prometheus.CounterVec
	ackLines *prometheus.CounterVec
	copies   *prometheus.CounterVec
	inFlight prometheus.Gauge
}

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
	reasonRevoked        = "revoked_device" // a revoked device sent, pulled or acknowledged
	reasonRevokedRcpt    = "revoked_recipient"
	reasonDevices        = "devices_changed"
	reasonStream         = "stream_refused" // the stream refused a copy of a multi-recipient send, or did not answer
)

func newGateMetrics(reg prometheus.Registerer, lim MailLimits, users func() int) (*gateMetrics, error) {
	m := &gateMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_requests_total",
			Help: "Requests users made through the gate, by kind (send, msend: a multi-recipient send, consumer, pull, ack: a batch of acknowledgements) and result (forwarded, refused with an answer, dropped without one; a batch, or a multi-recipient send, is forwarded when any of its lines or copies was).",
		}, []string{"kind", "result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_refusals_total",
			Help: "Requests the gate refused or dropped, and copies of multi-recipient sends it refused, by reason.",
		}, []string{"reason"}),
		copies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_msend_copies_total",
			Help: "Copies of multi-recipient sends (one per recipient device), by result: stored, duplicate (the stream had it already) or refused (by the gate, reasons in kez_chat_gate_refusals_total, or by the stream).",
		}, []string{"result"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kez_chat_gate_msends_in_flight",
			Help: "Multi-recipient sends whose copies the gate sent to the stream and whose answers it still waits for.",
		}),
		ackLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_chat_gate_ack_lines_total",
			Help: "Acknowledgement lines users sent to the gate, by result: forwarded to JetStream, dropped (malformed, not the sender's own consumer, or in a batch over the size limits) or limited (over the sender's acknowledgement rate).",
		}, []string{"result"}),
	}
	for _, r := range ackResults {
		m.ackLines.WithLabelValues(r)
	}
	for _, r := range copyResults {
		m.copies.WithLabelValues(r)
	}
	for _, k := range []string{"send", "msend", "consumer", "pull", "ack"} {
		for _, r := range []string{"forwarded", "refused", "dropped"} {
			m.requests.WithLabelValues(k, r)
		}
	}
	for _, r := range []string{reasonForged, reasonReply, reasonBadRequest, reasonUnknown, reasonSenderQuota, reasonRecipientQuota, reasonSenderUnread, reasonAPIQuota, reasonAckQuota, reasonUnavailable, reasonRevoked, reasonRevokedRcpt, reasonDevices, reasonStream} {
		m.refusals.WithLabelValues(r)
	}
	limit := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "kez_chat_gate_limit",
		Help: "The gate's configured limits (rates per second, bursts, counts); -1 is off.",
	}, []string{"name"})
	for name, v := range map[string]float64{
		"sender_rate": lim.SenderRate, "sender_burst": lim.SenderBurst,
		"sender_copy_rate": lim.SenderCopyRate, "sender_copy_burst": lim.SenderCopyBurst, "copies_in_flight": float64(lim.CopiesInFlight),
		"sender_bytes_rate": lim.SenderBytesRate, "sender_bytes_burst": lim.SenderBytesBurst,
		"recipient_rate": lim.RecipientRate, "recipient_burst": lim.RecipientBurst,
		"recipient_bytes_rate": lim.RecipientBytesRate, "recipient_bytes_burst": lim.RecipientBytesBurst,
		"api_rate": lim.APIRate, "api_burst": lim.APIBurst, "max_tracked": float64(lim.MaxTracked),
		"ack_rate": lim.AckRate, "ack_burst": lim.AckBurst,
		"sender_unread":     float64(lim.SenderUnread),
		"remove_read_after": float64(lim.RemoveReadAfter), "remove_read_every_seconds": lim.RemoveReadEvery.Seconds(),
		"remove_read_rate": lim.RemoveReadRate,
	} {
		limit.WithLabelValues(name).Set(v)
	}
	cs := []prometheus.Collector{m.requests, m.refusals, m.ackLines, m.copies, m.inFlight, limit,
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
		{callout.MultiSendSubjectPrefix + "*", g.onMultiSend},
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
	// Every replica hears of every revocation: no queue group.
	sub, err := g.nc.Subscribe(wire.RevokedSubject, g.onRevoked)
	if err != nil {
		g.close()
		return err
	}
	g.subs = append(g.subs, sub)
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
