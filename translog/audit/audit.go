// Package audit checks a sig-server's transparency log against the chains
// the server serves (docs/spec/translog.md §6, "Auditing"): [Run] reads every
// entry of the log since the previous run, proves that the log only grew
// (the entries hash to the signed checkpoint's root, extending the Merkle
// tree audited before), checks each key's logged history (one link ID per
// seqno, no seqno skipped) and compares it with the chain the server's
// chain endpoint shows. What it finds is a list of [Finding]s; its state
// (the audited size, the tree's compact range and each key's logged
// history) is an SQLite file, so the next run reads only new entries.
//
// The command "kez audit" runs it.
package audit

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog"
)

// Config says which log to audit and where to keep the audit's state.
type Config struct {
	// Server is the sig-server's base URL, e.g. "https://sig.kez.lat".
	Server string
	// HTTPClient makes every request; nil: a client with a 30 s timeout.
	HTTPClient *http.Client
	// State is the path of the SQLite file of the audit's state (created
	// if missing). One file may hold the state of several servers' logs.
	State string
	// Logger receives progress lines (Info) and waits (Info); nil:
	// slog.Default().
	Logger *slog.Logger
	// Clock is the time source (Retry-After dates, link times); nil:
	// time.Now.
	Clock func() time.Time
}

// The kinds of [Finding].
const (
	// KindInconsistent: the log is not an append-only extension of what
	// was audited before (an entry changed, dropped or added in the
	// middle, a smaller log, another root at the same size), its
	// checkpoint does not verify with the pinned key, or the server names
	// another log key. Nothing of the run is recorded.
	KindInconsistent = "inconsistent"
	// KindFork: the log has two link IDs at one seqno of a chain.
	KindFork = "fork"
	// KindGap: the log has a seqno of a chain whose previous seqno it
	// never had.
	KindGap = "gap"
	// KindMismatch: the chain endpoint shows another link at a seqno than
	// the log has.
	KindMismatch = "mismatch"
	// KindHidden: the chain endpoint shows fewer links than the log has.
	KindHidden = "hidden"
	// KindBadChain: the chain endpoint shows a chain that does not verify.
	KindBadChain = "bad_chain"
	// KindBadEntry: an entry of the log is not an entry in its canonical
	// form.
	KindBadEntry = "bad_entry"
	// KindDeleted is a notice, not a problem: the log has a deletion
	// entry, the server deleted the key's chain (an orphan collected),
	// whose history starts again at seqno 1.
	KindDeleted = "deleted"
)

// Finding is one thing the audit found.
type Finding struct {
	Kind   string        // one of the Kind constants
	Key    kez.PublicKey // the chain's key; zero for a finding about the whole log
	Seqno  uint64        // the seqno concerned, if any
	Index  uint64        // the log index concerned, if any
	Detail string        // what exactly, for people
}

// Notice reports whether f is a notice ([KindDeleted]) rather than a
// problem.
func (f Finding) Notice() bool { return f.Kind == KindDeleted }

// Summary is what one [Run] did and found.
type Summary struct {
	Origin     string    // the log's origin
	From, To   uint64    // the entries audited by this run: indices [From, To)
	Entries    int       // how many entries were read (To-From)
	Keys       int       // how many chains were compared with the chain endpoint
	Findings   []Finding // problems and notices, in the order found
	Checkpoint []byte    // the signed checkpoint the run audited against; nil if none was read
}

// Problems returns how many findings are problems (not notices).
func (s *Summary) Problems() int {
	n := 0
	for _, f := range s.Findings {
		if !f.Notice() {
			n++
		}
	}
	return n
}

// ErrNoLog reports a sig-server that keeps no transparency log (its
// /v1/info names none, or it has no /v1/info).
var ErrNoLog = errors.New("audit: the sig-server keeps no log")

// ErrBusy reports that another audit advanced the same state file's
// state of the log while this one ran.
var ErrBusy = errors.New("audit: another audit of the log is running")

