package callout_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestProvisionInbox(t *testing.T) {
	s := newStack(t, stackOptions{})
	st := provision(t, s, callout.InboxConfig{})
	again := provision(t, s, callout.InboxConfig{}) // idempotent
	info, err := again.Info(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Name != "KEZ_INBOX" || len(c.Subjects) != 1 || c.Subjects[0] != "kez.v1.inbox.>" ||
		c.Storage != jetstream.FileStorage || c.Discard != jetstream.DiscardNew || !c.DiscardNewPerSubject ||
		c.Retention != jetstream.LimitsPolicy || c.MaxConsumers != callout.DefaultMaxConsumers ||
		c.MaxAge != 30*24*time.Hour || c.MaxMsgSize != 64<<10 || c.Duplicates != 2*time.Minute ||
		c.MaxMsgsPerSubject != 1_000 || c.MaxBytes != 1<<30 || c.Replicas != 1 ||
		!c.DenyDelete || c.DenyPurge || c.AllowDirect {
		t.Fatalf("stream config %+v", c)
	}
	if st.CachedInfo().Created != info.Created {
		t.Fatal("provisioning again made a new stream")
	}

	// Changing a limit updates the stream in place.
	updated := provision(t, s, callout.InboxConfig{MaxAge: 7 * 24 * time.Hour, MaxMsgsPerSubject: 100})
	if c := updated.CachedInfo().Config; c.MaxAge != 7*24*time.Hour || c.MaxMsgsPerSubject != 100 {
		t.Fatalf("after update %+v", c)
	}

	// An oversized message is refused by JetStream.
	js := provisionerJetStream(t, s)
	subj := callout.InboxSubjectPrefix + "R.S"
	_, err = js.Publish(ctx(t), subj, bytes.Repeat([]byte{'x'}, 65<<10))
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("oversized message: %v", err)
	}
}

// TestProvisionKeepsPurgeDenyingStream: the inbox stream of an earlier
// release denies purges, which JetStream never lets it give up; it is
// updated in place, with its consumers, onto interest retention (so read
// mail still leaves it), and the gate is told not to purge it.
func TestProvisionKeepsPurgeDenyingStream(t *testing.T) {
	for _, retention := range []jetstream.RetentionPolicy{jetstream.LimitsPolicy, jetstream.InterestPolicy} {
		t.Run(retention.String(), func(t *testing.T) {
			s := newStack(t, stackOptions{})
			js := provisionerJetStream(t, s)
			old := callout.InboxConfig{}.StreamConfig()
			old.Retention, old.DenyPurge, old.MaxConsumers = retention, true, -1
			before, err := js.CreateStream(ctx(t), old)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := before.CreateOrUpdateConsumer(ctx(t), callout.ConsumerConfig(newIdentity(t).PublicKey(), 0)); err != nil {
				t.Fatal(err)
			}
			if !callout.RemovesReadMail(callout.InboxConfig{}.StreamConfig()) {
				t.Fatal("a new stream is not purged by the gate")
			}
			info, err := provision(t, s, callout.InboxConfig{}).Info(ctx(t))
			if err != nil {
				t.Fatal(err)
			}
			if c := info.Config; c.Retention != jetstream.InterestPolicy || !c.DenyPurge || c.MaxConsumers != callout.DefaultMaxConsumers ||
				info.Created != before.CachedInfo().Created || info.State.Consumers != 1 || callout.RemovesReadMail(c) {
				t.Fatalf("after the update: %+v, %+v", c, info.State)
			}
		})
	}
}

func provisionerJetStream(t *testing.T, s *stack) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(s.srv.ClientURL(), s.keys.ProvisionerOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	return js
}

func TestProvisionerHasNoOtherRights(t *testing.T) {
	s := newStack(t, stackOptions{})
	provision(t, s, callout.InboxConfig{})
	c := &client{errs: make(chan error, 16)}
	nc, err := nats.Connect(s.srv.ClientURL(), append(s.keys.ProvisionerOptions(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		c.errs <- err
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c.Conn = nc
	S := callout.DefaultStream
	for _, subj := range []string{
		"$JS.API.STREAM.DELETE." + S, "$JS.API.STREAM.PURGE.OTHER", "$JS.API.STREAM.MSG.GET." + S, "$JS.API.STREAM.MSG.DELETE." + S,
		"$JS.API.DIRECT.GET." + S, "$JS.API.CONSUMER.CREATE.OTHER.x", "$JS.API.STREAM.CREATE.OTHER",
		"$JS.API.CONSUMER.DELETE.OTHER.x", "$JS.API.CONSUMER.DELETE." + S + ".x.y", "$JS.API.STREAM.LEADER.STEPDOWN." + S, "kez.v1.deliver.x.y",
	} {
		if err := nc.PublishRequest(subj, nc.NewRespInbox(), []byte("{}")); err != nil {
			t.Fatal(err)
		}
		c.wantViolation(t, subj)
	}
	if _, err := nc.SubscribeSync("kez.v1.inbox.>"); err != nil {
		t.Fatal(err)
	}
	c.wantViolation(t, "kez.v1.inbox.>")
	if _, err := nc.SubscribeSync("kez.v1.deliver.>"); err != nil {
		t.Fatal(err)
	}
	c.wantViolation(t, "kez.v1.deliver.>")
}

// TestInboxConsumersBeyondServerDefault: a stream that sets no consumer
// limit gets nats-server's default_max_consumers (1,000 unless nats.conf
// says otherwise), and the gate could not make the next user's consumer.
// The inbox stream sets its own. Here the server default is 2: the
// control stream refuses the third user's consumer, the inbox stream
// takes it.
func TestInboxConsumersBeyondServerDefault(t *testing.T) {
	s := natstest.Run(t, "jetstream: {limits: {default_max_consumers: 2}}\n")
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, _ := jetstream.New(nc)
	control := callout.InboxConfig{Name: "CONTROL"}.StreamConfig()
	control.Subjects, control.MaxConsumers = []string{"control.>"}, -1
	for _, cfg := range []jetstream.StreamConfig{control, callout.InboxConfig{}.StreamConfig()} {
		st, err := js.CreateStream(ctx(t), cfg)
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			c := callout.ConsumerConfig(newIdentity(t).PublicKey(), 0)
			c.FilterSubject = cfg.Subjects[0]
			_, err := st.CreateOrUpdateConsumer(ctx(t), c)
			switch {
			case cfg.Name == "CONTROL" && i == 2:
				if !errors.Is(err, jetstream.ErrMaximumConsumersLimit) {
					t.Fatalf("the control stream's third consumer: %v", err)
				}
			case err != nil:
				t.Fatalf("%s, consumer %d: %v", cfg.Name, i+1, err)
			}
		}
	}
}
