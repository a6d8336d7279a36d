package bench

// Transparency log (issue 18): the inclusion proof a client checks per
// chain fetch against the chain's own verification; the sig-server's
// appends with its log against the same appends without it; an audit of
// that log against fetching its entry bundles without checking them.

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/kez-lat/kez-chat/translog/audit"
	"github.com/kez-lat/kez-chat/translog/logserver"
)

// logAppendTarget is the target of the sig-server's append throughput
// with its transparency log over the same without it (issue 18).
const logAppendTarget = 0.7

// logOrigin is the origin of the bench's logs.
const logOrigin = Domain + "/sigchain-log"

// fillLinksPerKey is how many entries of the filler log each key has.
const fillLinksPerKey = 10

// quiet discards the log lines of the servers the bench runs in process.
var quiet = slog.New(slog.DiscardHandler)

// measureLog measures the transparency log's figures, each sig-server in
// process in a temporary folder.
func measureLog(ctx context.Context, cfg Config) ([]Figure, error) {
	dir, err := os.MkdirTemp("", "kez-bench-log-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	proof, err := measureLogProof(ctx, cfg, filepath.Join(dir, "proof"))
	if err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	out := []Figure{*proof}

	logged, err := startSigServer(ctx, filepath.Join(dir, "logged"), cfg, true)
	if err != nil {
		return out, err
	}
	defer logged.close()
	plain, err := startSigServer(ctx, filepath.Join(dir, "plain"), cfg, false)
	if err != nil {
		return out, err
	}
	defer plain.close()
	figs, err := measureLogAppends(ctx, cfg, logged, plain)
	out = append(out, figs...)
	if err != nil {
		return out, fmt.Errorf("appends: %w", err)
	}
	aud, err := measureAudit(ctx, cfg, logged, dir)
	if err != nil {
		return out, fmt.Errorf("audit: %w", err)
	}
	return append(out, *aud), nil
}

// sigServer is a sig-server in process, as kez-sig-server mounts it:
// sigchain.NewHandler over an SQLite store with its limits off, and its
// transparency log's API beside the chains when it keeps one, served
// over HTTP on loopback.
type sigServer struct {
	URL   string
	store *sqlitestore.Store
	log   *logserver.Log // nil: the server keeps no log
	srv   *httptest.Server
}

// startSigServer starts a sig-server whose state is in dir, with a log
// (cfg's checkpoint interval and batch age) if logged.
func startSigServer(ctx context.Context, dir string, cfg Config, logged bool) (*sigServer, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	store, err := sqlitestore.Open(filepath.Join(dir, "sig.db"))
	if err != nil {
		return nil, err
	}
	s := &sigServer{store: store}
	opts := []sigchain.HandlerOption{sigchain.WithLimits(sigchain.NoLimits()), sigchain.WithLogger(quiet)}
	if logged {
		signer, _, err := logserver.LoadOrCreateKey(filepath.Join(dir, "log.key"), logOrigin)
		if err == nil {
			s.log, err = logserver.Open(ctx, logserver.Config{Dir: filepath.Join(dir, "log"), Signer: signer,
				CheckpointInterval: cfg.LogCheckpointInterval, BatchMaxAge: cfg.LogBatchMaxAge, Logger: quiet})
		}
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("the sig-server's log: %w", err)
		}
		opts = append(opts, sigchain.WithLog(s.log))
	}
	lh := s.log.Handler(logserver.Limits{ReadsPerIP: ratelimit.Unlimited}) // a nil log: "no log"
	mux := http.NewServeMux()
	mux.Handle(logserver.InfoPath, lh)
	mux.Handle(logserver.LogPath, lh)
	mux.Handle("/", sigchain.NewHandler(store, opts...))
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL
	return s, nil
}

func (s *sigServer) close() error {
	s.srv.Close()
	var err error
	if s.log != nil {
		err = s.log.Close(context.Background())
	}
	return errors.Join(err, s.store.Close())
}