// Bounds of what the audit reads from the server.
const (
	maxInfo        = 16 << 10                                              // GET /v1/info
	maxBundle      = layout.EntryBundleWidth * (2 + translog.MaxEntrySize) // one entry bundle
	maxConsistency = 16 << 10                                              // GET /v1/log/consistency
	chainWorkers   = 4                                                     // chains fetched at once
)

// batchBundles is how many entry bundles one transaction of the state
// covers (a variable for tests).
var batchBundles uint64 = 64

// Run audits the log of c.Server once, from where the previous run with
// the same state file stopped, and returns what it found. The first run
// pins the log the server's /v1/info names (its origin and key); a later
// run where the server names another is a [KindInconsistent] finding.
//
// The entries are read in batches of bundles; each batch is proven part
// of the server's current checkpoint (by its root, or by a consistency
// proof for a batch that ends before it) and recorded in one transaction
// before the chains it touched are fetched and compared. A
// [KindInconsistent] finding stops the run and records nothing of the
// batch. A chain that looks hidden or rewritten is compared again after
// one more read of the log: a sig-server logs the deletion of a chain it
// collected when the chain is next read, and the audit's own read may be
// that one. An error (the server unreachable, the state file) also stops it;
// the Summary returned with it says what was audited before.
func Run(ctx context.Context, c Config) (*Summary, error) {
	server := strings.TrimRight(c.Server, "/")
	if server == "" {
		return nil, errors.New("audit: no server")
	}
	st, err := openState(c.State)
	if err != nil {
		return nil, err
	}
	defer st.close()
	a := &auditor{server: server, http: c.HTTPClient, log: c.Logger, now: c.Clock, st: st,
		factory: &compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}, held: map[string]bool{}, checked: map[string]bool{}}
	if a.http == nil {
		a.http = &http.Client{Timeout: 30 * time.Second}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a.run(ctx)
}

type auditor struct {
	server  string
	http    *http.Client
	log     *slog.Logger
	now     func() time.Time
	st      *state
	factory *compact.RangeFactory
	sum     Summary
	held    map[string]bool // keys whose findings wait for the final check
	checked map[string]bool // keys compared with the chain endpoint in this run
}

// inconsistent records a KindInconsistent finding.
func (a *auditor) inconsistent(index uint64, format string, args ...any) {
	a.sum.Findings = append(a.sum.Findings, Finding{Kind: KindInconsistent, Index: index, Detail: fmt.Sprintf(format, args...)})
}

func (a *auditor) run(ctx context.Context) (*Summary, error) {
	li, err := a.info(ctx)
	if err != nil {
		return nil, err
	}
	ls, ok, err := a.st.load(ctx, a.server)
	if err != nil {
		return nil, err
	}
	if !ok {
		if li == nil {
			return nil, ErrNoLog
		}
		if err := a.st.pin(ctx, a.server, li.Origin, li.Key); err != nil {
			return nil, err
		}
		ls = &logState{origin: li.Origin, vkey: li.Key}
	}
	a.sum = Summary{Origin: ls.origin, From: ls.size, To: ls.size}
	switch {
	case li == nil:
		a.inconsistent(ls.size, "the server no longer names a log; the pinned log is %s", ls.vkey)
		return &a.sum, nil
	case li.Origin != ls.origin || li.Key != ls.vkey:
		a.inconsistent(ls.size, "the server names the log key %s, not the pinned %s", li.Key, ls.vkey)
		return &a.sum, nil
	}

	// A chain that looks hidden or rewritten may be one the server
	// deleted (an orphan collected) and logged the deletion of only when
	// the audit read it: such findings wait for one more read of the log
	// (final), which brings the deletion entry if there is one.
	for final := false; ; final = true {
		cp, err := a.checkpoint(ctx, ls)
		if cp == nil {
			return &a.sum, err
		}
		read := false
		for ls.size < cp.Size {
			end := min((ls.size/layout.EntryBundleWidth+batchBundles)*layout.EntryBundleWidth, cp.Size)
			ok, err := a.batch(ctx, ls, end, cp)
			if err != nil || !ok {
				return &a.sum, err
			}
			if err := a.checkPending(ctx, final); err != nil {
				return &a.sum, err
			}
			read = true
		}
		if !read {
			// Chains left to compare by a run that stopped, or held.
			if err := a.checkPending(ctx, final); err != nil {
				return &a.sum, err
			}
		}
		if final || len(a.held) == 0 {
			return &a.sum, nil
		}
	}
}

