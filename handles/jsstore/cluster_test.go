package jsstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
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
	js := c.ConnectPlaced(t)
	t.Run("Contract", func(t *testing.T) { storetest.Run(t, opener(c.ClientURLs(), WithReplicas(3))) })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
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

	leader := c.StreamLeader(t, ctx, js, "KV_"+DefaultBucket)
	c.KillNode(leader)
	natstest.Eventually(t, ctx, claimNext) // a new leader is elected
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
	other := c.StreamLeader(t, ctx, js, "KV_"+DefaultBucket)
	if other == leader {
		other = (leader + 1) % natstest.ClusterSize
	}
	c.KillNode(other)
	natstest.Eventually(t, ctx, checkAll)
	if err := claimNext(ctx); err != nil {
		t.Fatal(err)
	}
	c.RestartNode(other)
	if err := checkAll(ctx); err != nil {
		t.Fatal(err)
	}
}