// fillLog appends entries from to from+n-1 of a filler to the log in dir
// (made if missing) with tessera directly, with one wait for publication
// rather than one per entry: made-up chains of fillLinksPerKey links
// each, whose link IDs are well-formed but name no stored link. The log
// must not be open elsewhere.
func fillLog(ctx context.Context, dir string, signer note.Signer, from, n int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	driver, err := posix.New(ctx, posix.Config{Path: dir})
	if err != nil {
		return err
	}
	opts := tessera.NewAppendOptions().WithCheckpointSigner(signer).
		WithCheckpointInterval(logserver.MinCheckpointInterval).
		WithBatching(4096, 20*time.Millisecond).WithPushback(uint(n))
	app, shutdown, reader, err := tessera.NewAppender(ctx, driver, opts)
	if err != nil {
		return err
	}
	futures := make([]tessera.IndexFuture, n)
	var key kez.PublicKey
	for j := range futures {
		i := from + j
		if j == 0 || i%fillLinksPerKey == 0 {
			seed := sha256.Sum256(fmt.Appendf(nil, "kez-bench log filler key %d", i/fillLinksPerKey))
			if key, err = kez.PublicKeyFromEd25519(ed25519.NewKeyFromSeed(seed[:]).Public().(ed25519.PublicKey)); err != nil {
				return err
			}
		}
		e := translog.Entry{Key: key, Seqno: uint64(i%fillLinksPerKey) + 1,
			ID: sigchain.IDFromDigest(sha256.Sum256(fmt.Appendf(nil, "kez-bench log filler link %d", i))).String()}
		futures[j] = app.Add(ctx, tessera.NewEntry(e.Marshal()))
	}
	last, top := futures[0], uint64(0)
	for _, f := range futures {
		idx, err := f()
		if err != nil {
			return err
		}
		if idx.Index >= top {
			last, top = f, idx.Index
		}
	}
	if _, _, err := tessera.NewPublicationAwaiter(ctx, reader.ReadCheckpoint, 10*time.Millisecond).Await(ctx, last); err != nil {
		return err
	}
	return shutdown(ctx)
}

// chainPage is what a chain GET answers.
type chainPage struct {
	HeadSeqno uint64              `json:"head_seqno"`
	Head      string              `json:"head"`
	Links     []json.RawMessage   `json:"links"`
	Log       *translog.HeadProof `json:"log"`
}

// getChain fetches key's chain page from the sig-server at base.
func getChain(ctx context.Context, hc *http.Client, base string, key kez.PublicKey) (*chainPage, error) {
	body, err := getBody(ctx, hc, base+sigchain.ChainsPath+key.String())
	if err != nil {
		return nil, err
	}
	var p chainPage
	if err := json.Unmarshal(body, &p); err != nil {
		return nil, fmt.Errorf("reading the chain page: %w", err)
	}
	return &p, nil
}

// getBody returns the body of a 200 answer to a GET of u.
func getBody(ctx context.Context, hc *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return body, nil
}

