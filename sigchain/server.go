package sigchain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/kez"
)

// ErrNotFound reports a chain the server or store does not have.
var ErrNotFound = errors.New("sigchain: no chain for this key")

// ErrConflict reports an append that does not follow the stored head:
// another append won, or the writer is behind. It is returned as a
// *[ConflictError] carrying the current head.
var ErrConflict = errors.New("sigchain: the chain's head has moved")

// Head is a stored chain's last link. The zero value means no chain.
type Head struct {
	Seqno uint64
	ID    cid.Cid // cid.Undef when Seqno is 0
}

// ConflictError is [ErrConflict] with the head the link had to follow.
type ConflictError struct {
	Head Head
}

// Error says where the head is now and what to do: fetch, rebuild the
// link on top of it and retry.
func (e *ConflictError) Error() string {
	if e.Head.Seqno == 0 {
		return "sigchain: the chain's head has moved: the server has no chain for this key yet, so the first link must be the eldest (seqno 1)"
	}
	return fmt.Sprintf("sigchain: the chain's head has moved: it is now seqno %d (%s); fetch, rebuild the link on top and retry", e.Head.Seqno, e.Head.ID)
}

// Is matches [ErrConflict].
func (e *ConflictError) Is(target error) bool { return target == ErrConflict }

// Store keeps chains for the sig-server. Implementations must be safe for
// concurrent use and make Append atomic; sigchain/sqlitestore is the
// reference implementation. A Store never verifies: [NewHandler] does.
type Store interface {
	// Head returns the chain's head, or [ErrNotFound].
	Head(ctx context.Context, key kez.PublicKey) (Head, error)
	// Links returns the exact bytes of up to limit links with seqno >
	// since, in seqno order, and the head at the time of reading, or
	// [ErrNotFound] when there is no chain for key.
	Links(ctx context.Context, key kez.PublicKey, since uint64, limit int) ([][]byte, Head, error)
	// Append stores link if, atomically, it directly follows the stored
	// head of link.Key(): seqno 1 when there is no chain, else seqno head+1
	// with prev = head ID. Otherwise it stores nothing and returns a
	// *[ConflictError] with the current head.
	Append(ctx context.Context, link *Link) error
}

// MaxLinksPerResponse bounds the links in one GET response; clients page
// with since.
const MaxLinksPerResponse = 256

// HandlerOption configures [NewHandler].
type HandlerOption func(*handler)

// WithLogger sets the handler's logger (default slog.Default()).
func WithLogger(l *slog.Logger) HandlerOption { return func(h *handler) { h.log = l } }

// WithVerifyOptions sets the options for verifying appended links, e.g.
// [WithClock].
func WithVerifyOptions(opts ...VerifyOption) HandlerOption {
	return func(h *handler) { h.verify = append(h.verify, opts...) }
}

// WithMaxLinksPerResponse sets how many links one GET answer carries at
// most (default [MaxLinksPerResponse], which is also the upper bound).
func WithMaxLinksPerResponse(n int) HandlerOption {
	return func(h *handler) { h.page = min(max(n, 1), MaxLinksPerResponse) }
}

// maxCached bounds the verified states the handler keeps in memory.
const maxCached = 4096

type handler struct {
	store  Store
	log    *slog.Logger
	verify []VerifyOption
	page   int
	mux    *http.ServeMux

	mu    sync.Mutex
	cache map[kez.PublicKey]*State
}

// NewHandler returns the sig-server HTTP API (docs/spec/sigchain.md §9)
// over store:
//
//	POST /v1/chains/{key}/links   append one signed link (201, 400, 409, 413, 422)
//	GET  /v1/chains/{key}?since=N the links after N (200, 400, 404)
//
// Every append is verified in full on top of the stored head; the handler
// keeps recently verified chain states in memory and re-reads the store
// when another writer moved a head. It is safe for concurrent use, also
// with other handlers or processes sharing the store.
func NewHandler(store Store, opts ...HandlerOption) http.Handler {
	h := &handler{store: store, log: slog.Default(), page: MaxLinksPerResponse, cache: map[kez.PublicKey]*State{}}
	for _, o := range opts {
		o(h)
	}
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST /v1/chains/{key}/links", h.append)
	h.mux.HandleFunc("GET /v1/chains/{key}", h.get)
	return h.mux
}

func headText(h Head) string {
	if h.Seqno == 0 {
		return ""
	}
	return h.ID.String()
}

func (h *handler) pathKey(w http.ResponseWriter, r *http.Request) (kez.PublicKey, bool) {
	k, err := kez.ParsePublicKey(r.PathValue("key"))
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "the chain key in the path is not a KEZ public key (56 characters, U…)")
		return k, false
	}
	return k, true
}

