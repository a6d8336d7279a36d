// Package tlogtest runs a real transparency log for tests: tessera's POSIX
// driver in a temporary directory, a note key made from a fixed seed, and
// an HTTP handler serving what a sig-server serves of its log
// (docs/spec/translog.md): GET /v1/info, /v1/log/checkpoint,
// /v1/log/consistency and /v1/log/tile/….
//
//	l := tlogtest.New(t, tlogtest.Options{})
//	idx := l.Append(t, entry)
//	proof := l.HeadProof(t, entry, idx[0])
//	srv := httptest.NewServer(l.Handler()) // or l.Serve(t)
//
// Two logs made with the same Seed and Origin share a key: a test makes a
// lying sig-server (a split view) by serving one to alice and the other to
// bob.
package tlogtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"github.com/transparency-dev/tessera/storage/posix"
	"golang.org/x/mod/sumdb/note"

	"github.com/kez-lat/kez-chat/translog"
)

// DefaultOrigin is the origin of a log made without one.
const DefaultOrigin = "sig.test/sigchain-log"

// Options configure [New].
type Options struct {
	// Seed makes the note key (any text; the same seed, the same key);
	// "" means "tlogtest".
	Seed string
	// Origin is the log's origin and key name; "" means DefaultOrigin.
	Origin string
}

// Log is a running tessera log with its note key.
type Log struct {
	Signer   note.Signer
	Verifier note.Verifier
	// SKey and VKey are the note key texts.
	SKey, VKey string
	// Info is what GET /v1/info names.
	Info translog.LogInfo
	// Dir is the tessera POSIX root.
	Dir    string
	Reader tessera.LogReader

	appender *tessera.Appender
	awaiter  *tessera.PublicationAwaiter
}

// NoteKey returns the note signer key text and verifier key text of the
// Ed25519 key made from seed (its SHA-256 is the 32-byte key seed) and
// named origin. Ed25519 note signatures are deterministic, so a checkpoint
// signed with it is a fixed vector.
func NoteKey(seed, origin string) (skey, vkey string) {
	skey, vkey, err := note.GenerateKey(seedReader(seed), origin)
	if err != nil {
		panic("tlogtest: " + err.Error())
	}
	return skey, vkey
}

// seedReader yields the 32 bytes SHA-256("tlogtest key " + seed), then
// fails.
func seedReader(seed string) *bytes.Reader {
	h := sha256.Sum256([]byte("tlogtest key " + seed))
	return bytes.NewReader(h[:])
}

// New starts a log in t.TempDir() that publishes a checkpoint every
// 100 ms (tessera's minimum); t.Cleanup shuts it down.
func New(t testing.TB, o Options) *Log {
	t.Helper()
	if o.Seed == "" {
		o.Seed = "tlogtest"
	}
	if o.Origin == "" {
		o.Origin = DefaultOrigin
	}
	l := &Log{Dir: t.TempDir()}
	l.SKey, l.VKey = NoteKey(o.Seed, o.Origin)
	var err error
	if l.Signer, err = note.NewSigner(l.SKey); err != nil {
		t.Fatal(err)
	}
	if l.Verifier, err = note.NewVerifier(l.VKey); err != nil {
		t.Fatal(err)
	}
	l.Info = translog.LogInfo{Origin: o.Origin, Key: l.VKey}
	ctx, cancel := context.WithCancel(context.Background())
	driver, err := posix.New(ctx, posix.Config{Path: l.Dir})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(l.Signer).
		WithCheckpointInterval(100*time.Millisecond).
		WithBatching(256, 10*time.Millisecond)
	a, shutdown, r, err := tessera.NewAppender(ctx, driver, opts)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l.appender, l.Reader = a, r
	l.awaiter = tessera.NewPublicationAwaiter(ctx, r.ReadCheckpoint, 10*time.Millisecond)
	t.Cleanup(func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		shutdown(sctx)
		cancel()
	})
	return l
}

// Append adds the entries in order and returns their indexes once a
// published checkpoint covers them.
func (l *Log) Append(t testing.TB, es ...translog.Entry) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	idx := make([]uint64, len(es))
	for i, e := range es {
		// One at a time: an entry's index follows the previous one's.
		ix, _, err := l.awaiter.Await(ctx, l.appender.Add(ctx, tessera.NewEntry(e.Marshal())))
		if err != nil {
			t.Fatalf("tlogtest: appending %s: %v", e, err)
		}
		idx[i] = ix.Index
	}
	return idx
}

