package callout

import (
	"context"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go/jetstream"
)

// InboxConfig describes the inbox stream. The zero value gives the
// defaults noted on each field.
type InboxConfig struct {
	Name              string        // default [DefaultStream]
	MaxAge            time.Duration // default 30 days
	MaxBytes          int64         // default 1 GiB
	MaxMsgSize        int32         // default 64 KiB
	MaxMsgsPerSubject int64         // unread messages per recipient and sender; default 1 000
	Duplicates        time.Duration // Nats-Msg-Id window; default 2 minutes
	Replicas          int           // default 1; use 3 in a cluster
	// MaxConsumers bounds the consumers on the stream: one per user the
	// gate has made one for. Default 1,000,000. (nats-server caps a stream
	// that sets no limit at its default_max_consumers, 1,000 unless the
	// operator's nats.conf says otherwise: the 1,001st user would get no
	// inbox.)
	MaxConsumers int
}

func (c InboxConfig) withDefaults() InboxConfig {
	if c.Name == "" {
		c.Name = DefaultStream
	}
	if c.MaxAge == 0 {
		c.MaxAge = 30 * 24 * time.Hour
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = 1 << 30
	}
	if c.MaxMsgSize == 0 {
		c.MaxMsgSize = 64 << 10
	}
	if c.MaxMsgsPerSubject == 0 {
		c.MaxMsgsPerSubject = 1_000
	}
	if c.Duplicates == 0 {
		c.Duplicates = 2 * time.Minute
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.MaxConsumers == 0 {
		c.MaxConsumers = DefaultMaxConsumers
	}
	return c
}

// DefaultMaxConsumers is [InboxConfig.MaxConsumers]'s default.
const DefaultMaxConsumers = 1_000_000

// StreamConfig returns the JetStream configuration [ProvisionInbox]
// applies: subjects [InboxSubjects], file storage, and the limits of c
// (defaults filled in).
//
// Nothing a user does may evict another user's mail, so the stream never
// discards old messages to make room, and read mail leaves it:
//
//   - Retention is limits, and the chat-server's gate removes what each
//     recipient has acknowledged (everything of theirs at or below their
//     consumer's acknowledgement floor, a purge filtered to their inbox)
//     soon after the acknowledgements, in batches. Interest retention
//     would remove it by itself, but nats-server then checks every
//     consumer of the stream on every acknowledgement: with one consumer
//     per user, an acknowledgement costs time in proportion to the users
//     (docs/performance.md).
//   - Discard is new: a full stream refuses new messages instead of
//     dropping stored ones.
//   - MaxMsgsPerSubject with DiscardNewPerSubject: one sender holds at
//     most that many unread messages in one recipient's inbox; more are
//     refused to that sender alone.
//
// What one sender may store in all is bounded by the gate's rate limits
// (chatserver.MailLimits), so that no sender fills the stream for others.
func (c InboxConfig) StreamConfig() jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:                 c.Name,
		Description:          "KEZ chat inboxes: kez.v1.inbox.<recipient key>.<sender key>, end-to-end encrypted",
		Subjects:             []string{InboxSubjects},
		Retention:            jetstream.LimitsPolicy,
		Storage:              jetstream.FileStorage,
		Discard:              jetstream.DiscardNew,
		DiscardNewPerSubject: true,
		MaxAge:               c.MaxAge,
		MaxBytes:             c.MaxBytes,
		MaxMsgSize:           c.MaxMsgSize,
		MaxMsgsPerSubject:    c.MaxMsgsPerSubject,
		MaxMsgs:              -1,
		MaxConsumers:         c.MaxConsumers,
		Duplicates:           c.Duplicates,
		Replicas:             c.Replicas,
		DenyDelete:           true,
		DenyPurge:            false, // the gate removes read mail with filtered purges
		AllowDirect:          false,
	}
}

// Bounds of a consumer's AckWait (see [ConsumerConfig]).
const (
	DefaultAckWait = 30 * time.Second
	MinAckWait     = 250 * time.Millisecond
	MaxAckWait     = 10 * time.Minute
)

// ConsumerName is the durable consumer of the user with key k: the key.
func ConsumerName(k kez.PublicKey) string { return k.String() }

// ConsumerConfig returns the configuration of the durable pull consumer
// the gate makes for the user with key k: all of k's inbox, explicit
// acknowledgement, redelivery after ackWait (clamped to [MinAckWait,
// MaxAckWait]; 0 means [DefaultAckWait]), at most 1,024 unacknowledged
// messages, and no inactivity limit (a consumer made again would deliver
// again what k acknowledged but the gate has not removed yet).
func ConsumerConfig(k kez.PublicKey, ackWait time.Duration) jetstream.ConsumerConfig {
	if ackWait == 0 {
		ackWait = DefaultAckWait
	}
	ackWait = min(max(ackWait, MinAckWait), MaxAckWait)
	me := k.String()
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName(k),
		Description:   "KEZ inbox of " + me,
		FilterSubject: InboxSubjectPrefix + me + ".>",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 1024,
		MaxWaiting:    64,
	}
}

// ProvisionInbox creates the inbox stream, or updates it to c when it
// exists, and returns it. It is idempotent and safe to call on every
// start of every chat-server replica.
//
// js must reach the chat account. The reference chat-server logs in with
// [Keys.ProvisionerOptions]: the callout itself authorizes that key with
// [GatePermissions], so the operator's nats.conf needs no second
// user and the stream rights stay in this package.
//
// A stream made by a release before limits retention denies purges, which
// JetStream never lets a stream give up: ProvisionInbox keeps such a
// stream on interest retention (JetStream removes read mail itself, at a
// cost per acknowledgement that grows with the users) and updates the
// rest; [RemovesReadMail] tells the gate apart. docs/operators.md
// describes moving to a new stream.
func ProvisionInbox(ctx context.Context, js jetstream.JetStream, c InboxConfig) (jetstream.Stream, error) {
	cfg := c.StreamConfig()
	if old, err := js.Stream(ctx, cfg.Name); err == nil && old.CachedInfo().Config.DenyPurge {
		cfg.Retention, cfg.DenyPurge = jetstream.InterestPolicy, true
	}
	st, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("callout: provisioning stream %s: %w", cfg.Name, err)
	}
	return st, nil
}

// RemovesReadMail reports whether the gate must remove read mail from the
// inbox stream with configuration cfg: true under limits retention, false
// for an earlier release's stream kept on interest retention (see
// [ProvisionInbox]).
func RemovesReadMail(cfg jetstream.StreamConfig) bool {
	return cfg.Retention == jetstream.LimitsPolicy && !cfg.DenyPurge
}