// checkpoint fetches the log's checkpoint and checks it against the state
// ls. It returns nil after a KindInconsistent finding or with an error.
func (a *auditor) checkpoint(ctx context.Context, ls *logState) (*translog.Checkpoint, error) {
	signed, err := a.get(ctx, "/v1/log/checkpoint", translog.MaxNoteSize)
	if err != nil {
		return nil, err
	}
	cp, err := translog.ParseCheckpoint(signed, ls.vkey)
	if err != nil {
		a.inconsistent(ls.size, "the log's checkpoint does not verify with the pinned key: %v", err)
		return nil, nil
	}
	a.sum.Checkpoint = cp.Note
	switch {
	case cp.Size < ls.size:
		a.inconsistent(cp.Size, "the checkpoint has %d entries, fewer than the %d already audited", cp.Size, ls.size)
		return nil, nil
	case cp.Size == ls.size && ls.size > 0 && !bytes.Equal(cp.Root[:], ls.root):
		a.inconsistent(cp.Size, "the checkpoint of size %d has another root than the one audited at that size", cp.Size)
		return nil, nil
	}
	return cp, nil
}

// info returns the log the server names in /v1/info, nil if none.
func (a *auditor) info(ctx context.Context) (*translog.LogInfo, error) {
	body, err := a.get(ctx, wire.InfoPath, maxInfo)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	li, err := parseInfo(body)
	if err != nil {
		return nil, &AnswerError{Path: wire.InfoPath, StatusCode: http.StatusOK, Reason: err.Error()}
	}
	return li, nil
}

// parseInfo parses the answer of GET /v1/info: the log it names (nil
// for none), whose key must be a note verifier key named by its origin.
func parseInfo(body []byte) (*translog.LogInfo, error) {
	var info translog.Info
	if err := json.Unmarshal(body, &info); err != nil {
		return nil, errors.New("not JSON")
	}
	if li := info.Log; li != nil {
		if err := li.Check(); err != nil {
			return nil, err
		}
	}
	return info.Log, nil
}

// leaf is one entry read, at its log index.
type leaf struct {
	raw []byte
	idx uint64
}

