// Package logserver is the sig-server side of the transparency log
// (docs/spec/translog.md): an append-only Merkle log of every sigchain link
// the sig-server accepts, kept with tessera's POSIX storage in a folder,
// with signed checkpoints, tiles and entry bundles served over HTTP
// ([Log.Handler]) and the inclusion proofs a chain GET carries
// ([Log.Proof]).
//
//	signer, _, err := logserver.LoadOrCreateKey(filepath.Join(dir, "log.key"), "example.com/sigchain-log")
//	lg, err := logserver.Open(ctx, logserver.Config{Dir: dir, Signer: signer})
//	defer lg.Close(ctx)
//	h := sigchain.NewHandler(store, sigchain.WithLog(lg)) // and mount lg.Handler(logserver.Limits{}) beside it
//
// Beside tessera's files the folder holds index.db (SQLite): which leaf
// index holds which (key, seqno) entry, so that the newest logged entry of
// a key ([Log.Logged]) and its proof ([Log.Proof]) are found without
// reading the log.
//
// One process writes a log folder. The package is for servers: SDK client
// code checks proofs with package translog and never imports it.
package logserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"
)

// Defaults of [Config].
const (
	DefaultCheckpointInterval = 500 * time.Millisecond
	DefaultBatchMaxAge        = 10 * time.Millisecond
	// MinCheckpointInterval is the shortest checkpoint interval tessera's
	// POSIX storage allows.
	MinCheckpointInterval = 100 * time.Millisecond
)

// IndexFile is the name of the SQLite index inside [Config].Dir.
const IndexFile = "index.db"

// batchMaxSize is the most entries tessera sequences in one batch.
const batchMaxSize = 256

// awaitPoll is how often the publication awaiter reads the checkpoint.
const awaitPoll = 5 * time.Millisecond

var (
	// ErrUnavailable reports an append the log could not complete: the
	// entry may or may not be in the log (appending it again is safe:
	// every reader allows identical duplicate entries).
	ErrUnavailable = errors.New("logserver: the log is unavailable")
	// ErrBadRange reports a consistency proof asked between sizes that are
	// not 0 < from ≤ to ≤ the published size.
	ErrBadRange = errors.New("logserver: bad tree sizes")
	// ErrKeyMismatch reports a log folder whose checkpoint another key
	// signed: the log's key must never change.
	ErrKeyMismatch = errors.New("logserver: the log was signed by another key")
)

// Config configures [Open].
type Config struct {
	// Dir is the log's folder: tessera's POSIX files and [IndexFile].
	// Required; made (mode 0700) if missing.
	Dir string
	// Signer signs the checkpoints; its name is the log's origin. Make it
	// with [LoadOrCreateKey]. Required.
	Signer note.Signer
	// VerifierKey is the verifier key text of Signer ("origin+hash+base64key").
	// Empty: the one of a Signer made by [LoadOrCreateKey].
	VerifierKey string
	// CheckpointInterval is how often a new checkpoint is published (an
	// append waits for the next one). Default [DefaultCheckpointInterval];
	// at least [MinCheckpointInterval].
	CheckpointInterval time.Duration
	// BatchMaxAge is how long an entry waits for others to be sequenced
	// with. Default [DefaultBatchMaxAge].
	BatchMaxAge time.Duration
	// Logger receives the log's messages; nil means slog.Default().
	Logger *slog.Logger
	// Registerer, if set, receives the log's metrics:
	//
	//	kez_sig_log_entries_total                  entries appended
	//	kez_sig_log_size                           size of the published checkpoint
	//	kez_sig_log_append_seconds                 time from an append to its publication
	//	kez_sig_log_requests_total{endpoint,code}  requests to the log's HTTP endpoints ([Log.Handler])
	Registerer prometheus.Registerer
}

