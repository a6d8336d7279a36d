package stacktest

import (
	"context"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream logs in as the chat-server's own key (the gate's rights in
// the chat account) and returns a JetStream handle, for tests that
// inspect the inbox stream and its consumers as the operator could. The
// connection is closed in t.Cleanup.
func (s *Stack) JetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	keys, err := callout.LoadOrCreateKeys(s.KeysDir)
	if err != nil {
		t.Fatalf("stacktest: the chat-server's keys: %v", err)
	}
	nc, err := nats.Connect(s.NATSURL, append(keys.ProvisionerOptions(), nats.Timeout(5*time.Second))...)
	if err != nil {
		t.Fatalf("stacktest: logging in as the chat-server: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// ConsumerInfo returns the inbox consumer of key, as JetStream reports it.
func (s *Stack) ConsumerInfo(t testing.TB, key kez.PublicKey) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := s.JetStream(t).Consumer(ctx, callout.DefaultStream, callout.ConsumerName(key))
	if err != nil {
		t.Fatalf("stacktest: the consumer of %s: %v", key, err)
	}
	return info.CachedInfo()
}
