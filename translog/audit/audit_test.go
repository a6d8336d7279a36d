package audit_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/internal/testenv/tlogtest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/audit"
	"github.com/kez-lat/kez-chat/translog/logserver"
)

var discard = slog.New(slog.DiscardHandler)

// rig is a sig-server on a real listener: the chain endpoint of a real
// handler over a real SQLite store, and a real tessera log that a test
// may swap for another one at the same URL (a lying server).
type rig struct {
	url    string
	chains *sigchain.Client
	logs   atomic.Pointer[http.Handler] // what serves /v1/info and /v1/log/
	state  string                       // the audit's state file
}

// serve makes the rig serve l as its log.
func (r *rig) serve(l *tlogtest.Log) {
	h := l.Handler()
	r.logs.Store(&h)
}

func newRig(t testing.TB, l *tlogtest.Log, limits sigchain.Limits) *rig {
	t.Helper()
	store, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	r := &rig{state: filepath.Join(t.TempDir(), "audit.db")}
	r.serve(l)
	mux := http.NewServeMux()
	mux.Handle(sigchain.ChainsPath, sigchain.NewHandler(store, sigchain.WithLimits(limits), sigchain.WithLogger(discard)))
	logs := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { (*r.logs.Load()).ServeHTTP(w, req) })
	mux.Handle("/v1/info", logs)
	mux.Handle("/v1/log/", logs)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	r.url = srv.URL
	// The test's own appends are not the audit's reads: no limits.
	r.chains = &sigchain.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}
	return r
}

func (r *rig) config() audit.Config {
	return audit.Config{Server: r.url, State: r.state, Logger: discard}
}

// audit runs one audit and fails the test on an error.
func (r *rig) audit(t *testing.T) *audit.Summary {
	t.Helper()
	sum, err := audit.Run(context.Background(), r.config())
	if err != nil {
		t.Fatalf("audit: %v", err)
	}
	return sum
}

// chain is one person's sigchain, built link by link.
type chain struct {
	id      *kez.Identity
	st      *sigchain.State
	links   []*sigchain.Link
	variant int // another variant makes other links: claims of other names, times a second later each
}

func newChain(t testing.TB, name string) *chain {
	t.Helper()
	seed := sha256.Sum256([]byte("audit test " + name))
	id, err := kez.FromSeed(append(seed[:], seed[:]...))
	if err != nil {
		t.Fatal(err)
	}
	return &chain{id: id}
}

