package sigchain

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
)

// LinkLog is the transparency log a [Handler] logs every stored link in
// (docs/spec/translog.md): package translog/logserver implements it over
// tessera. Its methods must be safe for concurrent use.
type LinkLog interface {
	// Append appends e and returns its leaf index once a published
	// checkpoint covers it.
	Append(ctx context.Context, e translog.Entry) (uint64, error)
	// Logged returns the newest entry logged for key and its leaf index,
	// or false if there is none.
	Logged(ctx context.Context, key kez.PublicKey) (translog.Entry, uint64, bool, error)
	// Proof returns the inclusion proof of the newest entry of (key,
	// seqno) at the log's published checkpoint.
	Proof(ctx context.Context, key kez.PublicKey, seqno uint64) (*translog.HeadProof, error)
}

// WithLog makes the handler log every link it stores, or finds stored, in
// l before it answers: an append is answered once its link is logged (503
// with reason [ReasonLogUnavailable] if logging fails; the link stays
// stored and a retry is answered 200 once it is logged), and a GET whose
// page reaches the head carries the head's inclusion proof in "log".
// Links stored without the handler knowing (before the log existed, by
// another writer, or before a crash) are logged by the next GET of their
// chain or the next append of a link after them, in order; a chain the store no longer holds as logged
// (an orphan deleted) gets a deletion entry first.
//
// If l also has a method AppendAll(ctx, []translog.Entry) ([]uint64,
// error) that appends entries in order with one wait for publication (as
// translog/logserver's Log has), the missing links of a chain are logged
// with one call.
func WithLog(l LinkLog) HandlerOption { return func(h *Handler) { h.linkLog = l } }

// ReasonLogUnavailable is the "reason" of a 503 answer to an append whose
// link is stored but could not be logged yet.
const ReasonLogUnavailable = "log_unavailable"

// keyLocks is one mutex per key, held by the requests logging the key's
// chain.
type keyLocks struct {
	mu sync.Mutex
	m  map[kez.PublicKey]*keyLock
}

type keyLock struct {
	sync.Mutex
	users int
}

// lock locks key's mutex and returns its unlock.
func (k *keyLocks) lock(key kez.PublicKey) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[kez.PublicKey]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// storedID returns the ID text of a stored link's bytes.
func storedID(b []byte) string { return string(appendIDText(nil, sha256.Sum256(b))) }

// batchLog is a [LinkLog] that appends several entries in order with
// one wait for publication.
type batchLog interface {
	AppendAll(ctx context.Context, es []translog.Entry) ([]uint64, error)
}

// ensureLogged logs what the store holds of key's chain and the log
// lacks: if the store no longer holds the newest logged link (the chain
// is shorter, or has another link at that seqno), a deletion entry and
// then every stored link from seqno 1; else the stored links after the
// newest logged one, in order.
func (h *Handler) ensureLogged(ctx context.Context, key kez.PublicKey) error {
	if h.linkLog == nil {
		return nil
	}
	defer h.logLocks.lock(key)()
	last, _, logged, err := h.linkLog.Logged(ctx, key)
	if err != nil {
		return err
	}
	return h.logChain(ctx, key, last, logged)
}

// logLink logs the stored link l for an append that stored it or found
// it stored. When the newest logged entry of l's chain is l's predecessor
// (seqno − 1 and l's prev; for an eldest link, no entry or a deletion
// entry), it appends l's entry alone, without reading the store again: l
// was stored on top of that predecessor, and the entry's continuity with
// the log is l's own signed seqno and prev. When l is the newest logged
// entry already, there is nothing to do. Everything else (links stored
// behind the log's back, a chain deleted meanwhile) goes through
// ensureLogged's general rules.
func (h *Handler) logLink(ctx context.Context, l *Link) error {
	if h.linkLog == nil {
		return nil
	}
	key := l.Key()
	defer h.logLocks.lock(key)()
	last, _, logged, err := h.linkLog.Logged(ctx, key)
	if err != nil {
		return err
	}
	e := translog.Entry{Key: key, Seqno: l.Seqno(), ID: l.ID().String()}
	var follows bool
	switch {
	case logged && last == e:
		return nil
	case l.Seqno() == 1:
		follows = !logged || last.IsDeletion()
	default:
		follows = logged && !last.IsDeletion() && last.Seqno == l.Seqno()-1 && l.hasPrev && last.ID == l.Prev().String()
	}
	if follows {
		_, err := h.linkLog.Append(ctx, e)
		return err
	}
	return h.logChain(ctx, key, last, logged)
}

