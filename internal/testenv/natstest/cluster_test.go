package natstest_test

import (
	"context"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestCluster writes to an R3 stream, kills a node, keeps writing and
// reading through the other two, and restarts the node.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a 3-node cluster; elections take seconds")
	}
	c := natstest.StartCluster(t, "max_payload: 2MB\n") // extra configuration reaches every node
	if c.MetaLeader() == "" {
		t.Fatal("no meta leader")
	}
	js := c.ConnectPlaced(t)
	if nc := js.Conn(); nc.MaxPayload() != 2<<20 {
		t.Fatalf("max payload %d: the extra configuration was not applied", nc.MaxPayload())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.before", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if l := c.StreamLeader(t, ctx, js, "T"); l < 0 || l >= natstest.ClusterSize {
		t.Fatalf("stream leader %d", l)
	}

	c.KillNode(0)
	if c.MetaLeader() == c.Name(0) {
		t.Fatal("a killed node is meta leader")
	}
	// The stream may have lost its leader with node 0; it elects another
	// within seconds. Poll with a deadline: the election is another
	// process's business.
	natstest.Eventually(t, ctx, func(ctx context.Context) error {
		_, err := js.Publish(ctx, "t.during", []byte("2"))
		return err
	})
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	for _, subj := range []string{"t.before", "t.during"} {
		if _, err := st.GetLastMsgForSubject(ctx, subj); err != nil {
			t.Fatalf("%s with a node down: %v", subj, err)
		}
	}

	c.RestartNode(0)
	// Node 0 is healthy again, so it has caught up: ask it alone.
	nc0, err := nats.Connect(c.Node(0).ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc0.Close()
	js0, _ := jetstream.New(nc0)
	info, err := js0.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if n := info.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("after restart the stream has %d messages, want 2", n)
	}
}