func (h *handler) get(w http.ResponseWriter, r *http.Request) {
	key, ok := h.pathKey(w, r)
	if !ok {
		return
	}
	var since uint64
	if s := r.URL.Query().Get("since"); s != "" {
		v, err := strconv.ParseUint(s, 10, 63)
		if err != nil {
			httpjson.Error(w, http.StatusBadRequest, "since must be a non-negative integer seqno")
			return
		}
		since = v
	}
	links, head, err := h.store.Links(r.Context(), key, since, h.page)
	if errors.Is(err, ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "this server has no chain for "+key.String())
		return
	}
	if err != nil {
		h.internal(w, r, "reading chain", err)
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"key":"` + key.String() + `","head_seqno":` + strconv.FormatUint(head.Seqno, 10) + `,"head":"` + headText(head) + `","links":[`)
	for i, l := range links {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(l) // canonical JSON, stored only after verification
	}
	b.WriteString("]}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

func (h *handler) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	h.log.ErrorContext(r.Context(), "sigchain: "+what, "err", err, "path", r.URL.Path)
	httpjson.Error(w, http.StatusInternalServerError, "the server failed "+what+"; try again later")
}

func (h *handler) conflict(w http.ResponseWriter, head Head, msg string) {
	httpjson.Write(w, http.StatusConflict, map[string]any{"error": msg, "head_seqno": head.Seqno, "head": headText(head)})
}

func (h *handler) append(w http.ResponseWriter, r *http.Request) {
	key, ok := h.pathKey(w, r)
	if !ok {
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxLinkSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpjson.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("a link is at most %d bytes", MaxLinkSize))
			return
		}
		httpjson.Error(w, http.StatusBadRequest, "could not read the request body: "+err.Error())
		return
	}
	link, err := ParseLink(data)
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, err.Error())
		return
	}
	if link.Key() != key {
		httpjson.Error(w, http.StatusUnprocessableEntity, fmt.Sprintf("the link is signed by %s, not by the chain's key %s", link.Key(), key))
		return
	}
	ctx := r.Context()
	st, head, err := h.current(ctx, key)
	if err != nil {
		h.internal(w, r, "loading the chain", err)
		return
	}
	if link.Seqno() != head.Seqno+1 {
		if link.Seqno() <= head.Seqno && h.alreadyStored(ctx, link) {
			httpjson.Write(w, http.StatusOK, map[string]any{"seqno": link.Seqno(), "id": link.ID().String()})
			return
		}
		h.conflict(w, head, (&ConflictError{Head: head}).Error())
		return
	}
	next, err := st.Extend([]*Link{link}, h.verify...)
	if err != nil {
		if errors.Is(err, ErrBrokenChain) && link.hasPrev && link.Prev() != head.ID {
			h.conflict(w, head, "the link's prev is not the stored head; "+(&ConflictError{Head: head}).Error())
			return
		}
		httpjson.Error(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	if err := h.store.Append(ctx, link); err != nil {
		var ce *ConflictError
		if errors.As(err, &ce) {
			h.conflict(w, ce.Head, ce.Error())
			return
		}
		h.internal(w, r, "storing the link", err)
		return
	}
	h.remember(next)
	h.log.InfoContext(ctx, "sigchain: appended", "key", key.String(), "seqno", link.Seqno(), "type", link.Type())
	httpjson.Write(w, http.StatusCreated, map[string]any{"seqno": link.Seqno(), "id": link.ID().String()})
}

// alreadyStored reports whether the identical link is stored, so that a
// client retrying after a lost response gets success, not a conflict.
func (h *handler) alreadyStored(ctx context.Context, l *Link) bool {
	links, _, err := h.store.Links(ctx, l.Key(), l.Seqno()-1, 1)
	return err == nil && len(links) == 1 && bytes.Equal(links[0], l.Bytes())
}

func (h *handler) remember(s *State) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.cache[s.key]; old != nil && old.seqno >= s.seqno {
		return
	}
	if len(h.cache) >= maxCached {
		for k := range h.cache { // evict an arbitrary entry
			delete(h.cache, k)
			break
		}
	}
	h.cache[s.key] = s
}

// storedChainOptions re-verify links the handler itself verified before,
// so a clock that moved backwards must not make them fail.
var storedChainOptions = []VerifyOption{WithMaxFuture(100 * 365 * 24 * time.Hour)}

// current returns the verified state at the stored head (nil and a zero
// head if there is no chain), from the cache when it is up to date.
func (h *handler) current(ctx context.Context, key kez.PublicKey) (*State, Head, error) {
	head, err := h.store.Head(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return nil, Head{}, nil
	}
	if err != nil {
		return nil, Head{}, err
	}
	h.mu.Lock()
	st := h.cache[key]
	h.mu.Unlock()
	if st != nil && (st.seqno > head.Seqno || st.seqno == head.Seqno && st.Head() != head.ID) {
		st = nil // the store was replaced or rolled back under us; start over
	}
	for st == nil || st.seqno < head.Seqno {
		since := uint64(0)
		if st != nil {
			since = st.seqno
		}
		raw, _, err := h.store.Links(ctx, key, since, MaxLinksPerResponse)
		if err != nil {
			return nil, Head{}, err
		}
		if len(raw) == 0 {
			return nil, Head{}, fmt.Errorf("store reports head %d but has no links after %d", head.Seqno, since)
		}
		links := make([]*Link, len(raw))
		for i, b := range raw {
			if links[i], err = ParseLink(b); err != nil {
				return nil, Head{}, fmt.Errorf("stored link is unreadable: %w", err)
			}
		}
		if st, err = st.Extend(links, storedChainOptions...); err != nil {
			return nil, Head{}, fmt.Errorf("stored chain does not verify: %w", err)
		}
	}
	if st.seqno > head.Seqno { // appended meanwhile; report what we verified
		head = Head{Seqno: st.seqno, ID: st.Head()}
	}
	h.remember(st)
	return st, head, nil
}