// batch reads the entries [ls.size, end) of the log of checkpoint cp,
// proves them part of cp and records them. It returns false after a
// KindInconsistent finding.
func (a *auditor) batch(ctx context.Context, ls *logState, end uint64, cp *translog.Checkpoint) (bool, error) {
	rng, err := a.factory.NewRange(0, ls.size, ls.hashes)
	if err != nil {
		return false, fmt.Errorf("audit: state file: %w", errDamaged)
	}
	var leaves []leaf
	for ri := range layout.Range(ls.size, end-ls.size, cp.Size) {
		b, err := a.bundle(ctx, ri.Index, cp.Size)
		if err != nil {
			return false, err
		}
		if uint(len(b.Entries)) < ri.First+ri.N {
			a.inconsistent(ri.Index*layout.EntryBundleWidth+uint64(len(b.Entries)), "entry bundle %d has %d entries, fewer than the checkpoint of size %d commits to", ri.Index, len(b.Entries), cp.Size)
			return false, nil
		}
		for j, raw := range b.Entries[ri.First : ri.First+ri.N] {
			if err := rng.Append(rfc6962.DefaultHasher.HashLeaf(raw), nil); err != nil {
				return false, fmt.Errorf("audit: %w", err)
			}
			leaves = append(leaves, leaf{raw: raw, idx: ri.Index*layout.EntryBundleWidth + uint64(ri.First) + uint64(j)})
		}
	}
	root, err := rng.GetRootHash(nil)
	if err != nil {
		return false, fmt.Errorf("audit: %w", err)
	}
	if end == cp.Size {
		if !bytes.Equal(root, cp.Root[:]) {
			a.inconsistent(ls.size, "the log's entries do not hash to the root of its checkpoint of size %d: an entry was changed, dropped or inserted%s", cp.Size, since(ls.size))
			return false, nil
		}
	} else {
		p, err := a.consistency(ctx, end, cp.Size)
		if err != nil {
			return false, err
		}
		part := &translog.Checkpoint{Origin: cp.Origin, Size: end, Root: [32]byte(root)}
		if err := translog.VerifyConsistency(part, cp, p); err != nil {
			a.inconsistent(ls.size, "the log's entries up to %d are not part of its checkpoint of size %d (%v): an entry was changed, dropped or inserted%s", end, cp.Size, err, since(ls.size))
			return false, nil
		}
	}

	b, err := a.st.begin(ctx, a.server)
	if err != nil {
		return false, err
	}
	var size uint64
	if err := b.tx.QueryRowContext(ctx, `SELECT size FROM logs WHERE server = ?`, a.server).Scan(&size); err != nil || size != ls.size {
		b.rollback()
		if err != nil {
			return false, fmt.Errorf("audit: state file: %w", err)
		}
		return false, ErrBusy
	}
	var found []Finding
	for _, l := range leaves {
		f, err := a.apply(ctx, b, l)
		if err != nil {
			b.rollback()
			return false, err
		}
		if f != nil {
			found = append(found, *f)
		}
	}
	next := *ls
	next.size, next.root, next.hashes = end, root, rng.Hashes()
	if end == cp.Size {
		next.checkpoint = cp.Note
	}
	if err := b.commit(ctx, &next); err != nil {
		return false, err
	}
	*ls = next
	a.sum.Findings = append(a.sum.Findings, found...)
	a.sum.To = end
	a.sum.Entries += len(leaves)
	a.log.Info("audit: entries read", "origin", cp.Origin, "to", end, "of", cp.Size)
	return true, nil
}

// since words where an inconsistency may be when size entries were
// audited before.
func since(size uint64) string {
	if size == 0 {
		return ""
	}
	return fmt.Sprintf(" (the first %d entries were audited before)", size)
}

// bundle fetches and parses entry bundle i of a log of size logSize.
func (a *auditor) bundle(ctx context.Context, i, logSize uint64) (api.EntryBundle, error) {
	var ferr error
	b, err := client.GetEntryBundle(ctx, func(ctx context.Context, i uint64, p uint8) ([]byte, error) {
		raw, err := a.get(ctx, "/v1/log/"+layout.EntriesPath(i, p), maxBundle)
		if errors.Is(err, os.ErrNotExist) && p > 0 {
			// The partial bundle may be gone once the full one exists.
			raw, err = a.get(ctx, "/v1/log/"+layout.EntriesPath(i, 0), maxBundle)
		}
		ferr = err
		return raw, err
	}, i, logSize)
	if ferr != nil {
		return b, ferr
	}
	if err != nil {
		return b, &AnswerError{Path: "/v1/log/" + layout.EntriesPathForLogIndex(i*layout.EntryBundleWidth, logSize), StatusCode: http.StatusOK, Reason: "not an entry bundle", err: err}
	}
	return b, nil
}