// next makes the chain's next link (the eldest, then claims) without
// storing it anywhere.
func (c *chain) next(t testing.TB) *sigchain.Link {
	t.Helper()
	typ, body := sigchain.TypeEldest, sigchain.EldestBody(c.id.PublicKey(), c.id.EncryptionKey(0).PublicKey(), 0, "")
	if c.st != nil {
		n := len(c.links) + 1
		typ, body = sigchain.TypeAddClaim, sigchain.AddClaimBody("github", fmt.Sprintf("user%d-%d", n, c.variant), fmt.Sprintf("https://example.com/%d", n))
	}
	l, err := sigchain.NewLink(c.id, c.st, typ, body, time.Now().Add(time.Duration(c.variant)*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if c.st == nil {
		c.st, err = sigchain.Verify([]*sigchain.Link{l})
	} else {
		c.st, err = c.st.Extend([]*sigchain.Link{l})
	}
	if err != nil {
		t.Fatal(err)
	}
	c.links = append(c.links, l)
	return l
}

// entry is the log entry of link l.
func entry(l *sigchain.Link) translog.Entry {
	return translog.Entry{Key: l.Key(), Seqno: l.Seqno(), ID: l.ID().String()}
}

// grow makes n links of c, stores them at the sig-server and returns
// their entries (not logged yet).
func (r *rig) grow(t testing.TB, c *chain, n int) []translog.Entry {
	t.Helper()
	var es []translog.Entry
	for range n {
		l := c.next(t)
		if err := r.chains.Append(context.Background(), l); err != nil {
			t.Fatal(err)
		}
		es = append(es, entry(l))
	}
	return es
}

// findings returns "kind key-name seqno" for each finding, sorted.
func findings(s *audit.Summary, names map[kez.PublicKey]string) []string {
	var out []string
	for _, f := range s.Findings {
		out = append(out, fmt.Sprintf("%s %s %d", f.Kind, names[f.Key], f.Seqno))
	}
	slices.Sort(out)
	return out
}

func names(cs map[string]*chain) map[kez.PublicKey]string {
	m := map[kez.PublicKey]string{}
	for n, c := range cs {
		m[c.id.PublicKey()] = n
	}
	return m
}

func wantFindings(t *testing.T, s *audit.Summary, cs map[string]*chain, want ...string) {
	t.Helper()
	got := findings(s, names(cs))
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("findings %q, want %q\n%+v", got, want, s.Findings)
	}
}

// An honest log: no findings; a second run reads only the new entries
// and compares only the chains they touch; a third reads nothing.
func TestHonestLogAndResume(t *testing.T) {
	l := tlogtest.New(t, tlogtest.Options{})
	r := newRig(t, l, sigchain.NoLimits())
	cs := map[string]*chain{"a": newChain(t, "a"), "b": newChain(t, "b"), "c": newChain(t, "c")}
	for _, n := range []string{"a", "b", "c"} {
		l.Append(t, r.grow(t, cs[n], 3)...)
	}
	s := r.audit(t)
	wantFindings(t, s, cs)
	if s.From != 0 || s.To != 9 || s.Entries != 9 || s.Keys != 3 || s.Origin != tlogtest.DefaultOrigin {
		t.Errorf("first run: %+v", s)
	}
	if cp := l.Checkpoint(t); string(s.Checkpoint) != string(cp.Note) {
		t.Errorf("the summary's checkpoint is not the log's:\n%s", s.Checkpoint)
	}

	l.Append(t, r.grow(t, cs["a"], 1)...)
	l.Append(t, r.grow(t, cs["c"], 2)...)
	s = r.audit(t)
	wantFindings(t, s, cs)
	if s.From != 9 || s.To != 12 || s.Entries != 3 || s.Keys != 2 {
		t.Errorf("second run: %+v", s)
	}

	s = r.audit(t)
	wantFindings(t, s, cs)
	if s.From != 12 || s.To != 12 || s.Entries != 0 || s.Keys != 0 {
		t.Errorf("third run: %+v", s)
	}
}

// A second log with the same key, where one old entry differs, served at
// the same URL after the first audit: inconsistent, and nothing recorded
// (the honest log audits on from where it was).
func TestRewrittenLog(t *testing.T) {
	honest := tlogtest.New(t, tlogtest.Options{})
	r := newRig(t, honest, sigchain.NoLimits())
	cs := map[string]*chain{"a": newChain(t, "a"), "b": newChain(t, "b")}
	es := append(r.grow(t, cs["a"], 2), r.grow(t, cs["b"], 2)...)
	honest.Append(t, es...)
	if s := r.audit(t); s.Problems() != 0 || s.To != 4 {
		t.Fatalf("first audit: %+v", s)
	}

	// The same size, one entry changed: another root at size 4.
	same := tlogtest.New(t, tlogtest.Options{})
	forged := slices.Clone(es)
	forged[1].ID = es[3].ID
	same.Append(t, forged...)
	r.serve(same)
	s := r.audit(t)
	wantFindings(t, s, cs, "inconsistent  0")
	if s.From != 4 || s.To != 4 || s.Entries != 0 {
		t.Errorf("same size: %+v", s)
	}

	// Longer, with the changed entry: the entries do not hash to its root.
	longer := tlogtest.New(t, tlogtest.Options{})
	more := r.grow(t, cs["a"], 1)
	longer.Append(t, append(forged, more...)...)
	r.serve(longer)
	s = r.audit(t)
	wantFindings(t, s, cs, "inconsistent  0")
	if s.From != 4 || s.To != 4 || s.Entries != 0 {
		t.Errorf("longer: %+v", s)
	}

	// The honest log again, grown: audited on from entry 4.
	honest.Append(t, more...)
	r.serve(honest)
	s = r.audit(t)
	wantFindings(t, s, cs)
	if s.From != 4 || s.To != 5 || s.Keys != 1 {
		t.Errorf("honest again: %+v", s)
	}
}

// A log that dropped an entry: inconsistent for the audit that saw it;
// audited from scratch, a gap in the key's history.
func TestDroppedEntry(t *testing.T) {
	honest := tlogtest.New(t, tlogtest.Options{})
	r := newRig(t, honest, sigchain.NoLimits())
	cs := map[string]*chain{"a": newChain(t, "a"), "b": newChain(t, "b")}
	es := append(r.grow(t, cs["a"], 3), r.grow(t, cs["b"], 1)...)
	honest.Append(t, es...)
	if s := r.audit(t); s.Problems() != 0 {
		t.Fatalf("first audit: %+v", s)
	}

	dropped := tlogtest.New(t, tlogtest.Options{})
	more := r.grow(t, cs["b"], 2)
	dropped.Append(t, append(slices.Delete(slices.Clone(es), 1, 2), more...)...) // without a's seqno 2
	r.serve(dropped)
	wantFindings(t, r.audit(t), cs, "inconsistent  0")

	r.state = filepath.Join(t.TempDir(), "fresh.db")
	s := r.audit(t)
	wantFindings(t, s, cs, "gap a 3")
	if s.Entries != 5 || s.Keys != 2 {
		t.Errorf("from scratch: %+v", s)
	}
}

// The log names a link at a seqno, the chain endpoint serves another
// there: mismatch. The log has links the chain endpoint does not serve:
// hidden.
func TestMismatchAndHidden(t *testing.T) {
	l := tlogtest.New(t, tlogtest.Options{})
	r := newRig(t, l, sigchain.NoLimits())
	cs := map[string]*chain{"a": newChain(t, "a"), "b": newChain(t, "b"), "ok": newChain(t, "ok")}
	es := r.grow(t, cs["a"], 2)
	// a's seqno 3 as logged: a link the server never got...
	other := *cs["a"]
	other.links, other.variant = slices.Clone(other.links), 1
	logged := other.next(t)
	// ...while it stores another link at seqno 3.
	es = append(es, entry(logged))
	r.grow(t, cs["a"], 1)
	// b: 3 links logged, the server holds 2.
	es = append(es, r.grow(t, cs["b"], 2)...)
	es = append(es, entry(cs["b"].next(t)))
	es = append(es, r.grow(t, cs["ok"], 2)...)
	l.Append(t, es...)

	s := r.audit(t)
	wantFindings(t, s, cs, "mismatch a 3", "hidden b 3")
	if s.Keys != 3 {
		t.Errorf("keys %d, want 3", s.Keys)
	}
}

// Two link IDs at one seqno: fork (an identical duplicate is fine). A
// deletion entry resets the key: a notice, after which seqno 1 may come
// again with another link.
func TestForkAndDeletion(t *testing.T) {
	l := tlogtest.New(t, tlogtest.Options{})
	r := newRig(t, l, sigchain.NoLimits())
	cs := map[string]*chain{"a": newChain(t, "a"), "gone": newChain(t, "gone"), "again": newChain(t, "again")}
	es := r.grow(t, cs["a"], 2)
	forked := *cs["a"]
	forked.st, forked.links, forked.variant = nil, nil, 1
	forked.next(t)
	twin := entry(forked.next(t)) // another seqno 2
	es = append(es, es[1], twin)  // a duplicate of seqno 2, then another link there

	// "gone": logged, deleted, its chain no longer served.
	g := cs["gone"]
	es = append(es, entry(g.next(t)), translog.Entry{Key: g.id.PublicKey()})
	// "again": logged with one eldest, deleted, logged again with another.
	old := cs["again"]
	es = append(es, entry(old.next(t)), translog.Entry{Key: old.id.PublicKey()})
	old.st, old.links, old.variant = nil, nil, 1
	es = append(es, r.grow(t, old, 2)...)
	l.Append(t, es...)

	s := r.audit(t)
	wantFindings(t, s, cs, "fork a 2", "deleted gone 0", "deleted again 0")
	if s.Problems() != 1 {
		t.Errorf("problems %d, want 1 (notices are not problems)", s.Problems())
	}
	for _, f := range s.Findings {
		if f.Kind == audit.KindFork && f.Index != 3 {
			t.Errorf("fork at index %d, want 3: %+v", f.Index, f)
		}
	}
}

// The chain endpoint's rate limit (the real limiter, a fake clock) is
// waited out: the audit completes without findings.
func TestWaitsOutRateLimit(t *testing.T) {
	l := tlogtest.New(t, tlogtest.Options{})
	clock := &limittest.Clock{}
	lim := sigchain.NoLimits()
	lim.ReadsPerIP = ratelimit.Limit{N: 1, Per: time.Minute}
	lim.Now = clock.Now
	r := newRig(t, l, lim)
	cs := map[string]*chain{"a": newChain(t, "a"), "b": newChain(t, "b"), "c": newChain(t, "c")}
	for _, c := range cs {
		l.Append(t, r.grow(t, c, 1)...)
	}
	var mu sync.Mutex
	var waited []time.Duration
	audit.SetWait(t, func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		waited = append(waited, d)
		mu.Unlock()
		clock.Add(d)
		return nil
	})
	s := r.audit(t)
	wantFindings(t, s, cs)
	if s.Keys != 3 {
		t.Errorf("keys %d, want 3", s.Keys)
	}
	if len(waited) < 2 || waited[0] != time.Minute {
		t.Errorf("waited %v, want at least two waits of 1m", waited)
	}
}