// measureLogProof makes a sig-server's log of cfg.LogEntries entries
// with a chain of cfg.ChainLinks links logged in its middle, fetches the
// chain from the server (the page carries the head's inclusion proof), and
// times what a client does with the page, one goroutine each, in
// alternating rounds of cfg.Duration: ParseCheckpoint and VerifyInclusion
// of the head proof, against parsing and verifying the chain's links.
//
// The log is made in three steps: half of the filler; the chain, stored
// and then logged by its first GET (as a sig-server logs links it stored
// before its log existed); the rest of the filler, written while the
// server is stopped.
func measureLogProof(ctx context.Context, cfg Config, dir string) (*Figure, error) {
	id, err := benchIdentity("logchain")
	if err != nil {
		return nil, err
	}
	raws, err := buildChain(id, max(2, cfg.ChainLinks))
	if err != nil {
		return nil, err
	}
	signer, _, err := logserver.LoadOrCreateKey(filepath.Join(dir, "log.key"), logOrigin)
	if err != nil {
		return nil, err
	}
	logDir, half := filepath.Join(dir, "log"), cfg.LogEntries/2
	if err := fillLog(ctx, logDir, signer, 0, max(1, half)); err != nil {
		return nil, err
	}
	s, err := startSigServer(ctx, dir, cfg, true)
	if err != nil {
		return nil, err
	}
	defer func() {
		if s != nil {
			s.close()
		}
	}()
	for _, b := range raws {
		l, err := sigchain.ParseLink(b)
		if err == nil {
			err = s.store.Append(ctx, l)
		}
		if err != nil {
			return nil, err
		}
	}
	key := id.PublicKey()
	hc := &http.Client{Timeout: time.Minute}
	if _, err := getChain(ctx, hc, s.URL, key); err != nil {
		return nil, err
	}
	if rest := cfg.LogEntries - max(1, half); rest > 0 {
		err := s.close()
		if s = nil; err != nil {
			return nil, err
		}
		if err := fillLog(ctx, logDir, signer, half, rest); err != nil {
			return nil, err
		}
		if s, err = startSigServer(ctx, dir, cfg, true); err != nil {
			return nil, err
		}
	}
	page, err := getChain(ctx, hc, s.URL, key)
	if err != nil {
		return nil, err
	}
	if page.Log == nil || len(page.Links) != len(raws) {
		return nil, fmt.Errorf("the chain page has %d links of %d and proof %v", len(page.Links), len(raws), page.Log != nil)
	}
	vkey := s.log.Info().Key
	head := translog.Entry{Key: key, Seqno: page.HeadSeqno, ID: page.Head}
	var hashes, size int
	checkProof := func() error {
		cp, err := translog.ParseCheckpoint([]byte(page.Log.Checkpoint), vkey)
		if err != nil {
			return err
		}
		p, err := translog.DecodeHashes(page.Log.Proof)
		if err != nil {
			return err
		}
		hashes, size = len(p), int(cp.Size)
		return translog.VerifyInclusion(head, page.Log.Index, p, cp)
	}
	checkChain := func() error {
		links := make([]*sigchain.Link, len(page.Links))
		for i, b := range page.Links {
			l, err := sigchain.ParseLink(b)
			if err != nil {
				return err
			}
			links[i] = l
		}
		st, err := sigchain.Verify(links)
		if err == nil && (st.Seqno() != page.HeadSeqno || st.Head().String() != page.Head) {
			err = errors.New("the page's head is not its last link")
		}
		return err
	}
	var proof, chain phaseTime
	for range max(1, cfg.Rounds) {
		n, d, err := repeat(cfg.Duration, checkProof)
		if err != nil {
			return nil, fmt.Errorf("checking the proof: %w", err)
		}
		proof.add(n, d)
		if n, d, err = repeat(cfg.Duration, checkChain); err != nil {
			return nil, fmt.Errorf("verifying the chain: %w", err)
		}
		chain.add(n, d)
	}
	return &Figure{Group: "log", Name: fmt.Sprintf("inclusion proof checked per chain fetch (log of %s entries)", num(float64(size))), Unit: "µs",
		Value: 1e6 / proof.rate(), Baseline: fmt.Sprintf("parse+Verify of the chain (%d links)", len(raws)), Base: 1e6 / chain.rate(), Goal: NoTarget,
		Note: fmt.Sprintf("ParseCheckpoint (the note's signature) + VerifyInclusion (%d hashes) of the proof a chain GET carries; one goroutine each", hashes)}, nil
}

// chainWriter makes the links of one chain: its eldest link, then
// add_claim links.
type chainWriter struct {
	id     *kez.Identity
	name   string
	st     *sigchain.State
	claims int
}

func newChainWriter(name string) (*chainWriter, error) {
	id, err := benchIdentity(name)
	if err != nil {
		return nil, err
	}
	return &chainWriter{id: id, name: name}, nil
}

