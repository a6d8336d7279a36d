package jsstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestCluster runs the contract on a 3-node cluster with 3 replicas, then
// kills the bucket's leader: after the election the registry reads and
// writes again. The node is restarted and the new leader killed: the
// restarted node and the third serve every entry.
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
	claimed := 0
	claimNext := func(ctx context.Context) error {
		r := storetest.Rec(fmt.Sprintf("user%d", claimed), storetest.Key(claimed))
		if _, err := s.Claim(ctx, r); err != nil {
			return err
		}
		claimed++
		return nil
	}
	checkAll := func(ctx context.Context) error {
		for i := range claimed {
			r, err := s.LookupKey(ctx, storetest.Key(i))
			if err != nil {
				return err
			}
			if r.Handle.Name != fmt.Sprintf("user%d", i) {
				return fmt.Errorf("key %d holds %s", i, r.Handle)
			}
		}
		return nil
	}
	for range 5 {
		if err := claimNext(ctx); err != nil {
			t.Fatal(err)
		}
	}

	leader := bucketLeader(t, ctx, js, c)
	c.KillNode(leader)
	eventually(t, ctx, claimNext) // a new leader is elected
	for range 5 {
		if err := claimNext(ctx); err != nil {
			t.Fatalf("claim with node %s down: %v", c.Name(leader), err)
		}
	}
	if err := checkAll(ctx); err != nil {
		t.Fatalf("lookups with node %s down: %v", c.Name(leader), err)
	}
	if _, err := s.Claim(ctx, storetest.Rec("user.0", storetest.Key(99))); !errors.Is(err, handles.ErrTaken) {
		t.Fatalf("a look-alike with a node down: %v", err)
	}

	// The restarted node has caught up when RestartNode returns; kill the
	// current leader so that it and the third node must serve alone.
	c.RestartNode(leader)
	other := bucketLeader(t, ctx, js, c)
	if other == leader {
		other = (leader + 1) % natstest.ClusterSize
	}
	c.KillNode(other)
	eventually(t, ctx, checkAll)
	if err := claimNext(ctx); err != nil {
		t.Fatal(err)
	}
	c.RestartNode(other)
	if err := checkAll(ctx); err != nil {
		t.Fatal(err)
	}
}

// bucketLeader returns the index of the node that leads the bucket's stream.
func bucketLeader(t *testing.T, ctx context.Context, js jetstream.JetStream, c *natstest.Cluster) int {
	t.Helper()
	st, err := js.Stream(ctx, "KV_"+DefaultBucket)
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