// A wait longer than the audit accepts fails it with the server's
// answer, and the chains not compared are compared by the next run.
func TestTooLongAWaitFailsAndResumes(t *testing.T) {
	l := tlogtest.New(t, tlogtest.Options{})
	clock := &limittest.Clock{}
	lim := sigchain.NoLimits()
	lim.ReadsPerIP = ratelimit.Limit{N: 1, Per: 24 * time.Hour}
	lim.Now = clock.Now
	r := newRig(t, l, lim)
	cs := map[string]*chain{"a": newChain(t, "a"), "b": newChain(t, "b")}
	for _, c := range cs {
		l.Append(t, r.grow(t, c, 1)...)
	}
	sum, err := audit.Run(context.Background(), r.config())
	if !errors.Is(err, ratelimit.ErrLimited) || sum == nil || sum.To != 2 {
		t.Fatalf("got %+v, %v; want the entries recorded and ErrLimited", sum, err)
	}
	clock.Add(24 * time.Hour)
	s := r.audit(t)
	if s.Entries != 0 || s.Keys != 1 || s.Problems() != 0 {
		t.Errorf("the next run: %+v, want the chain left compared", s)
	}
}

// A log read in batches of one bundle: each batch before the last is
// proven part of the checkpoint by a consistency proof. Entry bundles
// that differ from what the checkpoint commits to (one entry of the first
// bundle rewritten) fail that proof: nothing is recorded.
func TestBatches(t *testing.T) {
	audit.SetBatchBundles(t, 1)
	honest := tlogtest.New(t, tlogtest.Options{})
	r := newRig(t, honest, sigchain.NoLimits())
	cs := map[string]*chain{}
	var es []translog.Entry
	for i := range 300 {
		c := newChain(t, fmt.Sprint(i))
		cs[fmt.Sprint(i)] = c
		es = append(es, entry(c.next(t))) // logged only: the server serves none
	}
	appendAll(t, honest, es)
	s := r.audit(t)
	if s.Entries != 300 || s.To != 300 || s.Keys != 300 || s.Problems() != 300 {
		t.Fatalf("got %d entries to %d, %d keys, %d problems", s.Entries, s.To, s.Keys, s.Problems())
	}
	for _, f := range s.Findings {
		if f.Kind != audit.KindHidden {
			t.Fatalf("finding %+v, want hidden", f)
		}
	}

	// The honest log's bundles under the checkpoint (and consistency
	// proofs) of a log where entry 100 differs.
	forged := tlogtest.New(t, tlogtest.Options{})
	fes := slices.Clone(es)
	fes[100].ID = es[101].ID
	appendAll(t, forged, fes)
	mixed := http.NewServeMux()
	mixed.Handle("/v1/log/tile/", honest.Handler())
	mixed.Handle("/", forged.Handler())
	var h http.Handler = mixed
	r.logs.Store(&h)
	r.state = filepath.Join(t.TempDir(), "batches.db")
	s = r.audit(t)
	if s.To != 0 || len(s.Findings) != 1 || s.Findings[0].Kind != audit.KindInconsistent || !strings.Contains(s.Findings[0].Detail, "up to 256") {
		t.Errorf("got To %d, %+v; want nothing recorded, one inconsistent finding", s.To, s.Findings)
	}
}

