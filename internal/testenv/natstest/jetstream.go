package natstest

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStreamConf is the configuration of a server with JetStream and
// nothing else, for [Run].
const JetStreamConf = "jetstream: enabled\n"

// ConnectJetStream connects to url without credentials, reconnecting
// forever 50 ms apart (so the connection survives a [Server.Restart] or a
// killed cluster node), and returns its JetStream context. The connection
// is closed in t.Cleanup. Any failure fails the test.
func ConnectJetStream(t testing.TB, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// StreamLeader returns the index of the node that leads the JetStream
// stream (for a KV bucket B, the stream is "KV_B"), as js last saw it.
// It fails the test if the stream has no leader among the nodes.
func (c *Cluster) StreamLeader(t testing.TB, ctx context.Context, js jetstream.JetStream, stream string) int {
	t.Helper()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info := st.CachedInfo()
	for i := range ClusterSize {
		if info.Cluster != nil && info.Cluster.Leader == c.Name(i) {
			return i
		}
	}
	t.Fatalf("natstest: stream %s has no leader in %+v", stream, info.Cluster)
	return 0
}

// Eventually calls f every 100 ms until it succeeds, each call bounded to
// 2 s, and logs how long that took; it fails the test if ctx ends first.
// It is for waiting out a Raft election in the nats-server processes,
// which is not the test's to synchronise with.
func Eventually(t testing.TB, ctx context.Context, f func(context.Context) error) {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := f(cctx)
		cancel()
		if err == nil {
			t.Logf("working again after %s", time.Since(start).Round(100*time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("still failing at the deadline: %v", err)
		case <-tick.C:
		}
	}
}

// StartForExample starts an in-process nats-server with JetStream on a free
// loopback port and a temporary store, for testable examples, which have
// no *testing.T. It panics if the server does not start; stop shuts it
// down and removes the store.
func StartForExample() (url string, stop func()) {
	dir, err := os.MkdirTemp("", "natstest-example")
	if err != nil {
		panic(err)
	}
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		panic(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(readyTimeout) {
		panic("natstest: nats-server did not start")
	}
	return ns.ClientURL(), func() { ns.Shutdown(); ns.WaitForShutdown(); os.RemoveAll(dir) }
}

// ConnectPlaced connects to the cluster like [ConnectJetStream] and
// returns once the meta leader can place a stream on every node. A node
// counts for placement only after the leader has its statistics, which
// arrive some time after the election (and again after a route is
// re-made, as happens while the nodes dial each other at start), so a
// replicated stream created right after [StartCluster] may be refused
// with "no suitable peers for placement". ConnectPlaced creates a
// stream with [ClusterSize] replicas, retrying with [Eventually], and
// deletes it. The connection needs the right to use the JetStream API.
func (c *Cluster) ConnectPlaced(t testing.TB) jetstream.JetStream {
	t.Helper()
	js := ConnectJetStream(t, c.ClientURLs())
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	Eventually(t, ctx, func(ctx context.Context) error {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "NATSTEST_PLACEMENT", Subjects: []string{"natstest.placement"}, Replicas: ClusterSize, Storage: jetstream.MemoryStorage})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = nil // an earlier attempt was placed but its answer lost
		}
		return err
	})
	Eventually(t, ctx, func(ctx context.Context) error {
		err := js.DeleteStream(ctx, "NATSTEST_PLACEMENT")
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			err = nil
		}
		return err
	})
	return js
}
