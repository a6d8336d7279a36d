package translog_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/translog"
)

// TestCheckHead: a head proven in the server's log is accepted, the log is
// pinned on first use, and the newest checkpoint moves forward only by a
// verified consistency proof; an older proof is checked against it and
// leaves it in place.
func TestCheckHead(t *testing.T) {
	ctx := context.Background()
	l := tlogtest.New(t, tlogtest.Options{})
	s := newSigServer(t, l)
	alice := chainEntries("alice", 2)
	l.Append(t, alice...)
	old := l.HeadProof(t, 1)
	pins := translog.NewMemPins()
	m := newMonitor(pins)
	if err := m.CheckHead(ctx, s.URL, alice[1], old); err != nil {
		t.Fatal(err)
	}
	if li, ok, _ := pins.LogOf(ctx, s.URL); !ok || li != l.Info {
		t.Fatalf("pinned %+v %v, want %+v", li, ok, l.Info)
	}
	if n, _ := m.Latest(ctx, s.URL+"/"); string(n) != old.Checkpoint {
		t.Fatalf("latest %q", n)
	}

	l.Append(t, chainEntries("bob", 3)...)
	cur := l.HeadProof(t, 1)
	if err := m.CheckHead(ctx, s.URL, alice[1], cur); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Latest(ctx, s.URL); string(n) != cur.Checkpoint {
		t.Fatalf("latest %q, want size 5", n)
	}
	// An older (smaller) checkpoint: consistent, and not a step back.
	if err := m.CheckHead(ctx, s.URL, alice[1], old); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Latest(ctx, s.URL); string(n) != cur.Checkpoint {
		t.Fatalf("latest went back to %q", n)
	}
	if s.infoHits.Load() != 1 {
		t.Errorf("%d /v1/info requests, want 1", s.infoHits.Load())
	}
}

