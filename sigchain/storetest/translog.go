package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/logserver"
	"github.com/transparency-dev/tessera/client"
)

// runLog checks the transparency log (sigchain.WithLog over a real
// translog/logserver log) over the store: appends answered once logged,
// links stored behind the log's back logged by the next request, deleted
// chains logged as deletions, concurrent appends logged once, and a log
// that fails refusing the answer but not the link.
func runLog(t *testing.T, open Open) {
	t.Run("LogAppend", func(t *testing.T) { testLogAppend(t, open) })
	t.Run("LogRepair", func(t *testing.T) { testLogRepair(t, open) })
	t.Run("LogCrash", func(t *testing.T) { testLogCrash(t, open) })
	t.Run("LogDeletion", func(t *testing.T) { testLogDeletion(t, open) })
	t.Run("LogConcurrent", func(t *testing.T) { testLogConcurrent(t, open) })
	t.Run("LogUnavailable", func(t *testing.T) { testLogUnavailable(t, open) })
	t.Run("LogClientGone", func(t *testing.T) { testLogClientGone(t, open) })
}

// logServer is a sig-server handler with a log over a store, and the
// log's own API beside it.
type logServer struct {
	store sigchain.Store
	log   *logserver.Log
	url   string
	c     *sigchain.Client
	// monitor checks the proofs as a client does (a pinned log key,
	// consistency with the checkpoints it saw before).
	monitor *translog.Monitor
}

// openLog opens (or reopens) the log in dir, closed by t.Cleanup.
func openLog(t *testing.T, dir string) *logserver.Log {
	t.Helper()
	signer, _, err := logserver.LoadOrCreateKey(filepath.Join(dir, "log.key"), "kez.test/sigchain-log")
	if err != nil {
		t.Fatal(err)
	}
	lg, err := logserver.Open(context.Background(), logserver.Config{Dir: dir, Signer: signer,
		CheckpointInterval: logserver.MinCheckpointInterval, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lg.Close(context.Background()) })
	return lg
}

// startLog serves a handler over s that logs in lg.
func startLog(t *testing.T, s sigchain.Store, lg *logserver.Log) *logServer {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/", sigchain.NewHandler(s, sigchain.WithLog(lg), sigchain.WithLimits(sigchain.NoLimits()), sigchain.WithLogger(slog.New(slog.DiscardHandler))))
	lh := lg.Handler(logserver.Limits{ReadsPerIP: ratelimit.Unlimited})
	mux.Handle(logserver.InfoPath, lh)
	mux.Handle(logserver.LogPath, lh)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &logServer{store: s, log: lg, url: srv.URL, c: &sigchain.Client{BaseURL: srv.URL, HTTPClient: srv.Client()},
		monitor: &translog.Monitor{Pins: translog.NewMemPins(), HTTPClient: srv.Client(), RequireLog: true}}
}

// page is a chain GET answer with its "log".
type page struct {
	HeadSeqno uint64              `json:"head_seqno"`
	Head      string              `json:"head"`
	Log       *translog.HeadProof `json:"log"`
}

