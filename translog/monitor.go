package translog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/kez-lat/kez-chat/internal/wire"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Pins persists what a client learned of logs: each sig-server's log
// (origin and note key, trusted on first use) and the newest checkpoint it
// accepted per log. A log is named by its verifier key text
// ([LogInfo].Key, "origin+hash+base64key"), not by its origin alone: a
// server that names another log's origin with its own key must not make
// its checkpoints stand in for that log's. Implementations are safe for
// concurrent use.
type Pins interface {
	// LogOf returns the log pinned for the sig-server at base URL server.
	LogOf(ctx context.Context, server string) (LogInfo, bool, error)
	// SetLogOf pins the log of server.
	SetLogOf(ctx context.Context, server string, li LogInfo) error
	// Latest returns the newest accepted checkpoint (a signed note) of the
	// log whose verifier key text is log.
	Latest(ctx context.Context, log string) ([]byte, bool, error)
	// SetLatest records note as the newest accepted checkpoint of the log
	// whose verifier key text is log.
	SetLatest(ctx context.Context, log string, note []byte) error
}

// Monitor checks the log proofs of chain heads a client fetches and the
// consistency of every checkpoint it sees (docs/spec/translog.md, "Client
// rules"). A Monitor is safe for concurrent use; its fields must not change
// once it is in use. The zero value keeps its pins in memory.
type Monitor struct {
	// Pins stores pinned logs and accepted checkpoints; nil: in memory
	// (the Monitor's own [NewMemPins]).
	Pins Pins
	// HTTPClient fetches /v1/info and consistency proofs; nil: a default
	// client with a 30 s timeout.
	HTTPClient *http.Client
	// RequireLog refuses chain heads of servers that keep no log. By
	// default a server that has never named a log is trusted on first use,
	// as without a log.
	RequireLog bool
	// Clock is the time source; nil: time.Now.
	Clock func() time.Time
	// Logger receives split views (Error) and logs learned (Info); nil:
	// slog.Default().
	Logger *slog.Logger

	once   sync.Once
	pins   Pins
	mu     sync.Mutex
	locks  map[string]*sync.Mutex // per server ("s:") and per log key ("o:")
	noLogs map[string]time.Time   // server → when it said it keeps no log
}

const (
	// noLogTTL is how long a server's "no log" answer is believed.
	noLogTTL = 10 * time.Minute
	// maxAnswer bounds the bodies of /v1/info and consistency answers.
	maxAnswer = 16 << 10
)

var defaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

func (m *Monitor) init() {
	m.once.Do(func() {
		m.pins = m.Pins
		if m.pins == nil {
			m.pins = NewMemPins()
		}
		m.locks = map[string]*sync.Mutex{}
		m.noLogs = map[string]time.Time{}
	})
}

func (m *Monitor) now() time.Time {
	if m.Clock != nil {
		return m.Clock()
	}
	return time.Now()
}

func (m *Monitor) logger() *slog.Logger {
	if m.Logger != nil {
		return m.Logger
	}
	return slog.Default()
}

func (m *Monitor) client() *http.Client {
	if m.HTTPClient != nil {
		return m.HTTPClient
	}
	return defaultHTTPClient
}

// lock takes the mutex of name and returns its unlock.
func (m *Monitor) lock(name string) func() {
	m.mu.Lock()
	l := m.locks[name]
	if l == nil {
		l = &sync.Mutex{}
		m.locks[name] = l
	}
	m.mu.Unlock()
	l.Lock()
	return l.Unlock
}

func normServer(server string) string { return strings.TrimRight(server, "/") }

// CheckHead checks that e, the entry of a chain's head fetched from the
// sig-server at base URL server, is in that server's log, by the proof p
// the chain GET carried (nil when it carried none), and that the proof's
// checkpoint is consistent with the newest one accepted of that log.
//
// A server's log is learned from its GET /v1/info the first time and
// pinned; a server that names no log (or has no /v1/info) is trusted
// without proofs unless RequireLog is set, and asked again after 10
// minutes. Errors: [ErrNotLogged], [ErrLogKeyChanged], [ErrBadCheckpoint],
// [ErrBadProof], a [*SplitViewError], or the failure of a request.
func (m *Monitor) CheckHead(ctx context.Context, server string, e Entry, p *HeadProof) error {
	m.init()
	server = normServer(server)
	li, ok, err := m.logOf(ctx, server, p != nil)
	if err != nil {
		return err
	}
	if p == nil {
		if ok || m.RequireLog {
			return fmt.Errorf("%w: %s keeps a log but sent no proof of %s's head", ErrNotLogged, server, e.Key)
		}
		return nil
	}
	if !ok {
		return fmt.Errorf("%w: the server names no log key", ErrBadCheckpoint)
	}
	cp, err := m.parse(ctx, server, li, []byte(p.Checkpoint))
	if err != nil {
		return err
	}
	hashes, err := DecodeHashes(p.Proof)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadProof, err)
	}
	if err := VerifyInclusion(e, p.Index, hashes, cp); err != nil {
		return err
	}
	return m.accept(ctx, server, li, cp)
}

