package natsdrain_test

import (
	"context"
	"errors"
	"testing"

	"github.com/kez-lat/kez-chat/internal/natsdrain"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
)

// Two members of a queue group: the drained one handles the message it
// holds, and the server gives every later message to the other.
func TestSubsHandsOverAndFinishes(t *testing.T) {
	srv := natstest.Run(t, "")
	connect := func() *nats.Conn {
		nc, err := nats.Connect(srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	nc1, nc2, pub := connect(), connect(), connect()
	entered, release := make(chan struct{}), make(chan struct{})
	handled1 := make(chan string, 16)
	sub1, err := nc1.QueueSubscribe("work", "q", func(m *nats.Msg) {
		if string(m.Data) == "slow" {
			close(entered)
			<-release
		}
		handled1 <- string(m.Data)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc1.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("work", []byte("slow")); err != nil {
		t.Fatal(err)
	}
	<-entered // the only member holds the message
	handled2 := make(chan string, 16)
	sub2, err := nc2.QueueSubscribe("work", "q", func(m *nats.Msg) { handled2 <- string(m.Data) })
	if err != nil {
		t.Fatal(err)
	}
	if err := nc2.Flush(); err != nil {
		t.Fatal(err)
	}
	draining := sub1.StatusChanged(nats.SubscriptionDraining)
	drained := make(chan error, 1)
	go func() { drained <- natsdrain.Subs(context.Background(), sub1, nil) }()
	// Once member 1 left the group, every message goes to member 2.
	<-draining
	if err := nc1.Flush(); err != nil { // the UNSUB, queued before, has reached the server
		t.Fatal(err)
	}
	for i := range 20 {
		if err := pub.Publish("work", []byte{'a' + byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		<-handled2
	}
	select {
	case err := <-drained:
		t.Fatalf("drained (%v) with a message still being handled", err)
	default:
	}
	close(release)
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if got := <-handled1; got != "slow" {
		t.Fatalf("member 1 handled %q", got)
	}
	if len(handled1) != 0 {
		t.Fatalf("member 1 handled %d messages after it left the group", len(handled1))
	}
	// Draining again, or a closed subscription, is no error.
	if err := natsdrain.Subs(context.Background(), sub1, sub2); err != nil {
		t.Fatal(err)
	}
}

// A handler that never returns cannot hold the caller past ctx.
func TestSubsBoundedByContext(t *testing.T) {
	srv := natstest.Run(t, "")
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	stuck, entered := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	sub, err := nc.Subscribe("work", func(*nats.Msg) {
		close(entered)
		<-stuck
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("work", nil); err != nil {
		t.Fatal(err)
	}
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := natsdrain.Subs(ctx, sub); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}