// next returns the chain's next n links (the eldest first).
func (w *chainWriter) next(n int) ([]*sigchain.Link, error) {
	out := make([]*sigchain.Link, 0, n)
	now := time.Now()
	for range n {
		var l *sigchain.Link
		var err error
		if w.st == nil {
			key := w.id.PublicKey()
			l, err = sigchain.NewLink(w.id, nil, sigchain.TypeEldest, sigchain.EldestBody(key, w.id.EncryptionKey(0).PublicKey(), 0, w.name+"@"+Domain), now)
		} else {
			w.claims++
			l, err = sigchain.NewLink(w.id, w.st, sigchain.TypeAddClaim,
				sigchain.AddClaimBody("web", fmt.Sprintf("https://example.com/%d", w.claims), fmt.Sprintf("https://example.com/%d/proof", w.claims)), now)
		}
		if err != nil {
			return nil, err
		}
		if w.st, err = w.st.Extend([]*sigchain.Link{l}); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// appendAll appends each writer's next n links to the server of c, the
// writers at once and each one link at a time, and returns the links
// appended, the time they took and the CPU this process used meanwhile
// (the server's and its clients'). The links are made before the clocks
// start.
func appendAll(ctx context.Context, c *sigchain.Client, ws []*chainWriter, n int) (int, time.Duration, time.Duration, error) {
	batches := make([][]*sigchain.Link, len(ws))
	for i, w := range ws {
		var err error
		if batches[i], err = w.next(n); err != nil {
			return 0, 0, 0, err
		}
	}
	var wg sync.WaitGroup
	var errs lastError
	start, cpu := time.Now(), selfCPU()
	for _, b := range batches {
		wg.Go(func() {
			for _, l := range b {
				if err := c.Append(ctx, l); err != nil {
					errs.set(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return len(ws) * n, time.Since(start), selfCPU() - cpu, errs.get()
}

// measureLogAppends measures the sig-server's appends with its log
// against the same server without one: cfg.LogAppenders appenders at
// once, each on its own chain, cfg.LogLinks links each per round, in
// alternating rounds; then the latency of one append at a time.
func measureLogAppends(ctx context.Context, cfg Config, logged, plain *sigServer) ([]Figure, error) {
	type side struct {
		c   *sigchain.Client
		ws  []*chainWriter
		t   phaseTime
		cpu time.Duration // over all rounds
	}
	sides := make([]*side, 2)
	for i, s := range []*sigServer{logged, plain} {
		hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConns: 2 * cfg.LogAppenders, MaxIdleConnsPerHost: 2 * cfg.LogAppenders}}
		sd := &side{c: &sigchain.Client{BaseURL: s.URL, HTTPClient: hc}}
		for j := range cfg.LogAppenders {
			w, err := newChainWriter(fmt.Sprintf("kbl%d", j))
			if err != nil {
				return nil, err
			}
			sd.ws = append(sd.ws, w)
		}
		// The eldest links, untimed.
		if _, _, _, err := appendAll(ctx, sd.c, sd.ws, 1); err != nil {
			return nil, err
		}
		sides[i] = sd
	}
	for r := range max(1, cfg.Rounds) {
		for k := range sides {
			sd := sides[(r+k)%2] // each goes first every other round
			n, d, cpu, err := appendAll(ctx, sd.c, sd.ws, cfg.LogLinks)
			if err != nil {
				return nil, err
			}
			sd.t.add(n, d)
			sd.cpu += cpu
		}
	}

	interval, age := cfg.LogCheckpointInterval, cfg.LogBatchMaxAge
	if interval == 0 {
		interval = logserver.DefaultCheckpointInterval
	}
	if age == 0 {
		age = logserver.DefaultBatchMaxAge
	}

	// One append at a time, on a chain of its own at each server, each
	// a random time of 1 to 2 checkpoint intervals after the previous
	// one: the log publishes a checkpoint at once when the last one is
	// older than the interval, else when it is that old, so back-to-back
	// appends would each wait a whole interval (as they do under load).
	var lat [2][]time.Duration
	var lw [2]*chainWriter
	for i := range lw {
		var err error
		if lw[i], err = newChainWriter(fmt.Sprintf("kbllat%d", i)); err != nil {
			return nil, err
		}
	}
	for j := range cfg.LogLatencyAppends + 1 {
		t := time.NewTimer(interval + rand.N(interval))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		for i, sd := range sides {
			ls, err := lw[i].next(1)
			if err != nil {
				return nil, err
			}
			start := time.Now()
			if err := sd.c.Append(ctx, ls[0]); err != nil {
				return nil, err
			}
			if j > 0 { // the eldest link is not timed
				lat[i] = append(lat[i], time.Since(start))
			}
		}
	}

	setting := fmt.Sprintf("a checkpoint every %s, batches up to %s old", interval, age)
	// Under load an appender's links go one after another: its appends
	// took the round's time over the links it appended.
	perLink := func(sd *side) (cpu, latency float64) {
		return sd.cpu.Seconds() / float64(sd.t.n), ms(sd.t.d) / float64(max(1, cfg.Rounds)*cfg.LogLinks)
	}
	logCPU, logLat := perLink(sides[0])
	plainCPU, plainLat := perLink(sides[1])
	return []Figure{
		{Group: "log", Name: fmt.Sprintf("sig-server appends with the log, %d appenders", cfg.LogAppenders), Unit: "links/s",
			Value: sides[0].t.rate(), Baseline: "without the log", Base: sides[1].t.rate(), Goal: MinRatio, Target: logAppendTarget, CPURatio: plainCPU / logCPU,
			Note: fmt.Sprintf("each appender on its own chain, %d add_claim links a round, limits off, SQLite store; %s; an append is answered once a published checkpoint covers its link: %.0f ms on average under this load (%.1f ms without the log)",
				cfg.LogLinks, setting, logLat, plainLat)},
		{Group: "log", Name: "one append's latency with the log, quiet server (p50)", Unit: "ms",
			Value: medianMS(lat[0]), Baseline: "without the log", Base: medianMS(lat[1]), Goal: NoTarget,
			Note: fmt.Sprintf("%d appends one at a time, each 1 to 2 checkpoint intervals after the previous one; %s", cfg.LogLatencyAppends, setting)},
	}, nil
}

// measureAudit audits the log of s from scratch (a new state file each
// round) against fetching the same entry bundles without checking them,
// in alternating rounds.
func measureAudit(ctx context.Context, cfg Config, s *sigServer, dir string) (*Figure, error) {
	hc := &http.Client{Timeout: time.Minute}
	var aud, raw phaseTime
	var entries, keys int
	for r := range max(1, cfg.Rounds) {
		start := time.Now()
		sum, err := audit.Run(ctx, audit.Config{Server: s.URL, HTTPClient: hc, State: filepath.Join(dir, fmt.Sprintf("audit%d.db", r)), Logger: quiet})
		if err != nil {
			return nil, err
		}
		if sum.Problems() > 0 {
			return nil, fmt.Errorf("the audit of the bench's own log found problems: %v", sum.Findings)
		}
		aud.add(sum.Entries, time.Since(start))
		entries, keys = sum.Entries, sum.Keys
		n, d, err := fetchBundles(ctx, hc, s.URL, sum.To)
		if err != nil {
			return nil, err
		}
		raw.add(n, d)
	}
	return &Figure{Group: "log", Name: fmt.Sprintf("audit of the log (%d entries, %d chains)", entries, keys), Unit: "entries/s",
		Value: aud.rate(), Baseline: "entry bundles fetched unchecked", Base: raw.rate(), Goal: NoTarget,
		Note: "translog/audit.Run from a new state: entries proven against the checkpoint, histories checked, every chain fetched, verified and compared"}, nil
}

// fetchBundles GETs the entry bundles of the first size entries of the
// log at base, one at a time, and reads them without parsing them. It
// returns the entries they hold and the time taken.
func fetchBundles(ctx context.Context, hc *http.Client, base string, size uint64) (int, time.Duration, error) {
	start := time.Now()
	for i := uint64(0); i*layout.EntryBundleWidth < size; i++ {
		p := uint8(0)
		if rest := size - i*layout.EntryBundleWidth; rest < layout.EntryBundleWidth {
			p = uint8(rest)
		}
		if _, err := getBody(ctx, hc, base+logserver.LogPath+layout.EntriesPath(i, p)); err != nil {
			return 0, 0, err
		}
	}
	return int(size), time.Since(start), nil
}