// Witness checks a checkpoint of server's log seen elsewhere (a peer's
// message) against the newest one accepted, as [Monitor.CheckHead] does,
// and keeps it if it is newer. A server whose log is not pinned is
// ignored (nil). A note that the pinned key did not sign is
// [ErrBadCheckpoint]; two views that cannot both be true, a
// [*SplitViewError].
func (m *Monitor) Witness(ctx context.Context, server string, signed []byte) error {
	m.init()
	server = normServer(server)
	li, ok, err := m.pins.LogOf(ctx, server)
	if err != nil || !ok {
		return err
	}
	cp, err := ParseCheckpoint(signed, li.Key)
	if err != nil {
		return err
	}
	return m.accept(ctx, server, li, cp)
}

// Latest returns the newest accepted checkpoint (a signed note) of
// server's log, nil if none.
func (m *Monitor) Latest(ctx context.Context, server string) ([]byte, error) {
	m.init()
	li, ok, err := m.pins.LogOf(ctx, normServer(server))
	if err != nil || !ok {
		return nil, err
	}
	n, _, err := m.pins.Latest(ctx, li.Key)
	return n, err
}

// logOf returns the pinned log of server, learning it from /v1/info when
// none is pinned (and, unless fresh, the last "no log" answer is older
// than noLogTTL).
func (m *Monitor) logOf(ctx context.Context, server string, fresh bool) (LogInfo, bool, error) {
	li, ok, err := m.pins.LogOf(ctx, server)
	if err != nil || ok {
		return li, ok, err
	}
	defer m.lock("s:" + server)()
	if li, ok, err = m.pins.LogOf(ctx, server); err != nil || ok {
		return li, ok, err
	}
	m.mu.Lock()
	at, cached := m.noLogs[server]
	m.mu.Unlock()
	if cached && !fresh && m.now().Sub(at) < noLogTTL {
		return LogInfo{}, false, nil
	}
	info, err := m.fetchInfo(ctx, server)
	if err != nil {
		return LogInfo{}, false, err
	}
	if info == nil {
		m.mu.Lock()
		m.noLogs[server] = m.now()
		m.mu.Unlock()
		return LogInfo{}, false, nil
	}
	if err := m.pins.SetLogOf(ctx, server, *info); err != nil {
		return LogInfo{}, false, err
	}
	m.logger().Info("pinned the sig-server's log key", "server", server, "origin", info.Origin, "key", info.Key)
	return *info, true, nil
}

// fetchInfo reads server's GET /v1/info: its log, or nil if it keeps
// none (a 404 is an older server without a log).
func (m *Monitor) fetchInfo(ctx context.Context, server string) (*LogInfo, error) {
	var info Info
	status, err := m.getJSON(ctx, server+wire.InfoPath, &info)
	if status == http.StatusNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("translog: reading the log info of %s: %w", server, err)
	}
	if info.Log == nil {
		return nil, nil
	}
	if err := info.Log.Check(); err != nil {
		return nil, fmt.Errorf("%s names a log that cannot be pinned: %w", server, err)
	}
	return info.Log, nil
}

// parse verifies a checkpoint from server with its pinned log li. When it
// does not verify, it asks /v1/info again: a server that now names another
// log is ErrLogKeyChanged.
func (m *Monitor) parse(ctx context.Context, server string, li LogInfo, signed []byte) (*Checkpoint, error) {
	cp, perr := ParseCheckpoint(signed, li.Key)
	if perr == nil {
		return cp, nil
	}
	info, err := m.fetchInfo(ctx, server)
	if err == nil && (info == nil || *info != li) {
		return nil, m.keyChanged(server, li, info)
	}
	if other, ok := otherLog(signed, li); ok {
		return nil, m.keyChanged(server, li, &other)
	}
	return nil, perr
}

// otherLog reports whether signed is a checkpoint signed (by its
// signature lines; the signature is not verified) by a key named as its
// origin that is not the pinned one: a checkpoint of another log.
func otherLog(signed []byte, li LogInfo) (LogInfo, bool) {
	var text log.Checkpoint
	_, err := note.Open(signed, note.VerifierList())
	var unverified *note.UnverifiedNoteError
	if !errors.As(err, &unverified) {
		return LogInfo{}, false
	}
	if _, err := text.Unmarshal([]byte(unverified.Note.Text)); err != nil {
		return LogInfo{}, false
	}
	pinned, err := note.NewVerifier(li.Key)
	if err != nil {
		return LogInfo{}, false
	}
	for _, sig := range unverified.Note.UnverifiedSigs {
		if sig.Name == text.Origin && (sig.Name != pinned.Name() || sig.Hash != pinned.KeyHash()) {
			return LogInfo{Origin: text.Origin, Key: fmt.Sprintf("%s+%08x", sig.Name, sig.Hash)}, true
		}
	}
	return LogInfo{}, false
}