// appendAll logs entries of distinct keys concurrently (their order in the
// log does not matter).
func appendAll(t *testing.T, l *tlogtest.Log, es []translog.Entry) {
	var wg sync.WaitGroup
	for _, e := range es {
		wg.Go(func() { l.Append(t, e) })
	}
	wg.Wait()
}

// A server without a log, or one that no longer names the pinned one.
func TestNoLogAndChangedKey(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(srv.Close)
	_, err := audit.Run(context.Background(), audit.Config{Server: srv.URL, State: filepath.Join(t.TempDir(), "a.db"), Logger: discard})
	if !errors.Is(err, audit.ErrNoLog) {
		t.Errorf("no /v1/info: %v, want ErrNoLog", err)
	}

	l := tlogtest.New(t, tlogtest.Options{})
	r := newRig(t, l, sigchain.NoLimits())
	cs := map[string]*chain{"a": newChain(t, "a")}
	l.Append(t, r.grow(t, cs["a"], 1)...)
	r.audit(t)
	r.serve(tlogtest.New(t, tlogtest.Options{Seed: "another key"}))
	s := r.audit(t)
	wantFindings(t, s, cs, "inconsistent  0")
	if !strings.Contains(s.Findings[0].Detail, "not the pinned") {
		t.Errorf("detail %q", s.Findings[0].Detail)
	}
}