// TestCheckHeadRefuses: forged, misplaced or missing proofs of a logged
// server are refused, each with its error.
func TestCheckHeadRefuses(t *testing.T) {
	ctx := context.Background()
	l := tlogtest.New(t, tlogtest.Options{})
	s := newSigServer(t, l)
	alice := chainEntries("alice", 3)
	l.Append(t, alice...)
	good := l.HeadProof(t, 2)
	m := newMonitor(nil)
	if err := m.CheckHead(ctx, s.URL, alice[2], good); err != nil {
		t.Fatal(err)
	}
	forged := *good
	forged.Proof = append([]string(nil), good.Proof...)
	forged.Proof[0] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
	beyond := *good
	beyond.Index = 3
	garbage := *good
	garbage.Proof = []string{"not base64!"}
	long := *good
	long.Proof = make([]string, 1000)
	rewritten := alice[2]
	rewritten.ID = testID("another alice3")
	otherKey := *good
	otherKey.Checkpoint = string(signText(t, "not the log's key", tlogtest.DefaultOrigin, cpText(tlogtest.DefaultOrigin, 3, bytes.Repeat([]byte{1}, 32))))
	for name, c := range map[string]struct {
		e    translog.Entry
		p    *translog.HeadProof
		want error
	}{
		"forged hash":        {alice[2], &forged, translog.ErrBadProof},
		"index beyond":       {alice[2], &beyond, translog.ErrBadProof},
		"bad base64":         {alice[2], &garbage, translog.ErrBadProof},
		"1000 hashes":        {alice[2], &long, translog.ErrBadProof},
		"a rewritten head":   {rewritten, good, translog.ErrBadProof},
		"an older head":      {alice[1], good, translog.ErrBadProof},
		"no proof":           {alice[2], nil, translog.ErrNotLogged},
		"another key signed": {alice[2], &otherKey, translog.ErrLogKeyChanged},
		"not a checkpoint":   {alice[2], &translog.HeadProof{Checkpoint: "hello", Proof: good.Proof}, translog.ErrBadCheckpoint},
		"empty checkpoint":   {alice[2], &translog.HeadProof{}, translog.ErrBadCheckpoint},
	} {
		if err := m.CheckHead(ctx, s.URL, c.e, c.p); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

// TestSplitViewSameSize: a checkpoint of the same size as the accepted
// one with another root, signed by the log's key (a peer saw another
// tree), is a split view carrying both notes.
func TestSplitViewSameSize(t *testing.T) {
	ctx := context.Background()
	a := tlogtest.New(t, tlogtest.Options{})
	b := tlogtest.New(t, tlogtest.Options{}) // same seed, same key
	s := newSigServer(t, a)
	alice := chainEntries("alice", 1)[0]
	a.Append(t, alice, chainEntries("bob", 1)[0])
	b.Append(t, alice, chainEntries("mallory", 1)[0])
	m := newMonitor(nil)
	if err := m.CheckHead(ctx, s.URL, alice, a.HeadProof(t, 0)); err != nil {
		t.Fatal(err)
	}
	theirs := b.Checkpoint(t).Note
	err := m.Witness(ctx, s.URL, theirs)
	var sv *translog.SplitViewError
	if !errors.As(err, &sv) || !errors.Is(err, translog.ErrSplitView) {
		t.Fatalf("Witness: %v, want a split view", err)
	}
	if !bytes.Equal(sv.Ours, a.Checkpoint(t).Note) || !bytes.Equal(sv.Theirs, theirs) || sv.Origin != tlogtest.DefaultOrigin {
		t.Fatalf("split view %+v", sv)
	}
	// The same through a chain GET of the lying server.
	s.log.Store(b)
	if err := m.CheckHead(ctx, s.URL, alice, b.HeadProof(t, 0)); !errors.Is(err, translog.ErrSplitView) {
		t.Fatalf("CheckHead: %v, want a split view", err)
	}
	if n, _ := m.Latest(ctx, s.URL); !bytes.Equal(n, sv.Ours) {
		t.Fatal("the contradicting checkpoint replaced ours")
	}
}

// TestSplitViewBigger: a bigger checkpoint of another tree (same key)
// cannot be proven consistent with ours: whatever the server answers, it
// is a split view; a server that does not answer is an error, not a
// split view, and nothing is accepted.
func TestSplitViewBigger(t *testing.T) {
	ctx := context.Background()
	a := tlogtest.New(t, tlogtest.Options{})
	b := tlogtest.New(t, tlogtest.Options{})
	s := newSigServer(t, a)
	alice := chainEntries("alice", 1)[0]
	a.Append(t, alice, chainEntries("bob", 1)[0])
	b.Append(t, append([]translog.Entry{alice}, chainEntries("mallory", 3)...)...)
	m := newMonitor(nil)
	if err := m.CheckHead(ctx, s.URL, alice, a.HeadProof(t, 0)); err != nil {
		t.Fatal(err)
	}
	ours := a.Checkpoint(t).Note

	s.log.Store(b) // the server now shows the other tree
	s.on("/v1/log/consistency", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	err := m.CheckHead(ctx, s.URL, alice, b.HeadProof(t, 0))
	if !errors.Is(err, translog.ErrInconsistent) || errors.Is(err, translog.ErrSplitView) {
		t.Fatalf("no consistency answer: %v", err)
	}
	s.on("/v1/log/consistency", nil)
	err = m.CheckHead(ctx, s.URL, alice, b.HeadProof(t, 0))
	var sv *translog.SplitViewError
	if !errors.As(err, &sv) {
		t.Fatalf("CheckHead: %v, want a split view", err)
	}
	if !bytes.Equal(sv.Ours, ours) || !bytes.Equal(sv.Theirs, b.Checkpoint(t).Note) {
		t.Fatalf("split view %+v", sv)
	}
	// A proof answered for other sizes is no proof.
	s.on("/v1/log/consistency", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"from":1,"to":4,"proof":[]}`))
	})
	if err := m.CheckHead(ctx, s.URL, alice, b.HeadProof(t, 0)); !errors.Is(err, translog.ErrInconsistent) {
		t.Fatalf("wrong sizes: %v", err)
	}
	if n, _ := m.Latest(ctx, s.URL); !bytes.Equal(n, ours) {
		t.Fatal("an unproven checkpoint was accepted")
	}

	// The other way round: bob accepted the bigger tree; alice's smaller
	// checkpoint reaches him in a message.
	s.on("/v1/log/consistency", nil)
	bob := newMonitor(nil)
	if err := bob.CheckHead(ctx, s.URL, alice, b.HeadProof(t, 0)); err != nil {
		t.Fatal(err)
	}
	err = bob.Witness(ctx, s.URL, ours)
	if !errors.As(err, &sv) || !bytes.Equal(sv.Ours, b.Checkpoint(t).Note) || !bytes.Equal(sv.Theirs, ours) {
		t.Fatalf("smaller checkpoint of another tree: %v", err)
	}
}

// TestLogKeyChanged: a pinned server that names another log key or origin
// is refused with ErrLogKeyChanged and never re-pinned.
func TestLogKeyChanged(t *testing.T) {
	ctx := context.Background()
	a := tlogtest.New(t, tlogtest.Options{})
	s := newSigServer(t, a)
	alice := chainEntries("alice", 1)[0]
	a.Append(t, alice)
	pins := translog.NewMemPins()
	m := newMonitor(pins)
	if err := m.CheckHead(ctx, s.URL, alice, a.HeadProof(t, 0)); err != nil {
		t.Fatal(err)
	}
	for name, o := range map[string]tlogtest.Options{
		"another key":    {Seed: "new key"},
		"another origin": {Origin: "other.test/sigchain-log"},
	} {
		c := tlogtest.New(t, o)
		c.Append(t, alice)
		s.log.Store(c)
		if err := m.CheckHead(ctx, s.URL, alice, c.HeadProof(t, 0)); !errors.Is(err, translog.ErrLogKeyChanged) {
			t.Errorf("%s: %v, want ErrLogKeyChanged", name, err)
		}
		if li, _, _ := pins.LogOf(ctx, s.URL); li != a.Info {
			t.Errorf("%s: re-pinned to %+v", name, li)
		}
	}
	// A server whose /v1/info still names the pinned key but whose
	// checkpoints come from another origin.
	c := tlogtest.New(t, tlogtest.Options{Origin: "other.test/sigchain-log"})
	c.Append(t, alice)
	s.log.Store(a)
	if err := m.CheckHead(ctx, s.URL, alice, c.HeadProof(t, 0)); !errors.Is(err, translog.ErrLogKeyChanged) {
		t.Errorf("other origin, same info: %v", err)
	}
}

// TestNoLog: a server that keeps no log is trusted on first use (its "no
// log" cached for 10 minutes) unless RequireLog; an older server without
// /v1/info is one too; a failing /v1/info is an error.
func TestNoLog(t *testing.T) {
	ctx := context.Background()
	s := newSigServer(t, nil)
	clock := &limittest.Clock{}
	m := newMonitor(nil)
	m.Clock = clock.Now
	alice := chainEntries("alice", 1)[0]
	for range 3 {
		if err := m.CheckHead(ctx, s.URL, alice, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.infoHits.Load(); n != 1 {
		t.Fatalf("%d /v1/info requests, want 1 (cached)", n)
	}
	clock.Add(11 * time.Minute)
	if err := m.CheckHead(ctx, s.URL, alice, nil); err != nil || s.infoHits.Load() != 2 {
		t.Fatalf("after 11 minutes: %v, %d requests", err, s.infoHits.Load())
	}
	if n, err := m.Latest(ctx, s.URL); n != nil || err != nil {
		t.Fatalf("Latest of an unlogged server: %q, %v", n, err)
	}
	strict := newMonitor(nil)
	strict.RequireLog = true
	if err := strict.CheckHead(ctx, s.URL, alice, nil); !errors.Is(err, translog.ErrNotLogged) {
		t.Fatalf("RequireLog: %v", err)
	}

	s.on("/v1/info", http.NotFound)
	if err := newMonitor(nil).CheckHead(ctx, s.URL, alice, nil); err != nil {
		t.Fatalf("no /v1/info: %v", err)
	}
	s.on("/v1/info", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) })
	if err := newMonitor(nil).CheckHead(ctx, s.URL, alice, nil); err == nil {
		t.Fatal("a failing /v1/info was taken for no log")
	}
	s.on("/v1/info", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"log":{"origin":"a.test/log","key":"b.test/log+01234567+AAAA"}}`))
	})
	if err := newMonitor(nil).CheckHead(ctx, s.URL, alice, nil); !errors.Is(err, translog.ErrBadCheckpoint) {
		t.Fatalf("a key of another name: %v", err)
	}

	// The server starts a log while "no log" is cached: a proof makes
	// the Monitor ask again, and pin it.
	s.on("/v1/info", nil)
	l := tlogtest.New(t, tlogtest.Options{})
	l.Append(t, alice)
	s.log.Store(l)
	if err := m.CheckHead(ctx, s.URL, alice, l.HeadProof(t, 0)); err != nil {
		t.Fatalf("a new log: %v", err)
	}
	if err := m.CheckHead(ctx, s.URL, alice, nil); !errors.Is(err, translog.ErrNotLogged) {
		t.Fatalf("a pinned log without proof: %v", err)
	}
}