func (m *Monitor) keyChanged(server string, pinned LogInfo, now *LogInfo) error {
	var got string
	if now != nil {
		got = now.Origin + " " + now.Key
	}
	m.logger().Error("the sig-server's log key changed", "server", server,
		"pinned_origin", pinned.Origin, "pinned_key", pinned.Key, "now", got)
	return fmt.Errorf("%w: %s: pinned %s", ErrLogKeyChanged, server, pinned.Key)
}

// accept checks cp, verified with li.Key, against the newest accepted
// checkpoint of that log (rule 4) and keeps it if it is newer.
func (m *Monitor) accept(ctx context.Context, server string, li LogInfo, cp *Checkpoint) error {
	defer m.lock("o:" + li.Key)()
	oldNote, ok, err := m.pins.Latest(ctx, li.Key)
	if err != nil {
		return err
	}
	if !ok {
		return m.pins.SetLatest(ctx, li.Key, cp.Note)
	}
	old, err := ParseCheckpoint(oldNote, li.Key)
	if err != nil {
		return fmt.Errorf("%w: the accepted checkpoint of %s: %w", ErrBadCheckpoint, li.Key, err)
	}
	switch {
	case cp.Size == old.Size:
		if cp.Root != old.Root {
			return m.split(old, cp, "two checkpoints of the same size with different roots")
		}
		return nil
	case cp.Size > old.Size:
		if err := m.consistent(ctx, server, old, cp, old, cp); err != nil {
			return err
		}
		return m.pins.SetLatest(ctx, li.Key, cp.Note)
	default:
		return m.consistent(ctx, server, cp, old, old, cp)
	}
}

// consistent fetches and checks the consistency proof from small to big;
// a proof that does not verify is a split view between ours and theirs.
func (m *Monitor) consistent(ctx context.Context, server string, small, big, ours, theirs *Checkpoint) error {
	if small.Size == 0 {
		return nil // every tree extends the empty one
	}
	var cp ConsistencyProof
	u := server + "/v1/log/consistency?from=" + strconv.FormatUint(small.Size, 10) + "&to=" + strconv.FormatUint(big.Size, 10)
	if _, err := m.getJSON(ctx, u, &cp); err != nil {
		return fmt.Errorf("%w: reading a consistency proof from %s: %w", ErrInconsistent, server, err)
	}
	if cp.From != small.Size || cp.To != big.Size {
		return fmt.Errorf("%w: %s answered a proof from %d to %d", ErrInconsistent, server, cp.From, cp.To)
	}
	hashes, err := DecodeHashes(cp.Proof)
	if err == nil {
		err = VerifyConsistency(small, big, hashes)
	}
	if err != nil {
		return m.split(ours, theirs, "no valid consistency proof: "+err.Error())
	}
	return nil
}

// split reports (and logs) a split view between our accepted checkpoint
// and theirs.
func (m *Monitor) split(ours, theirs *Checkpoint, reason string) error {
	e := &SplitViewError{Origin: ours.Origin, Ours: ours.Note, Theirs: theirs.Note, Reason: reason}
	m.logger().Error("split view: the sig-server's log signed two histories", "origin", e.Origin,
		"reason", reason, "ours", string(ours.Note), "theirs", string(theirs.Note))
	return e
}

// getJSON GETs u and decodes a JSON body of at most maxAnswer bytes. It
// returns the status too.
func (m *Monitor) getJSON(ctx context.Context, u string, v any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := m.client().Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if len(body) > maxAnswer {
		return resp.StatusCode, errors.New("answer too large")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return resp.StatusCode, fmt.Errorf("bad answer: %w", err)
	}
	return resp.StatusCode, nil
}

// memPins is the in-memory Pins.
type memPins struct {
	mu     sync.Mutex
	logs   map[string]LogInfo
	latest map[string][]byte
}

// NewMemPins returns Pins kept in memory, for tests and embedders.
func NewMemPins() Pins {
	return &memPins{logs: map[string]LogInfo{}, latest: map[string][]byte{}}
}

func (p *memPins) LogOf(_ context.Context, server string) (LogInfo, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	li, ok := p.logs[server]
	return li, ok, nil
}

func (p *memPins) SetLogOf(_ context.Context, server string, li LogInfo) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.logs[server] = li
	return nil
}

func (p *memPins) Latest(_ context.Context, log string) ([]byte, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n, ok := p.latest[log]
	return bytes.Clone(n), ok, nil
}

func (p *memPins) SetLatest(_ context.Context, log string, n []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latest[log] = bytes.Clone(n)
	return nil
}
