package callout_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
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
		c.Retention != jetstream.InterestPolicy ||
		c.MaxAge != 30*24*time.Hour || c.MaxMsgSize != 64<<10 || c.Duplicates != 2*time.Minute ||
		c.MaxMsgsPerSubject != 1_000 || c.MaxBytes != 1<<30 || c.Replicas != 1 ||
		!c.DenyDelete || !c.DenyPurge || c.AllowDirect {
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
		"$JS.API.STREAM.DELETE." + S, "$JS.API.STREAM.PURGE." + S, "$JS.API.STREAM.MSG.GET." + S,
		"$JS.API.DIRECT.GET." + S, "$JS.API.CONSUMER.CREATE.OTHER.x", "$JS.API.STREAM.CREATE.OTHER",
		"$JS.API.CONSUMER.DELETE." + S + ".x", "$JS.API.STREAM.LEADER.STEPDOWN." + S, "kez.v1.deliver.x.y",
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
