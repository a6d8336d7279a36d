package systemtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/handles/jsstore"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestScaleOut runs the cluster recipe of docs/operators.md: a 3-node
// NATS cluster with the callout snippet, two chat-server replicas in the
// callout's queue group sharing the registry in JetStream, and a
// sig-server keeping chains in JetStream, every stream with three
// replicas. Under load, one NATS node is killed (SIGKILL) and one
// chat-server stopped: no acknowledged message is lost or shown twice,
// and new users still register and log in. The killed node then comes
// back and catches up.
//
// The default run is 10 clients × 10 messages; KEZ_LONG=1 runs 50 × 40.
func TestScaleOut(t *testing.T) {
	// Not parallel: elections in a 3-process cluster slow down badly when
	// the CPUs are busy with other tests.
	sc := loadScale{clients: 10, messages: 10, contacts: 2, cutEvery: 100 * time.Millisecond}
	if long() {
		sc = loadScale{clients: 50, messages: 40, contacts: 3, cutEvery: 50 * time.Millisecond}
	}
	sys := startSystem(t, sysOptions{cluster: true, jetstream: true, chatReplicas: 2, ackWait: 2 * time.Second})
	late := sys.registerMany(t, "late", 3) // registered, never logged in yet
	// The worst node to lose: the leader of the registry's bucket, which
	// every login reads.
	killed := sys.nodeOf(t, registryStream)
	var (
		killedAt   time.Time
		loginGap   time.Duration
		registered time.Duration
	)
	chaos := func() {
		killedAt = time.Now()
		sys.cluster.KillNode(killed)
		sys.stopChat(1)
		// New logins while the cluster is a node short and one chat-server
		// is gone: refused only while the registry elects a new leader.
		for _, u := range late {
			for {
				ctx, cancel := contextFor(10 * time.Second)
				nc, err := chat.Connect(ctx, sys.natsURL, u.id, nats.NoReconnect())
				cancel()
				if err == nil {
					nc.Close()
					break
				}
				if !errors.Is(err, chat.ErrNotRegistered) && !errors.Is(err, chat.ErrUnreachable) {
					t.Fatalf("%s logging in: %v", u.name, err)
				}
				if time.Since(killedAt) > 60*time.Second {
					t.Fatalf("%s still cannot log in a minute after the node was lost: %v", u.name, err)
				}
			}
		}
		loginGap = time.Since(killedAt)
		// A brand-new user registers (claim through the front to the
		// remaining replica, chain into JetStream) and logs in.
		var newcomer *user
		for newcomer == nil {
			u, err := sys.tryRegister("newcomer")
			if err == nil {
				newcomer = u
				break
			}
			if time.Since(killedAt) > 60*time.Second {
				t.Fatalf("registering a new user a minute after the node was lost: %v", err)
			}
		}
		for {
			c, err := sys.tryOpen(t, newcomer, "")
			if err == nil {
				c.Close()
				break
			}
			if time.Since(killedAt) > 90*time.Second {
				t.Fatalf("the new user's client (its inbox consumer) 90 s after the node was lost: %v", err)
			}
		}
		registered = time.Since(killedAt)
	}
	f := runLoad(t, sys, sc, 7, chaos)
	t.Logf("scale-out: node %s (registry leader) killed and chat-server 1 stopped under load; new logins of registered users worked again after %s, a new user registered and opened a client after %s; %s",
		sys.cluster.Name(killed), loginGap.Round(time.Millisecond), registered.Round(time.Millisecond), f)

	// The node comes back and catches up; the stopped replica too.
	sys.cluster.RestartNode(killed)
	sys.startChat(t, 1)
	sys.waitChatReady(t, 1)
	u := sys.register(t, "afterwards")
	c := sys.open(t, u, "")
	if _, err := c.Sync(testCtx(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// registryStream is the stream behind the registry's KV bucket.
const registryStream = "KV_" + jsstore.DefaultBucket

// nodeOf returns the index of the cluster node leading stream, a stream
// of the callout account (asked as the callout service).
func (s *system) nodeOf(t testing.TB, stream string) int {
	t.Helper()
	keys, err := callout.LoadOrCreateKeys(s.keysDir)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.natsURL, keys.ServiceOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := testCtx(t, 30*time.Second)
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil {
		t.Fatalf("stream %s has no cluster information", stream)
	}
	for i := range natstest.ClusterSize {
		if s.cluster.Name(i) == info.Cluster.Leader {
			return i
		}
	}
	t.Fatalf("stream %s: leader %q is not a node", stream, info.Cluster.Leader)
	return 0
}

func contextFor(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