// consistency fetches the consistency proof from size from to size to.
func (a *auditor) consistency(ctx context.Context, from, to uint64) ([][]byte, error) {
	path := "/v1/log/consistency?from=" + strconv.FormatUint(from, 10) + "&to=" + strconv.FormatUint(to, 10)
	body, err := a.get(ctx, path, maxConsistency)
	if err != nil {
		return nil, err
	}
	p, err := parseConsistency(body, from, to)
	if err != nil {
		return nil, &AnswerError{Path: path, StatusCode: http.StatusOK, Reason: err.Error()}
	}
	return p, nil
}

// parseConsistency parses the answer of GET /v1/log/consistency, which
// must be the proof from size from to size to.
func parseConsistency(body []byte, from, to uint64) ([][]byte, error) {
	var cp translog.ConsistencyProof
	if err := json.Unmarshal(body, &cp); err != nil {
		return nil, errors.New("not a consistency proof")
	}
	if cp.From != from || cp.To != to {
		return nil, fmt.Errorf("a proof from %d to %d, not from %d to %d", cp.From, cp.To, from, to)
	}
	p, err := translog.DecodeHashes(cp.Proof)
	if err != nil {
		return nil, fmt.Errorf("a bad proof: %w", err)
	}
	return p, nil
}

// apply records one entry in the batch's transaction and returns what it
// shows, if anything.
func (a *auditor) apply(ctx context.Context, b *batch, l leaf) (*Finding, error) {
	e, err := translog.ParseEntry(l.raw)
	if err != nil {
		return &Finding{Kind: KindBadEntry, Index: l.idx, Detail: err.Error()}, nil
	}
	key := e.Key.String()
	if _, err := b.mark.ExecContext(ctx, a.server, key); err != nil {
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	if e.IsDeletion() {
		if _, err := b.del.ExecContext(ctx, a.server, key); err != nil {
			return nil, fmt.Errorf("audit: state file: %w", err)
		}
		return &Finding{Kind: KindDeleted, Key: e.Key, Index: l.idx, Detail: "the server deleted the chain; its history starts again at seqno 1"}, nil
	}
	var id string
	var at uint64
	err = b.idAt.QueryRowContext(ctx, a.server, key, e.Seqno).Scan(&id, &at)
	switch {
	case err == nil && id == e.ID:
		return nil, nil // an identical duplicate
	case err == nil:
		return &Finding{Kind: KindFork, Key: e.Key, Seqno: e.Seqno, Index: l.idx,
			Detail: fmt.Sprintf("entry %d logs link %s at seqno %d, entry %d logged %s", l.idx, e.ID, e.Seqno, at, id)}, nil
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	var top uint64
	if err := b.maxSeqno.QueryRowContext(ctx, a.server, key).Scan(&top); err != nil {
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	if _, err := b.insert.ExecContext(ctx, a.server, key, e.Seqno, e.ID, l.idx); err != nil {
		return nil, fmt.Errorf("audit: state file: %w", err)
	}
	if e.Seqno > top+1 {
		return &Finding{Kind: KindGap, Key: e.Key, Seqno: e.Seqno, Index: l.idx,
			Detail: fmt.Sprintf("seqno %d is logged after seqno %d", e.Seqno, top)}, nil
	}
	return nil, nil
}

// checkPending compares the chains of the keys with new entries, at most
// chainWorkers at once. Unless final, a chain found hidden or rewritten
// is held: it stays pending and its findings wait for the final check.
func (a *auditor) checkPending(ctx context.Context, final bool) error {
	keys, err := a.st.pending(ctx, a.server)
	if err != nil {
		return err
	}
	var (
		mu    sync.Mutex
		found []Finding
		first error
		wg    sync.WaitGroup
		sem   = make(chan struct{}, chainWorkers)
	)
	if !final {
		// Held chains are compared again in the final check only.
		keys = slices.DeleteFunc(keys, func(k string) bool { return a.held[k] })
	}
	for _, k := range keys {
		sem <- struct{}{}
		mu.Lock()
		stop := first != nil
		mu.Unlock()
		if stop {
			<-sem
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fs, err := a.checkChain(ctx, k)
			hold := !final && err == nil && suspect(fs)
			if err == nil && !hold {
				err = a.st.done(ctx, a.server, k)
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				if first == nil {
					first = err
				}
			case hold:
				a.held[k] = true
			default:
				delete(a.held, k)
				found = append(found, fs...)
				if !a.checked[k] { // a chain in several batches is compared after each
					a.checked[k] = true
					a.sum.Keys++
				}
			}
		}()
	}
	wg.Wait()
	sort.SliceStable(found, func(i, j int) bool {
		if found[i].Key != found[j].Key {
			return found[i].Key.String() < found[j].Key.String()
		}
		return found[i].Seqno < found[j].Seqno
	})
	a.sum.Findings = append(a.sum.Findings, found...)
	return first
}

// suspect reports whether fs has a finding a deletion not yet logged
// would explain: a chain hidden or rewritten.
func suspect(fs []Finding) bool {
	for _, f := range fs {
		if f.Kind == KindHidden || f.Kind == KindMismatch {
			return true
		}
	}
	return false
}

// checkChain compares the chain the server shows for key with its logged
// history.
func (a *auditor) checkChain(ctx context.Context, k string) ([]Finding, error) {
	key, err := kez.ParsePublicKey(k)
	if err != nil {
		return nil, fmt.Errorf("audit: state file: %w", errDamaged)
	}
	hist, err := a.st.history(ctx, a.server, k)
	if err != nil {
		return nil, err
	}
	links, err := a.chain(ctx, key)
	var se *sigchain.ServerError
	switch {
	case errors.Is(err, sigchain.ErrNotFound):
		links = nil
	case err != nil && (errors.Is(err, sigchain.ErrUnreachable) || errors.As(err, &se) || ctx.Err() != nil || errors.Is(err, ratelimit.ErrLimited)):
		return nil, err
	case err != nil:
		return []Finding{{Kind: KindBadChain, Key: key, Detail: err.Error()}}, nil
	}
	var out []Finding
	if len(links) > 0 {
		if _, err := sigchain.Verify(links, sigchain.WithClock(a.now)); err != nil {
			out = append(out, Finding{Kind: KindBadChain, Key: key, Detail: err.Error()})
		}
	}
	var mismatch *Finding
	others := 0
	for _, h := range hist {
		if h.seqno > uint64(len(links)) {
			out = append(out, Finding{Kind: KindHidden, Key: key, Seqno: h.seqno, Index: h.idx,
				Detail: fmt.Sprintf("the chain endpoint shows %d links, the log has seqno %d (entry %d)", len(links), h.seqno, h.idx)})
			break
		}
		got := links[h.seqno-1].ID().String()
		switch {
		case got == h.id:
		case mismatch == nil:
			mismatch = &Finding{Kind: KindMismatch, Key: key, Seqno: h.seqno, Index: h.idx,
				Detail: fmt.Sprintf("the chain endpoint shows link %s at seqno %d, the log has %s (entry %d)", got, h.seqno, h.id, h.idx)}
		default:
			others++
		}
	}
	if mismatch != nil {
		if others > 0 {
			mismatch.Detail += fmt.Sprintf("; %d more seqnos differ", others)
		}
		out = append(out, *mismatch)
	}
	return out, nil
}

// chain fetches key's chain, waiting out 429 answers.
func (a *auditor) chain(ctx context.Context, key kez.PublicKey) ([]*sigchain.Link, error) {
	c := &sigchain.Client{BaseURL: a.server, HTTPClient: a.http}
	for {
		links, err := c.Fetch(ctx, key, 0)
		var rl *ratelimit.Error
		if !errors.As(err, &rl) {
			return links, err
		}
		if err := a.waitOut(ctx, "the chain of "+key.String(), rl); err != nil {
			return nil, err
		}
	}
}