// openLogServer opens a sig-server's log (package logserver) in a
// temporary folder, closed by t.Cleanup.
func openLogServer(t testing.TB) *logserver.Log {
	t.Helper()
	dir := t.TempDir()
	signer, _, err := logserver.LoadOrCreateKey(filepath.Join(dir, "log.key"), "kez.test/sigchain-log")
	if err != nil {
		t.Fatal(err)
	}
	l, err := logserver.Open(context.Background(), logserver.Config{Dir: filepath.Join(dir, "log"), Signer: signer,
		CheckpointInterval: logserver.MinCheckpointInterval, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(context.Background()) })
	return l
}

// The sig-server's log endpoints (their real limiter, a fake clock) and
// its chain endpoint answer 429 with Retry-After: the audit waits them
// out and completes.
func TestLogServerRateLimitWaitedOut(t *testing.T) {
	clock := &limittest.Clock{}
	lim := sigchain.NoLimits()
	lim.ReadsPerIP = ratelimit.Limit{N: 1, Per: time.Minute}
	lim.Now = clock.Now
	r := newRig(t, tlogtest.New(t, tlogtest.Options{}), lim)
	l := openLogServer(t)
	var h http.Handler = l.Handler(logserver.Limits{ReadsPerIP: ratelimit.Limit{N: 2, Per: time.Minute}, Now: clock.Now})
	r.logs.Store(&h)
	cs := map[string]*chain{"a": newChain(t, "a"), "b": newChain(t, "b")}
	for _, n := range []string{"a", "b"} {
		for _, e := range r.grow(t, cs[n], 2) {
			if _, err := l.Append(context.Background(), e); err != nil {
				t.Fatal(err)
			}
		}
	}
	var waits atomic.Int32
	audit.SetWait(t, func(ctx context.Context, d time.Duration) error {
		waits.Add(1)
		clock.Add(d)
		return nil
	})
	s := r.audit(t)
	wantFindings(t, s, cs)
	if s.Entries != 4 || s.Keys != 2 || s.Origin != "kez.test/sigchain-log" {
		t.Errorf("summary %+v", s)
	}
	// info, checkpoint: 2 reads; the bundle: a wait; the second chain: a wait.
	if waits.Load() < 2 {
		t.Errorf("%d waits, want at least 2", waits.Load())
	}
}