// TestOversized: answers beyond the size cap are refused, not read.
func TestOversized(t *testing.T) {
	ctx := context.Background()
	huge := func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"log":null,"x":"`))
		w.Write(bytes.Repeat([]byte("x"), 1<<20))
		w.Write([]byte(`"}`))
	}
	s := newSigServer(t, nil)
	s.on("/v1/info", huge)
	alice := chainEntries("alice", 1)[0]
	if err := newMonitor(nil).CheckHead(ctx, s.URL, alice, nil); err == nil || !strings.Contains(err.Error(), "too large") {
		t.Fatalf("huge /v1/info: %v", err)
	}

	l := tlogtest.New(t, tlogtest.Options{})
	s.on("/v1/info", nil)
	s.log.Store(l)
	l.Append(t, alice)
	m := newMonitor(nil)
	if err := m.CheckHead(ctx, s.URL, alice, l.HeadProof(t, 0)); err != nil {
		t.Fatal(err)
	}
	l.Append(t, chainEntries("bob", 1)...)
	s.on("/v1/log/consistency", huge)
	if err := m.CheckHead(ctx, s.URL, alice, l.HeadProof(t, 0)); !errors.Is(err, translog.ErrInconsistent) || errors.Is(err, translog.ErrSplitView) {
		t.Fatalf("huge consistency answer: %v", err)
	}
	big := &translog.HeadProof{Checkpoint: strings.Repeat("x", 1<<20)}
	if err := m.CheckHead(ctx, s.URL, alice, big); !errors.Is(err, translog.ErrBadCheckpoint) {
		t.Fatalf("huge checkpoint: %v", err)
	}
}