// Log is an open transparency log. Its methods are safe for concurrent
// use.
type Log struct {
	cfg      Config
	info     translog.LogInfo
	db       *sql.DB
	add      tessera.AddFn
	shutdown func(context.Context) error
	reader   tessera.LogReader
	awaiter  *tessera.PublicationAwaiter
	cancel   context.CancelFunc
	log      *slog.Logger

	cp atomic.Pointer[translog.Checkpoint] // the newest published checkpoint read

	entries  prometheus.Counter
	appendT  prometheus.Histogram
	requests *prometheus.CounterVec

	closeOnce sync.Once
	closeErr  error
}

var migrations = []string{
	`CREATE TABLE entries (
		idx   INTEGER PRIMARY KEY, -- the leaf index
		key   TEXT NOT NULL,
		seqno INTEGER NOT NULL,     -- 0: a deletion entry
		id    TEXT NOT NULL         -- the link ID; "" for a deletion entry
	);
	CREATE INDEX entries_key ON entries (key, idx);
	CREATE INDEX entries_key_seqno ON entries (key, seqno, idx);`,
}

// Open opens the log in c.Dir, creating it if needed, and starts
// publishing checkpoints every c.CheckpointInterval until [Log.Close]. A
// folder whose checkpoint another key signed is refused
// ([ErrKeyMismatch]). ctx bounds the opening only.
func Open(ctx context.Context, c Config) (*Log, error) {
	if c.Dir == "" {
		return nil, errors.New("logserver: a folder (Config.Dir) is required")
	}
	if c.Signer == nil {
		return nil, errors.New("logserver: a signer (Config.Signer) is required")
	}
	if c.VerifierKey == "" {
		vk, ok := c.Signer.(verifierKeyer)
		if !ok {
			return nil, errors.New("logserver: Config.VerifierKey is required with a signer not made by LoadOrCreateKey")
		}
		c.VerifierKey = vk.VerifierKey()
	}
	v, err := note.NewVerifier(c.VerifierKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKey, err)
	}
	if err := checkPair(c.Signer, v); err != nil {
		return nil, err
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.CheckpointInterval < MinCheckpointInterval {
		return nil, fmt.Errorf("logserver: checkpoint interval %v is below the minimum %v", c.CheckpointInterval, MinCheckpointInterval)
	}
	if c.BatchMaxAge <= 0 {
		c.BatchMaxAge = DefaultBatchMaxAge
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("logserver: making the log folder: %w", err)
	}
	info := translog.LogInfo{Origin: c.Signer.Name(), Key: c.VerifierKey}
	// The key of a log never changes: clients pinned it.
	var published uint64 // the size of the published checkpoint
	if old, err := os.ReadFile(filepath.Join(c.Dir, layout.CheckpointPath)); err == nil {
		cp, err := translog.ParseCheckpoint(old, info.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrKeyMismatch, err)
		}
		published = cp.Size
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("logserver: reading the checkpoint: %w", err)
	}
	db, err := sqlitedb.Open(filepath.Join(c.Dir, IndexFile), sqlitedb.Options{})
	if err != nil {
		return nil, fmt.Errorf("logserver: %w", err)
	}
	if err := sqlitedb.Migrate(db, migrations); err != nil {
		db.Close()
		return nil, fmt.Errorf("logserver: %s: %w", IndexFile, err)
	}
	// Rows are written only once a published checkpoint covers them: rows
	// at or past the published size are of leaves the log no longer holds
	// (its files restored from an older copy, or their last writes lost).
	// They would stand for the leaves appended next at those indexes.
	if res, err := db.ExecContext(ctx, `DELETE FROM entries WHERE idx >= ?`, int64(published)); err != nil {
		db.Close()
		return nil, fmt.Errorf("logserver: %s: %w", IndexFile, err)
	} else if n, _ := res.RowsAffected(); n > 0 {
		c.Logger.Warn("logserver: the index had entries past the log's published checkpoint; dropped them (they are logged again when their chains are next read)",
			"size", published, "dropped", n)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	fail := func(err error) (*Log, error) {
		cancel()
		db.Close()
		return nil, err
	}
	driver, err := posix.New(bg, posix.Config{Path: c.Dir})
	if err != nil {
		return fail(fmt.Errorf("logserver: %w", err))
	}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(c.Signer).
		WithCheckpointInterval(c.CheckpointInterval).
		WithBatching(batchMaxSize, c.BatchMaxAge)
	app, shutdown, reader, err := tessera.NewAppender(bg, driver, opts)
	if err != nil {
		return fail(fmt.Errorf("logserver: %w", err))
	}
	l := &Log{
		cfg: c, info: info, db: db, add: app.Add, shutdown: shutdown, reader: reader, cancel: cancel, log: c.Logger,
		awaiter: tessera.NewPublicationAwaiter(bg, reader.ReadCheckpoint, awaitPoll),
		entries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kez_sig_log_entries_total",
			Help: "Entries appended to the transparency log (links and deletion entries).",
		}),
		appendT: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kez_sig_log_append_seconds",
			Help:    "Time from appending an entry to the transparency log to a published checkpoint covering it.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kez_sig_log_requests_total",
			Help: "Requests to the transparency log's HTTP endpoints (info, checkpoint, tile, entries, consistency), by status code.",
		}, []string{"endpoint", "code"}),
	}
	if r := c.Registerer; r != nil {
		if err := registerAll(r, l.entries, l.appendT, l.requests, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "kez_sig_log_size",
			Help: "Entries in the transparency log as of its published checkpoint.",
		}, func() float64 {
			cp, err := l.published(context.Background())
			if err != nil {
				return 0
			}
			return float64(cp.Size)
		})); err != nil {
			shutdown(ctx)
			return fail(fmt.Errorf("logserver: metrics: %w", err))
		}
	}
	return l, nil
}

