package jsstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
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
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js := c.ConnectPlaced(t)
	// A stream on every node that stays: the contract's stores are
	// deleted as each subtest ends, and a node removes the account's
	// folder once its last stream goes, under the next store's feet.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "ANCHOR", Subjects: []string{"anchor"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	t.Run("Contract", func(t *testing.T) { storetest.Run(t, clusterOpener(c.ClientURLs(), WithReplicas(3))) })
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

	leader := c.StreamLeader(t, ctx, js, DefaultStream)
	c.KillNode(leader)
	natstest.Eventually(t, ctx, appendNext) // a new leader is elected
	for range 4 {
		if err := appendNext(ctx); err != nil {
			t.Fatalf("append with node %s down: %v", c.Name(leader), err)
		}
	}
	if err := checkAll(ctx); err != nil {
		t.Fatalf("reads with node %s down: %v", c.Name(leader), err)
	}

	c.RestartNode(leader)
	other := c.StreamLeader(t, ctx, js, DefaultStream)
	if other == leader {
		other = (leader + 1) % natstest.ClusterSize
	}
	c.KillNode(other)
	natstest.Eventually(t, ctx, checkAll)
	if err := appendNext(ctx); err != nil {
		t.Fatal(err)
	}
	c.RestartNode(other)
	if err := checkAll(ctx); err != nil {
		t.Fatal(err)
	}
}