// TestWitness: checkpoints seen elsewhere move the newest checkpoint
// forward when proven; those of unknown servers are ignored and forged
// ones refused.
func TestWitness(t *testing.T) {
	ctx := context.Background()
	l := tlogtest.New(t, tlogtest.Options{})
	s := newSigServer(t, l)
	m := newMonitor(nil)
	if err := m.Witness(ctx, s.URL, []byte("anything")); err != nil {
		t.Fatalf("unknown server: %v", err)
	}
	alice := chainEntries("alice", 1)[0]
	l.Append(t, alice)
	if err := m.CheckHead(ctx, s.URL, alice, l.HeadProof(t, 0)); err != nil {
		t.Fatal(err)
	}
	l.Append(t, chainEntries("bob", 2)...)
	newer := l.Checkpoint(t).Note
	if err := m.Witness(ctx, s.URL, newer); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Latest(ctx, s.URL); !bytes.Equal(n, newer) {
		t.Fatal("a proven newer checkpoint was not kept")
	}
	forged := signText(t, "not the log's key", tlogtest.DefaultOrigin, cpText(tlogtest.DefaultOrigin, 9, bytes.Repeat([]byte{1}, 32)))
	if err := m.Witness(ctx, s.URL, forged); !errors.Is(err, translog.ErrBadCheckpoint) {
		t.Fatalf("forged: %v", err)
	}
}

// TestMonitorConcurrent: concurrent checks of one log by one Monitor.
func TestMonitorConcurrent(t *testing.T) {
	ctx := context.Background()
	l := tlogtest.New(t, tlogtest.Options{})
	s := newSigServer(t, l)
	m := newMonitor(nil)
	es := chainEntries("alice", 4)
	var proofs []*translog.HeadProof
	for i, e := range es {
		l.Append(t, e)
		proofs = append(proofs, l.HeadProof(t, uint64(i)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4*len(es))
	for range 4 {
		for i, e := range es {
			wg.Go(func() {
				errs <- m.CheckHead(ctx, s.URL, e, proofs[i])
				_, _ = m.Latest(ctx, s.URL)
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := m.Latest(ctx, s.URL); !bytes.Equal(n, l.Checkpoint(t).Note) {
		t.Fatal("the newest checkpoint is not the newest")
	}
	if s.infoHits.Load() != 1 {
		t.Errorf("%d /v1/info requests", s.infoHits.Load())
	}
}

// TestOriginSquat: another sig-server that names the origin of a log it
// does not hold (with its own key) cannot lock a client out of the real
// log: the accepted checkpoints are kept per log (origin and key), so the
// squatter's checkpoint, seen first, does not stand in for the real log's.
func TestOriginSquat(t *testing.T) {
	ctx := context.Background()
	real := tlogtest.New(t, tlogtest.Options{})
	squat := tlogtest.New(t, tlogtest.Options{Seed: "squatter"}) // same origin, another key
	if real.Info.Origin != squat.Info.Origin || real.Info.Key == squat.Info.Key {
		t.Fatal("want one origin, two keys")
	}
	rs, ss := newSigServer(t, real), newSigServer(t, squat)
	alice := chainEntries("alice", 1)[0]
	real.Append(t, alice)
	squat.Append(t, chainEntries("mallory", 2)...)
	m := newMonitor(translog.NewMemPins())
	if err := m.CheckHead(ctx, ss.URL, chainEntries("mallory", 2)[1], squat.HeadProof(t, 1)); err != nil {
		t.Fatal(err)
	}
	if err := m.CheckHead(ctx, rs.URL, alice, real.HeadProof(t, 0)); err != nil {
		t.Fatalf("the real log after a squatter of its origin: %v", err)
	}
	for url, want := range map[string]*tlogtest.Log{rs.URL: real, ss.URL: squat} {
		n, err := m.Latest(ctx, url)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := translog.ParseCheckpoint(n, want.Info.Key); err != nil {
			t.Errorf("latest of %s: %v", url, err)
		}
	}
	// Each log's own history is still checked: a witnessed checkpoint of
	// the squatter's log does not verify as the real one's.
	if err := m.Witness(ctx, rs.URL, []byte(squat.HeadProof(t, 1).Checkpoint)); !errors.Is(err, translog.ErrBadCheckpoint) {
		t.Errorf("squatter's checkpoint witnessed for the real server: %v", err)
	}
}