func registerAll(r prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// Close waits (bounded by ctx and tessera's own timeout) until every
// appended entry is covered by a published checkpoint, then stops the log.
// It is idempotent.
func (l *Log) Close(ctx context.Context) error {
	l.closeOnce.Do(func() {
		err := l.shutdown(ctx)
		l.cancel()
		l.closeErr = errors.Join(err, l.db.Close())
	})
	return l.closeErr
}

// Info names the log: its origin and verifier key, what GET /v1/info
// carries.
func (l *Log) Info() translog.LogInfo { return l.info }

// Append appends e and returns its leaf index once a published checkpoint
// covers it (tessera's publication awaiter), then records it in the index.
// e must be a valid entry ([translog.ParseEntry]). If it fails the entry
// may still be in the log, and appending it again is safe (an identical
// duplicate entry).
func (l *Log) Append(ctx context.Context, e translog.Entry) (uint64, error) {
	idx, err := l.AppendAll(ctx, []translog.Entry{e})
	if err != nil {
		return 0, err
	}
	return idx[0], nil
}

// AppendAll appends es in order, each at a higher index than the one
// before it, and returns their leaf indexes once a published checkpoint
// covers them all; it waits for one publication, not one per entry. Like
// [Log.Append], a failure may leave some of them in the log.
func (l *Log) AppendAll(ctx context.Context, es []translog.Entry) ([]uint64, error) {
	for _, e := range es {
		if _, err := translog.ParseEntry(e.Marshal()); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	idx := make([]uint64, len(es))
	var last tessera.IndexFuture
	for i, e := range es {
		// Each entry is sequenced before the next is added, so the log
		// keeps their order whatever tessera's batches do.
		last = l.add(ctx, tessera.NewEntry(e.Marshal()))
		x, err := last()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
		idx[i] = x.Index
	}
	if len(es) == 0 {
		return idx, nil
	}
	if _, _, err := l.awaiter.Await(ctx, last); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	l.appendT.Observe(time.Since(start).Seconds())
	l.entries.Add(float64(len(es)))
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: recording the entries: %w", ErrUnavailable, err)
	}
	defer tx.Rollback()
	for i, e := range es {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO entries (idx, key, seqno, id) VALUES (?, ?, ?, ?)`,
			int64(idx[i]), e.Key.String(), int64(e.Seqno), e.ID); err != nil {
			return nil, fmt.Errorf("%w: recording the entries: %w", ErrUnavailable, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("%w: recording the entries: %w", ErrUnavailable, err)
	}
	return idx, nil
}

// Logged returns the newest entry logged for key and its leaf index, or
// false if the log holds none.
func (l *Log) Logged(ctx context.Context, key kez.PublicKey) (translog.Entry, uint64, bool, error) {
	var idx, seqno int64
	var id string
	err := l.db.QueryRowContext(ctx, `SELECT idx, seqno, id FROM entries WHERE key = ? ORDER BY idx DESC LIMIT 1`, key.String()).Scan(&idx, &seqno, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return translog.Entry{}, 0, false, nil
	}
	if err != nil {
		return translog.Entry{}, 0, false, fmt.Errorf("logserver: reading %s: %w", IndexFile, err)
	}
	return translog.Entry{Key: key, Seqno: uint64(seqno), ID: id}, uint64(idx), true, nil
}

// published returns the newest published checkpoint, verified.
func (l *Log) published(ctx context.Context) (*translog.Checkpoint, error) {
	raw, err := l.reader.ReadCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the checkpoint: %w", ErrUnavailable, err)
	}
	if cp := l.cp.Load(); cp != nil && string(cp.Note) == string(raw) {
		return cp, nil
	}
	cp, err := translog.ParseCheckpoint(raw, l.info.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: the published checkpoint: %w", ErrUnavailable, err)
	}
	l.cp.Store(cp)
	return cp, nil
}

// Proof returns the inclusion proof of the newest entry logged for (key,
// seqno) at the published checkpoint, or [translog.ErrNotLogged] if none is
// covered by it.
func (l *Log) Proof(ctx context.Context, key kez.PublicKey, seqno uint64) (*translog.HeadProof, error) {
	var idx int64
	var id string
	err := l.db.QueryRowContext(ctx, `SELECT idx, id FROM entries WHERE key = ? AND seqno = ? ORDER BY idx DESC LIMIT 1`, key.String(), int64(seqno)).Scan(&idx, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, translog.ErrNotLogged
	}
	if err != nil {
		return nil, fmt.Errorf("logserver: reading %s: %w", IndexFile, err)
	}
	cp, err := l.published(ctx)
	if err != nil {
		return nil, err
	}
	if uint64(idx) >= cp.Size {
		return nil, fmt.Errorf("%w: entry %d is not covered by the published checkpoint of size %d", translog.ErrNotLogged, idx, cp.Size)
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, l.reader.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	hashes, err := pb.InclusionProof(ctx, uint64(idx))
	if err != nil {
		return nil, fmt.Errorf("%w: inclusion proof: %w", ErrUnavailable, err)
	}
	// Never hand out a proof that does not verify (a torn read, a damaged file).
	if err := translog.VerifyInclusion(translog.Entry{Key: key, Seqno: seqno, ID: id}, uint64(idx), hashes, cp); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return &translog.HeadProof{Checkpoint: string(cp.Note), Index: uint64(idx), Proof: translog.EncodeHashes(hashes)}, nil
}

// Consistency returns the consistency proof between the trees of sizes
// from and to: 0 < from ≤ to ≤ the published size, else [ErrBadRange].
func (l *Log) Consistency(ctx context.Context, from, to uint64) (*translog.ConsistencyProof, error) {
	cp, err := l.published(ctx)
	if err != nil {
		return nil, err
	}
	if from == 0 || from > to || to > cp.Size {
		return nil, fmt.Errorf("%w: want 0 < from (%d) ≤ to (%d) ≤ %d", ErrBadRange, from, to, cp.Size)
	}
	pb, err := client.NewProofBuilder(ctx, to, l.reader.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	hashes, err := pb.ConsistencyProof(ctx, from, to)
	if err != nil {
		return nil, fmt.Errorf("%w: consistency proof: %w", ErrUnavailable, err)
	}
	return &translog.ConsistencyProof{From: from, To: to, Proof: translog.EncodeHashes(hashes)}, nil
}

// Ready reports whether the log can serve: its checkpoint is readable and
// verifies, and its index answers.
func (l *Log) Ready(ctx context.Context) error {
	if _, err := l.published(ctx); err != nil {
		return err
	}
	return l.db.PingContext(ctx)
}