// newLoggingRig is a real sig-server that logs the links it stores in its
// log (sigchain.WithLog over package logserver), on a real listener.
func newLoggingRig(t testing.TB) (*rig, *sqlitestore.Store) {
	t.Helper()
	l := openLogServer(t)
	store, err := sqlitestore.Open(filepath.Join(t.TempDir(), "sig.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	mux := http.NewServeMux()
	mux.Handle(sigchain.ChainsPath, sigchain.NewHandler(store, sigchain.WithLimits(sigchain.NoLimits()), sigchain.WithLogger(discard), sigchain.WithLog(l)))
	logs := l.Handler(logserver.Limits{ReadsPerIP: ratelimit.Unlimited})
	mux.Handle("/v1/info", logs)
	mux.Handle("/v1/log/", logs)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &rig{url: srv.URL, chains: &sigchain.Client{BaseURL: srv.URL, HTTPClient: srv.Client()}, state: filepath.Join(t.TempDir(), "audit.db")}, store
}

// A real sig-server that logs its links itself (sigchain.WithLog): an
// honest audit; an orphan chain it collected and that was made again is a
// deletion notice; one collected and never read since has its deletion
// logged when the audit reads it, which the audit waits for instead of
// calling the chain hidden.
func TestSigServerWithLog(t *testing.T) {
	r, store := newLoggingRig(t)
	cs := map[string]*chain{"a": newChain(t, "a"), "b": newChain(t, "b")}
	r.grow(t, cs["a"], 3)
	r.grow(t, cs["b"], 2)
	s := r.audit(t)
	wantFindings(t, s, cs)
	if s.Entries != 5 || s.Keys != 2 {
		t.Errorf("first audit: %+v", s)
	}

	// Both chains name no handle: orphans, collected.
	if n, err := store.CollectOrphans(context.Background(), time.Now().Add(time.Hour)); err != nil || n != 2 {
		t.Fatalf("collected %d orphans, %v", n, err)
	}
	a := cs["a"]
	a.st, a.links, a.variant = nil, nil, 1
	r.grow(t, a, 1) // the server logs a's deletion, then its new eldest
	s = r.audit(t)
	wantFindings(t, s, cs, "deleted a 0")
	if s.Problems() != 0 || s.Entries != 2 || s.Keys != 1 {
		t.Errorf("after a's deletion: %+v", s)
	}

	// b's deletion is logged when the audit reads its chain.
	s = r.audit(t)
	wantFindings(t, s, cs)
	r.state = filepath.Join(t.TempDir(), "fresh.db")
	s = r.audit(t)
	wantFindings(t, s, cs, "deleted a 0", "deleted b 0")
	if s.Problems() != 0 || s.Entries != 8 || s.Keys != 2 {
		t.Errorf("from scratch: %+v", s)
	}
}