// Checkpoint returns the published checkpoint, verified.
func (l *Log) Checkpoint(t testing.TB) *translog.Checkpoint {
	t.Helper()
	cp, err := l.checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

func (l *Log) checkpoint(ctx context.Context) (*translog.Checkpoint, error) {
	raw, err := l.Reader.ReadCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	return translog.ParseCheckpoint(raw, l.VKey)
}

// HeadProof returns the proof a chain GET carries for entry index at the
// published checkpoint.
func (l *Log) HeadProof(t testing.TB, index uint64) *translog.HeadProof {
	t.Helper()
	ctx := context.Background()
	cp, err := l.checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, l.Reader.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := pb.InclusionProof(ctx, index)
	if err != nil {
		t.Fatal(err)
	}
	return &translog.HeadProof{Checkpoint: string(cp.Note), Index: index, Proof: translog.EncodeHashes(p)}
}

// Consistency returns the consistency proof between sizes from and to,
// 0 < from ≤ to ≤ the published size.
func (l *Log) Consistency(ctx context.Context, from, to uint64) (*translog.ConsistencyProof, error) {
	cp, err := l.checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	if from == 0 || from > to || to > cp.Size {
		return nil, errOutOfRange
	}
	pb, err := client.NewProofBuilder(ctx, to, l.Reader.ReadTile)
	if err != nil {
		return nil, err
	}
	p, err := pb.ConsistencyProof(ctx, from, to)
	if err != nil {
		return nil, err
	}
	return &translog.ConsistencyProof{From: from, To: to, Proof: translog.EncodeHashes(p)}, nil
}

var errOutOfRange = errors.New("tlogtest: sizes out of range")

// Serve serves Handler on an httptest server closed by t.Cleanup and
// returns its URL.
func (l *Log) Serve(t testing.TB) string {
	srv := httptest.NewServer(l.Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// Handler serves GET /v1/info, /v1/log/checkpoint,
// /v1/log/consistency?from=M&to=N and /v1/log/tile/… (hash tiles and
// entry bundles, paths in the C2SP tlog-tiles grammar only).
func (l *Log) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, translog.Info{Log: &l.Info})
	})
	mux.HandleFunc("GET /v1/log/checkpoint", func(w http.ResponseWriter, r *http.Request) {
		raw, err := l.Reader.ReadCheckpoint(r.Context())
		if err != nil {
			http.Error(w, "no checkpoint", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(raw)
	})
	mux.HandleFunc("GET /v1/log/consistency", func(w http.ResponseWriter, r *http.Request) {
		from, err1 := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
		to, err2 := strconv.ParseUint(r.URL.Query().Get("to"), 10, 64)
		if err1 != nil || err2 != nil {
			http.Error(w, "bad sizes", http.StatusBadRequest)
			return
		}
		p, err := l.Consistency(r.Context(), from, to)
		if errors.Is(err, errOutOfRange) {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, p)
	})
	mux.HandleFunc("GET /v1/log/tile/", func(w http.ResponseWriter, r *http.Request) {
		raw, err := l.readTilePath(r.Context(), strings.TrimPrefix(r.URL.Path, "/v1/log/"))
		switch {
		case errors.Is(err, os.ErrNotExist):
			http.NotFound(w, r)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadRequest)
		default:
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(raw)
		}
	})
	return mux
}

// readTilePath reads "tile/L/N[.p/W]" or "tile/entries/N[.p/W]", accepting
// only the one path tlog-tiles writes for it.
func (l *Log) readTilePath(ctx context.Context, p string) ([]byte, error) {
	rest, ok := strings.CutPrefix(p, "tile/")
	if !ok {
		return nil, os.ErrNotExist
	}
	if idx, ok := strings.CutPrefix(rest, "entries/"); ok {
		n, w, err := layout.ParseTileIndexPartial(idx)
		if err != nil || layout.EntriesPath(n, w) != p {
			return nil, fmt.Errorf("bad entries path")
		}
		return l.Reader.ReadEntryBundle(ctx, n, w)
	}
	level, idx, ok := strings.Cut(rest, "/")
	if !ok {
		return nil, fmt.Errorf("bad tile path")
	}
	lv, n, w, err := layout.ParseTileLevelIndexPartial(level, idx)
	if err != nil || layout.TilePath(lv, n, w) != p {
		return nil, fmt.Errorf("bad tile path")
	}
	return l.Reader.ReadTile(ctx, lv, n, w)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
