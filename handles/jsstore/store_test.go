package jsstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
)

var buckets atomic.Int64

// opener returns a storetest.Open whose every store is a fresh bucket on
// the server at url, each handle on its own connection.
func opener(url string, opts ...Option) storetest.Open {
	return func(t *testing.T) (handles.Store, func() handles.Store) {
		opts := append([]Option{WithBucket(fmt.Sprintf("T%d", buckets.Add(1)))}, opts...)
		open := func() handles.Store {
			s, err := New(context.Background(), natstest.ConnectJetStream(t, url), opts...)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		return open(), open
	}
}

func TestContract(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	storetest.Run(t, opener(srv.ClientURL()))
}

func TestNewIdempotent(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	a, err := New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Claim(ctx, storetest.Rec("alice", storetest.Key(1))); err != nil {
		t.Fatal(err)
	}
	// A second replica starts with other options: it uses the bucket as
	// it is and sees the same registry.
	b, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()), WithOrphanGrace(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := b.LookupKey(ctx, storetest.Key(1)); err != nil || r.Handle.Name != "alice" {
		t.Fatalf("second store: %+v %v", r, err)
	}
	kv, _ := js.KeyValue(ctx, DefaultBucket)
	st, err := kv.Status(ctx)
	if err != nil || st.History() != 1 {
		t.Fatalf("bucket status %+v %v", st, err)
	}
	if err := b.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Option{WithReplicas(0), WithReplicas(6), WithOrphanGrace(0)} {
		if _, err := New(ctx, js, o); err == nil {
			t.Error("New accepted a bad option")
		}
	}
}

// TestSurvivesRestart: the registry is in JetStream's file store.
func TestSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	s, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Claim(ctx, storetest.Rec("alice", storetest.Key(1))); err != nil {
		t.Fatal(err)
	}
	srv.Restart()
	s2, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s2.Lookup(ctx, handles.Handle{Name: "alice", Domain: "kez.lat"}); err != nil || r.Key != storetest.Key(1) {
		t.Fatalf("after restart: %+v %v", r, err)
	}
}

func TestPingFailsWithoutServer(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	s, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := s.Ping(cctx); err == nil {
		t.Fatal("Ping succeeded with the server down")
	}
	if _, err := s.LookupKey(cctx, storetest.Key(1)); err == nil || errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("LookupKey with the server down: %v; want an error that is not ErrNotFound", err)
	}
}