// get reads key's chain (all of it) and returns the status and the page.
func (ls *logServer) get(t *testing.T, key kez.PublicKey) (int, page) {
	t.Helper()
	resp, err := http.Get(ls.url + sigchain.ChainsPath + key.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p page
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, p
}

// wantProven checks that a GET of the chain of want's key has head want
// and a "log" proof of it that verifies with the log's key.
func (ls *logServer) wantProven(t *testing.T, what string, want *sigchain.Link) {
	t.Helper()
	status, p := ls.get(t, want.Key())
	if status != http.StatusOK || p.HeadSeqno != want.Seqno() || p.Head != want.ID().String() {
		t.Fatalf("%s: GET %d, head %d %s; want %d %s", what, status, p.HeadSeqno, p.Head, want.Seqno(), want.ID())
	}
	if p.Log == nil {
		t.Fatalf("%s: the page has no \"log\"", what)
	}
	e := translog.Entry{Key: want.Key(), Seqno: want.Seqno(), ID: want.ID().String()}
	if err := ls.monitor.CheckHead(context.Background(), ls.url, e, p.Log); err != nil {
		t.Fatalf("%s: the head's proof: %v", what, err)
	}
}

// entries reads the whole published log over HTTP (tessera's client).
func (ls *logServer) entries(t *testing.T) []translog.Entry {
	t.Helper()
	ctx := context.Background()
	u, _ := url.Parse(ls.url + logserver.LogPath)
	f, err := client.NewHTTPFetcher(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := f.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := translog.ParseCheckpoint(raw, ls.log.Info().Key)
	if err != nil {
		t.Fatal(err)
	}
	var out []translog.Entry
	for b := uint64(0); b*256 < cp.Size; b++ {
		bundle, err := client.GetEntryBundle(ctx, f.ReadEntryBundle, b, cp.Size)
		if err != nil {
			t.Fatal(err)
		}
		for _, data := range bundle.Entries {
			e, err := translog.ParseEntry(data)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	return out[:cp.Size]
}

// ent is the log entry of l.
func ent(l *sigchain.Link) translog.Entry {
	return translog.Entry{Key: l.Key(), Seqno: l.Seqno(), ID: l.ID().String()}
}

// ents are the log entries of links.
func ents(links ...*sigchain.Link) []translog.Entry {
	out := make([]translog.Entry, len(links))
	for i, l := range links {
		out[i] = ent(l)
	}
	return out
}

// deletion is the deletion entry of key.
func deletion(key kez.PublicKey) translog.Entry { return translog.Entry{Key: key} }

// wantEntries checks the whole log against want.
func (ls *logServer) wantEntries(t *testing.T, what string, want ...translog.Entry) {
	t.Helper()
	got := ls.entries(t)
	str := func(es []translog.Entry) string {
		var b bytes.Buffer
		for _, e := range es {
			fmt.Fprintf(&b, "\n\t%s", e)
		}
		return b.String()
	}
	if str(got) != str(want) {
		t.Fatalf("%s: the log holds%s\nwant%s", what, str(got), str(want))
	}
}

// testLogAppend: every append is logged before it is answered, and each
// GET proves the head at that moment.
func testLogAppend(t *testing.T, open Open) {
	s, _ := open(t)
	ls := startLog(t, s, openLog(t, t.TempDir()))
	links := Chain(t, Identity(t, 60), 3)
	for _, l := range links {
		if err := ls.c.Append(context.Background(), l); err != nil {
			t.Fatal(err)
		}
		ls.wantProven(t, fmt.Sprintf("after seqno %d", l.Seqno()), l)
	}
	ls.wantEntries(t, "three appends", ents(links...)...)
	// A retry of a stored link is answered 200 and logs nothing again.
	if err := ls.c.Append(context.Background(), links[1]); err != nil {
		t.Fatal(err)
	}
	ls.wantEntries(t, "after a retry", ents(links...)...)
}

// testLogRepair: chains stored before the log existed are logged, in
// order, by their first GET, which then proves the head.
func testLogRepair(t *testing.T, open Open) {
	s, _ := open(t)
	a, b := Chain(t, Identity(t, 61), 4), Chain(t, Identity(t, 62), 2)
	appendAll(t, s, a)
	appendAll(t, s, b)
	ls := startLog(t, s, openLog(t, t.TempDir()))
	ls.wantProven(t, "first GET of a", a[3])
	ls.wantEntries(t, "a repaired", ents(a...)...)
	ls.wantProven(t, "first GET of b", b[1])
	ls.wantEntries(t, "b repaired", ents(append(append([]*sigchain.Link{}, a...), b...)...)...)
	ls.wantProven(t, "a again", a[3])
	if n := len(ls.entries(t)); n != 6 {
		t.Fatalf("a second GET logged more: %d entries", n)
	}
}

// testLogCrash: a link stored and not logged (a crash between the store
// and the log, simulated by storing through the store directly) is logged
// before the next link, in order.
func testLogCrash(t *testing.T, open Open) {
	s, _ := open(t)
	ls := startLog(t, s, openLog(t, t.TempDir()))
	links := Chain(t, Identity(t, 63), 4)
	for _, l := range links[:2] {
		if err := ls.c.Append(context.Background(), l); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Append(context.Background(), links[2]); err != nil {
		t.Fatal(err)
	}
	if err := ls.c.Append(context.Background(), links[3]); err != nil {
		t.Fatal(err)
	}
	ls.wantEntries(t, "after the crash", ents(links...)...)
	ls.wantProven(t, "head after the crash", links[3])
}

// testLogDeletion: an orphan collected is logged as a deletion entry, and
// the key's new chain from seqno 1 after it; so is a chain replaced
// behind the log's back by a longer one.
func testLogDeletion(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	c := collector(t, s)
	ls := startLog(t, s, openLog(t, t.TempDir()))
	id := Identity(t, 64)
	_, orphan := next(t, id, nil, sigchain.TypeEldest, eldest(id, ""))
	if err := ls.c.Append(ctx, orphan); err != nil {
		t.Fatal(err)
	}
	if n, err := c.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("collected %d, %v", n, err)
	}
	if status, _ := ls.get(t, id.PublicKey()); status != http.StatusNotFound {
		t.Fatalf("GET of the collected chain: %d", status)
	}
	ls.wantEntries(t, "after the collection", ent(orphan), deletion(id.PublicKey()))
	if status, _ := ls.get(t, id.PublicKey()); status != http.StatusNotFound {
		t.Fatalf("GET of the collected chain again: %d", status)
	}
	ls.wantEntries(t, "one deletion entry only", ent(orphan), deletion(id.PublicKey()))

	_, named := next(t, id, nil, sigchain.TypeEldest, eldest(id, "x@kez.lat"))
	if err := ls.c.Append(ctx, named); err != nil {
		t.Fatal(err)
	}
	ls.wantEntries(t, "the new chain", ent(orphan), deletion(id.PublicKey()), ent(named))
	ls.wantProven(t, "the new chain", named)

	// Another orphan, collected and replaced by a longer chain through the
	// store alone: its first GET logs the deletion, then the new chain.
	id2 := Identity(t, 65)
	_, o2 := next(t, id2, nil, sigchain.TypeEldest, eldest(id2, ""))
	if err := ls.c.Append(ctx, o2); err != nil {
		t.Fatal(err)
	}
	if n, err := c.CollectOrphans(ctx, time.Now().Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("collected %d, %v", n, err)
	}
	st2, n1 := next(t, id2, nil, sigchain.TypeEldest, eldest(id2, "y@kez.lat"))
	_, n2 := next(t, id2, st2, sigchain.TypeSetHandle, sigchain.SetHandleBody("z@kez.lat"))
	appendAll(t, s, []*sigchain.Link{n1, n2})
	ls.wantProven(t, "the replaced chain", n2)
	ls.wantEntries(t, "the replaced chain", ent(orphan), deletion(id.PublicKey()), ent(named), ent(o2), deletion(id2.PublicKey()), ent(n1), ent(n2))
}

// testLogConcurrent: each link of a chain sent by several clients at once,
// with reads racing them, is logged exactly once, in order.
func testLogConcurrent(t *testing.T, open Open) {
	s, _ := open(t)
	ls := startLog(t, s, openLog(t, t.TempDir()))
	links := Chain(t, Identity(t, 66), 5)
	for _, l := range links {
		var wg sync.WaitGroup
		errs := make(chan error, 6)
		for range 4 {
			wg.Go(func() { errs <- ls.c.Append(context.Background(), l) })
		}
		for range 2 {
			wg.Go(func() { ls.get(t, l.Key()) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("seqno %d: %v", l.Seqno(), err)
			}
		}
	}
	ls.wantEntries(t, "after racing appends", ents(links...)...)
	ls.wantProven(t, "after racing appends", links[4])
}

// testLogUnavailable: when the log fails, an append is stored but answered
// 503 log_unavailable and a GET carries no proof; once the log is back, a
// retry is answered 200 and the link is logged.
func testLogUnavailable(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	dir := t.TempDir()
	lg := openLog(t, dir)
	ls := startLog(t, s, lg)
	links := Chain(t, Identity(t, 67), 2)
	if err := ls.c.Append(ctx, links[0]); err != nil {
		t.Fatal(err)
	}
	if err := lg.Close(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(ls.url+sigchain.ChainsPath+links[1].Key().String()+"/links", "application/json", bytes.NewReader(links[1].Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var refusal struct{ Reason string }
	json.Unmarshal(body, &refusal)
	if resp.StatusCode != http.StatusServiceUnavailable || refusal.Reason != sigchain.ReasonLogUnavailable {
		t.Fatalf("append with the log down: %d %s; want 503 %s", resp.StatusCode, body, sigchain.ReasonLogUnavailable)
	}
	if err := ls.c.Append(ctx, links[1]); !errors.Is(err, sigchain.ErrUnreachable) {
		t.Fatalf("client append with the log down: %v, want ErrUnreachable", err)
	}
	if h, err := s.Head(ctx, links[1].Key()); err != nil || h != head(links[1]) {
		t.Fatalf("the link was not stored: %v %v", h, err)
	}
	if status, p := ls.get(t, links[1].Key()); status != http.StatusOK || p.Log != nil || p.HeadSeqno != 2 {
		t.Fatalf("GET with the log down: %d %+v; want the chain without a proof", status, p)
	}

	ls2 := startLog(t, s, openLog(t, dir))
	if err := ls2.c.Append(ctx, links[1]); err != nil {
		t.Fatalf("retry once the log is back: %v", err)
	}
	ls2.wantEntries(t, "after the retry", ents(links...)...)
	ls2.wantProven(t, "after the retry", links[1])
}

// testLogClientGone: clients that hang up while their append or read is
// being logged leave no duplicate entries: the logging goes on without
// them.
func testLogClientGone(t *testing.T, open Open) {
	s, _ := open(t)
	ls := startLog(t, s, openLog(t, t.TempDir()))
	links := Chain(t, Identity(t, 68), 3)
	appendAll(t, s, links[:2]) // stored, not logged
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(i)*time.Millisecond)
			defer cancel()
			if i%2 == 0 {
				ls.c.Append(ctx, links[2]) // errors are expected: the client hangs up
				return
			}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, ls.url+sigchain.ChainsPath+links[0].Key().String(), nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if err := ls.c.Append(context.Background(), links[2]); err != nil {
		t.Fatal(err)
	}
	ls.wantEntries(t, "after clients hung up", ents(links...)...)
	ls.wantProven(t, "after clients hung up", links[2])
}
