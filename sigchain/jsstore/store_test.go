package jsstore

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/storetest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

var streams atomic.Int64

// opener returns a storetest.Open whose every store is a fresh stream,
// subject prefix and prekey bucket on the server at url, each handle on
// its own connection.
func opener(url string, opts ...Option) storetest.Open {
	return func(t *testing.T) (sigchain.Store, func() sigchain.Store) {
		open, _ := openFresh(t, url, opts...)
		return open(), open
	}
}

// clusterOpener is opener for a cluster, where each store is a stream and
// two buckets replicated three times: they are removed when the subtest
// ends, so that a run of the contract does not pile up raft groups on a
// small machine. (TestCluster keeps a stream of its own on every node:
// a node removes the account's folder once its last stream goes, while
// the next subtest may be making a stream in it. A single server keeps
// its stores.)
func clusterOpener(url string, opts ...Option) storetest.Open {
	return func(t *testing.T) (sigchain.Store, func() sigchain.Store) {
		open, n := openFresh(t, url, opts...)
		first := open()
		js := natstest.ConnectJetStream(t, url)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, name := range []string{fmt.Sprintf("T%d", n), fmt.Sprintf("KV_T%d_PREKEYS", n), fmt.Sprintf("KV_T%d_LINKS", n)} {
				_ = js.DeleteStream(ctx, name) // best effort: the cluster goes with the test
			}
		})
		return first, open
	}
}

// openFresh names a fresh stream, subject prefix and buckets and returns
// what opens a store on them (on a connection of its own each time) and
// their number.
func openFresh(t *testing.T, url string, opts ...Option) (func() sigchain.Store, int64) {
	n := streams.Add(1)
	opts = append([]Option{WithStream(fmt.Sprintf("T%d", n)), WithSubjectPrefix(fmt.Sprintf("t%d.chain", n)), WithPrekeyBucket(fmt.Sprintf("T%d_PREKEYS", n)), WithLinkRequestBucket(fmt.Sprintf("T%d_LINKS", n))}, opts...)
	return func() sigchain.Store {
		s, err := openPlaced(t, natstest.ConnectJetStream(t, url), opts...)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, n
}

// jsNoPeers is nats-server's error code for a stream no peers can take
// (JSClusterNoPeersErrF).
const jsNoPeers = 10005

// openPlaced opens a store, asking again while the cluster has no peers
// for a new stream (a node that missed heartbeats on a loaded machine is
// "offline" for a moment): what the test waits for is the cluster's own
// answer, within a minute.
func openPlaced(t *testing.T, js jetstream.JetStream, opts ...Option) (*Store, error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		s, err := New(context.Background(), js, opts...)
		var apiErr *jetstream.APIError
		noPeers := errors.As(err, &apiErr) && apiErr.ErrorCode == jsNoPeers
		// A request the loaded cluster did not answer in the API's
		// timeout is asked again too: New creates or opens, so a
		// stream or bucket made by the lost attempt is simply opened.
		slow := errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)
		if err == nil || !(noPeers || slow) || time.Now().After(deadline) {
			return s, err
		}
		t.Logf("the cluster has not placed the store yet (%v): asking again", err)
		select {
		case <-time.After(250 * time.Millisecond):
		case <-t.Context().Done():
			return nil, err
		}
	}
}

func TestContract(t *testing.T) {
	srv := natstest.Run(t, natstest.JetStreamConf)
	storetest.Run(t, opener(srv.ClientURL()))
}

func TestLayout(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	s, err := New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	links := storetest.Chain(t, storetest.Identity(t, 1), 3)
	for _, l := range links {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	st, err := js.Stream(ctx, DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	if !cfg.DenyDelete || cfg.DenyPurge || cfg.Discard != jetstream.DiscardNew || cfg.Storage != jetstream.FileStorage ||
		cfg.MaxMsgSize != sigchain.MaxLinkSize || !cfg.AllowDirect || len(cfg.Subjects) != 1 || cfg.Subjects[0] != "kez.v1.chain.>" {
		t.Fatalf("stream config %+v", cfg)
	}
	for _, l := range links {
		subj := fmt.Sprintf("kez.v1.chain.%s.%d", l.Key(), l.Seqno())
		m, err := st.GetLastMsgForSubject(ctx, subj)
		if err != nil || string(m.Data) != string(l.Bytes()) {
			t.Fatalf("%s: %v", subj, err)
		}
		if linkID(m.Data) != l.ID() {
			t.Fatalf("linkID differs from the link's ID")
		}
	}
	// No link can be deleted on its own; only the collection of orphan
	// chains purges (whole chains).
	if err := st.DeleteMsg(ctx, 1); err == nil {
		t.Fatal("the stream let a link be deleted")
	}
	// A second replica starting later uses the stream as it is.
	s2, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()), WithReplicas(1))
	if err != nil {
		t.Fatal(err)
	}
	if h, err := s2.Head(ctx, links[0].Key()); err != nil || h.Seqno != 3 {
		t.Fatalf("second store: %v %v", h, err)
	}
	if err := s2.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNewRefuses(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OTHER", Subjects: []string{"other.>"}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		opts []Option
		want string
	}{
		{[]Option{WithStream("OTHER")}, "takes"},
		{[]Option{WithReplicas(0)}, "replicas"},
		{[]Option{WithReplicas(7)}, "replicas"},
		{[]Option{WithSubjectPrefix("a.*")}, "wildcards"},
		{[]Option{WithSubjectPrefix("")}, "wildcards"},
		{[]Option{WithSubjectPrefix("a..b")}, "wildcards"},
		{[]Option{WithStream("X"), WithSubjectPrefix("other")}, "overlap"},
	} {
		_, err := New(ctx, js, tc.opts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New: %v, want an error about %q", err, tc.want)
		}
	}
}

func TestSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	s, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	links := storetest.Chain(t, storetest.Identity(t, 1), 2)
	for _, l := range links {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	srv.Restart()
	s2, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	got, h, err := s2.Links(ctx, links[0].Key(), 0, 10)
	if err != nil || len(got) != 2 || h.ID != links[1].ID() {
		t.Fatalf("after restart: %d links, head %v, %v", len(got), h, err)
	}
}

func TestServerDown(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	s, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	links := storetest.Chain(t, storetest.Identity(t, 1), 1)
	srv.Shutdown()
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := s.Ping(cctx); err == nil {
		t.Fatal("Ping succeeded with the server down")
	}
	if _, err := s.Head(cctx, links[0].Key()); err == nil || errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("Head with the server down: %v; want an error that is not ErrNotFound", err)
	}
	if err := s.Append(cctx, links[0]); err == nil || errors.Is(err, sigchain.ErrConflict) {
		t.Fatalf("Append with the server down: %v", err)
	}
}

// TestHandlerReplicas serves the sig-server's HTTP API from two replicas
// over two stores on one stream: an append through one is fetched,
// verified, through the other at once, and a racing append through the
// other is refused.
func TestHandlerReplicas(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	var urls []string
	for range 2 {
		s, err := New(ctx, natstest.ConnectJetStream(t, srv.ClientURL()))
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewServer(sigchain.NewHandler(s))
		t.Cleanup(hs.Close)
		urls = append(urls, hs.URL)
	}
	a, b := &sigchain.Client{BaseURL: urls[0]}, &sigchain.Client{BaseURL: urls[1]}
	id := storetest.Identity(t, 1)
	links := storetest.Chain(t, id, 3)
	for i, l := range links {
		if err := a.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
		st, err := b.FetchVerified(ctx, id.PublicKey(), nil)
		if err != nil || st.Seqno() != uint64(i+1) || st.Head() != l.ID() {
			t.Fatalf("replica b after append %d: %v", i+1, err)
		}
	}
	if err := b.Append(ctx, links[1]); err != nil {
		t.Fatalf("a retried append of a stored link: %v", err) // the handler answers 200
	}
	st, _ := sigchain.Verify(links[:2])
	forked, err := sigchain.NewLink(id, st, sigchain.TypeSetHandle, sigchain.SetHandleBody("fork@kez.lat"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx, forked); !errors.Is(err, sigchain.ErrConflict) {
		t.Fatalf("a fork through replica b: %v", err)
	}
}

// TestStreamWithoutDirectGets: an operator's stream made without direct
// gets still serves every read, from the leader.
func TestStreamWithoutDirectGets(t *testing.T) {
	ctx := context.Background()
	s, links := onStream(t, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{"kez.v1.chain.>"}}, 20)
	got, h, err := s.Links(ctx, links[0].Key(), 3, 10)
	if err != nil || len(got) != 10 || h.Seqno != 20 {
		t.Fatalf("%d links, head %v, %v", len(got), h, err)
	}
	for i, b := range got {
		if string(b) != string(links[3+i].Bytes()) {
			t.Fatalf("link %d differs", 4+i)
		}
	}
}

// TestCollectAfterAStop stops a collection between its fence and its
// purge (the fence is published by hand): the chain reads as absent at
// once, its key can start again, and the next collection purges what the
// first one left.
func TestCollectAfterAStop(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	s, err := New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	id := storetest.Identity(t, 1)
	orphan := storetest.Chain(t, id, 1)[0]
	if err := s.Append(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "kez.v1.chain."+id.PublicKey().String()+".gc", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Head(ctx, id.PublicKey()); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("a fenced chain: %v, want ErrNotFound", err)
	}
	if n, err := s.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("collecting the rest: %d, %v", n, err)
	}
	st, err := s.st.Info(ctx, jetstream.WithSubjectFilter("kez.v1.chain.>"))
	if err != nil || st.State.Msgs != 0 {
		t.Fatalf("left in the stream: %+v, %v", st.State.Subjects, err)
	}
	// The key starts again.
	if err := s.Append(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx, id.PublicKey()); err != nil || h.Seqno != 1 {
		t.Fatalf("%v %v", h, err)
	}
}

// TestCollectRefusedOnAnOldStream opens a stream as an earlier version
// made it, with deny_purge, which JetStream cannot lift: the store works,
// and collecting says why it cannot.
func TestCollectRefusedOnAnOldStream(t *testing.T) {
	ctx := context.Background()
	s, _ := onStream(t, jetstream.StreamConfig{Name: DefaultStream, Subjects: []string{DefaultSubjectPrefix + ".>"}, DenyDelete: true, DenyPurge: true}, 2)
	if n, err := s.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 0 || !errors.Is(err, ErrCannotCollect) {
		t.Fatalf("%d, %v; want ErrCannotCollect", n, err)
	}
}

// onStream opens a store on a stream made beforehand with cfg (as an
// operator or an earlier version made it) and appends n links of one
// chain.
func onStream(t *testing.T, cfg jetstream.StreamConfig, n int) (*Store, []*sigchain.Link) {
	t.Helper()
	ctx := context.Background()
	srv := natstest.Run(t, natstest.JetStreamConf)
	js := natstest.ConnectJetStream(t, srv.ClientURL())
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := New(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	links := storetest.Chain(t, storetest.Identity(t, 1), n)
	for _, l := range links {
		if err := s.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	return s, links
}
