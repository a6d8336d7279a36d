package jsstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/natstest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestCluster runs the contract on a 3-node cluster with 3 replicas, then
// kills the stream's leader: after the election appends and reads work
// again. The node is restarted and the new leader killed: the restarted
// node and the third serve every link.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node cluster; elections take seconds")
	}
	c := natstest.StartCluster(t, "")
	t.Run("Contract", func(t *testing.T) { storetest.Run(t, opener(c.ClientURLs(), WithReplicas(3))) })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js := connect(t, c.ClientURLs())
	s, err := New(ctx, js, WithReplicas(3))
	if err != nil {
		t.Fatal(err)
	}
	id := storetest.Identity(t, 1)
	links := storetest.Chain(t, id, 12)
	stored := 0
	appendNext := func(ctx context.Context) error {
		err := s.Append(ctx, links[stored])
		if errors.Is(err, sigchain.ErrConflict) {
			// An append whose acknowledgement was lost in the failover
			// may have been stored: then the head is this link.
			if h, herr := s.Head(ctx, id.PublicKey()); herr == nil && h.ID == links[stored].ID() {
				err = nil
			}
		}
		if err == nil {
			stored++
		}
		return err
	}
	checkAll := func(ctx context.Context) error {
		got, h, err := s.Links(ctx, id.PublicKey(), 0, 100)
		if err != nil {
			return err
		}
		if len(got) != stored || h.ID != links[stored-1].ID() {
			t.Fatalf("%d links and head %d, want %d", len(got), h.Seqno, stored)
		}
		return nil
	}
	for range 4 {
		if err := appendNext(ctx); err != nil {
			t.Fatal(err)
		}
	}

	leader := streamLeader(t, ctx, js, c)
	c.KillNode(leader)
	eventually(t, ctx, appendNext) // a new leader is elected
	for range 4 {
		if err := appendNext(ctx); err != nil {
			t.Fatalf("append with node %s down: %v", c.Name(leader), err)
		}
	}
	if err := checkAll(ctx); err != nil {
		t.Fatalf("reads with node %s down: %v", c.Name(leader), err)
	}

	c.RestartNode(leader)
	other := streamLeader(t, ctx, js, c)
	if other == leader {
		other = (leader + 1) % natstest.ClusterSize
	}
	c.KillNode(other)
	eventually(t, ctx, checkAll)
	if err := appendNext(ctx); err != nil {
		t.Fatal(err)
	}
	c.RestartNode(other)
	if err := checkAll(ctx); err != nil {
		t.Fatal(err)
	}
}

// streamLeader returns the index of the node that leads the stream.
func streamLeader(t *testing.T, ctx context.Context, js jetstream.JetStream, c *natstest.Cluster) int {
	t.Helper()
	st, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	info := st.CachedInfo()
	for i := range natstest.ClusterSize {
		if info.Cluster != nil && info.Cluster.Leader == c.Name(i) {
			return i
		}
	}
	t.Fatalf("no leader in %+v", info.Cluster)
	return 0
}

// eventually calls f until it succeeds or ctx ends, each call bounded to
// 2 s: a Raft election in the nats-server processes is not ours to wait on.
func eventually(t *testing.T, ctx context.Context, f func(context.Context) error) {
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
