package callout

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// InboxConfig describes the inbox stream. The zero value gives the
// defaults noted on each field.
type InboxConfig struct {
	Name              string                    // default [DefaultStream]
	MaxAge            time.Duration             // default 30 days
	MaxBytes          int64                     // default 1 GiB
	MaxMsgSize        int32                     // default 64 KiB
	MaxMsgsPerSubject int64                     // per recipient and sender; default 10 000
	Duplicates        time.Duration             // Nats-Msg-Id window; default 2 minutes
	Replicas          int                       // default 1; use 3 in a cluster
	Retention         jetstream.RetentionPolicy // default LimitsPolicy (see below)
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
		c.MaxMsgsPerSubject = 10_000
	}
	if c.Duplicates == 0 {
		c.Duplicates = 2 * time.Minute
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return c
}

// StreamConfig returns the JetStream configuration [ProvisionInbox]
// applies: subjects [InboxSubjects], file storage, discard old, and the
// limits of c (defaults filled in).
//
// Retention defaults to limits: a message stays until MaxAge or a limit
// removes it, acknowledged or not, and the user's durable consumer
// remembers what was acknowledged. jetstream.WorkQueuePolicy deletes a
// message once acknowledged (less ciphertext at rest) but the server then
// refuses consumers that do not deliver everything.
func (c InboxConfig) StreamConfig() jetstream.StreamConfig {
	c = c.withDefaults()
	return jetstream.StreamConfig{
		Name:              c.Name,
		Description:       "KEZ chat inboxes: kez.v1.inbox.<recipient key>.<sender key>, end-to-end encrypted",
		Subjects:          []string{InboxSubjects},
		Retention:         c.Retention,
		Storage:           jetstream.FileStorage,
		Discard:           jetstream.DiscardOld,
		MaxAge:            c.MaxAge,
		MaxBytes:          c.MaxBytes,
		MaxMsgSize:        c.MaxMsgSize,
		MaxMsgsPerSubject: c.MaxMsgsPerSubject,
		MaxMsgs:           -1,
		MaxConsumers:      -1,
		Duplicates:        c.Duplicates,
		Replicas:          c.Replicas,
		DenyDelete:        true,
		DenyPurge:         true,
		AllowDirect:       false,
	}
}

// ProvisionInbox creates the inbox stream, or updates it to c when it
// exists, and returns it. It is idempotent and safe to call on every
// start of every chat-server replica.
//
// js must reach the chat account. The reference chat-server logs in with
// [Keys.ProvisionerOptions]: the callout itself authorizes that key with
// [ProvisionerPermissions], so the operator's nats.conf needs no second
// user and the stream rights stay in this package.
func ProvisionInbox(ctx context.Context, js jetstream.JetStream, c InboxConfig) (jetstream.Stream, error) {
	cfg := c.StreamConfig()
	st, err := js.CreateOrUpdateStream(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("callout: provisioning stream %s: %w", cfg.Name, err)
	}
	return st, nil
}