// logChain is ensureLogged under key's lock, last being the newest
// logged entry of key if logged.
func (h *Handler) logChain(ctx context.Context, key kez.PublicKey, last translog.Entry, logged bool) error {
	head, err := h.store.Head(ctx, key)
	if errors.Is(err, ErrNotFound) {
		head = Head{}
	} else if err != nil {
		return err
	}
	var missing []translog.Entry
	since := uint64(0) // log the stored links after this seqno
	prevID := ""       // the ID of the link at since
	if logged && !last.IsDeletion() {
		held := false
		switch {
		case head.Seqno == last.Seqno:
			held = head.ID.String() == last.ID
		case head.Seqno > last.Seqno:
			links, _, err := h.store.Links(ctx, key, last.Seqno-1, 1)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			held = len(links) == 1 && storedID(links[0]) == last.ID
		}
		if held {
			since, prevID = last.Seqno, last.ID
		} else {
			missing = append(missing, translog.Entry{Key: key})
			h.log.InfoContext(ctx, "sigchain: logging the deletion of a chain", "key", key.String(), "logged_seqno", last.Seqno, "stored_seqno", head.Seqno)
		}
	}
	for since < head.Seqno {
		links, _, err := h.store.Links(ctx, key, since, MaxLinksPerResponse)
		if errors.Is(err, ErrNotFound) {
			break // deleted meanwhile: the next request logs the deletion
		}
		if err != nil {
			return err
		}
		if len(links) == 0 {
			return fmt.Errorf("store reports head %d but has no links after %d", head.Seqno, since)
		}
		for _, b := range links {
			since++
			// The store's reads are not one snapshot: a chain deleted and
			// made again between them would log one chain's links on top
			// of the other's, a history no chain had. Each link must
			// follow the one before it; if not, the next request logs the
			// chain again, with its deletion.
			if err := follows(b, since, prevID); err != nil {
				return fmt.Errorf("the chain changed while it was logged: %w", err)
			}
			prevID = storedID(b)
			missing = append(missing, translog.Entry{Key: key, Seqno: since, ID: prevID})
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if b, ok := h.linkLog.(batchLog); ok {
		_, err := b.AppendAll(ctx, missing)
		return err
	}
	for _, e := range missing {
		if _, err := h.linkLog.Append(ctx, e); err != nil {
			return err
		}
	}
	return nil
}

// follows checks that the stored link b is at seqno and follows the link
// of ID prevID ("" at seqno 1).
func follows(b []byte, seqno uint64, prevID string) error {
	l, err := ParseLink(b)
	if err != nil {
		return err
	}
	var prev string
	if l.Prev().Defined() {
		prev = l.Prev().String()
	}
	if l.Seqno() != seqno || prev != prevID {
		return fmt.Errorf("link %s at seqno %d does not follow %q at seqno %d", l.ID(), l.Seqno(), prevID, seqno-1)
	}
	return nil
}

// logTimeout bounds the logging a request starts.
const logTimeout = 30 * time.Second

// logContext is the context of the logging a request starts: it goes on
// when the client goes away (an entry half-logged would be appended again
// by the next request, so a client hanging up at will would fill the log
// with duplicates), bounded by logTimeout.
func logContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), logTimeout)
}

// logged logs the stored link l (logLink) and reports true, or answers
// 503 with reason [ReasonLogUnavailable] and reports false.
func (h *Handler) logged(w http.ResponseWriter, r *http.Request, l *Link) bool {
	ctx, cancel := logContext(r.Context())
	defer cancel()
	err := h.logLink(ctx, l)
	if err == nil {
		return true
	}
	h.log.ErrorContext(r.Context(), "sigchain: logging the chain failed", "key", l.Key().String(), "err", err)
	refuseWith(w, http.StatusServiceUnavailable, ReasonLogUnavailable, "the link is stored, but the server could not log it yet; send it again shortly")
	return false
}

// answerLogged answers an append of the stored link l with status and
// l's seqno and ID once l is logged (see logged).
func (h *Handler) answerLogged(w http.ResponseWriter, r *http.Request, l *Link, status int) {
	if h.logged(w, r, l) {
		httpjson.Write(w, status, map[string]any{"seqno": l.Seqno(), "id": l.ID().String()})
	}
}

// headProof logs key's chain (ensureLogged) and, if withProof, returns
// the JSON of the inclusion proof of head, or nil when the log cannot
// give one now (the page is served without it; clients that pinned the
// log refuse such a page).
func (h *Handler) headProof(ctx context.Context, key kez.PublicKey, head Head, withProof bool) []byte {
	ctx, cancel := logContext(ctx)
	defer cancel()
	if err := h.ensureLogged(ctx, key); err != nil {
		h.log.ErrorContext(ctx, "sigchain: logging the chain failed", "key", key.String(), "err", err)
		return nil
	}
	if !withProof || head.Seqno == 0 {
		return nil
	}
	p, err := h.linkLog.Proof(ctx, key, head.Seqno)
	if err != nil {
		h.log.ErrorContext(ctx, "sigchain: no inclusion proof for the head", "key", key.String(), "seqno", head.Seqno, "err", err)
		return nil
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	return b
}
