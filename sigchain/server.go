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
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
)

// ErrNotFound reports a chain the server or store does not have.
var ErrNotFound = errors.New("sigchain: no chain for this key")

// ErrConflict reports an append that does not follow the stored head:
// another append won, or the writer is behind. It is returned as a
// *[ConflictError] carrying the current head.
var ErrConflict = errors.New("sigchain: the chain's head has moved")

// ErrChainFull reports an append refused because the chain reached the
// sig-server's cap on links or bytes ([Limits].MaxLinks, MaxBytes): a
// 413 whose reason is [ReasonChainLinks] or [ReasonChainBytes]. The chain
// stays readable; only its operator can raise the cap.
var ErrChainFull = errors.New("sigchain: the chain is as large as the sig-server allows")

// ErrRateLimited reports a request the sig-server refused with 429
// because the client's address or key sent too many. Errors matching it
// are a *[RateLimitedError] with the server's Retry-After.
var ErrRateLimited = ratelimit.ErrLimited

// RateLimitedError is a 429 answer: wait RetryAfter, then try again.
type RateLimitedError = ratelimit.Error

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
type HandlerOption func(*Handler)

// WithLogger sets the handler's logger (default slog.Default()).
func WithLogger(l *slog.Logger) HandlerOption { return func(h *Handler) { h.log = l } }

// WithVerifyOptions sets the options for verifying appended links, e.g.
// [WithClock].
func WithVerifyOptions(opts ...VerifyOption) HandlerOption {
	return func(h *Handler) { h.verify = append(h.verify, opts...) }
}

// WithMaxLinksPerResponse sets how many links one GET answer carries at
// most (default [MaxLinksPerResponse], which is also the upper bound).
func WithMaxLinksPerResponse(n int) HandlerOption {
	return func(h *Handler) { h.page = min(max(n, 1), MaxLinksPerResponse) }
}

// maxCached bounds the verified states the handler keeps in memory.
const maxCached = 4096

// Limits are the sig-server's abuse limits (docs/operators.md, "Limits").
// Zero fields take the value of [DefaultLimits]; [ratelimit.Unlimited]
// turns a rate off and a negative cap turns a cap off ([NoLimits] turns
// everything off, for tests and benchmarks).
type Limits struct {
	// AppendsPerIP bounds the appends (POST) one client address sends,
	// whatever becomes of them.
	AppendsPerIP ratelimit.Limit
	// ChainsPerIP bounds the new chains (eldest links stored) one client
	// address makes.
	ChainsPerIP ratelimit.Limit
	// AppendsPerKey bounds the links stored in one chain. Only valid new
	// links count, so no one but the key's holder can use up its bucket
	// (a replayed stored link is answered 200 without counting).
	AppendsPerKey ratelimit.Limit
	// ReadsPerIP bounds the chain reads (GET) of one client address.
	ReadsPerIP ratelimit.Limit
	// PrekeysPerIP bounds the prekey records (PUT) one client address
	// sends, whatever becomes of them.
	PrekeysPerIP ratelimit.Limit
	// PrekeysPerKey bounds the prekey records stored for one key. Only
	// valid new records count: a record that does not verify, is not
	// newer than the stored one or is the stored one again spends nothing,
	// so no one but the key's holder can use up its bucket.
	PrekeysPerKey ratelimit.Limit
	// PrekeyReadsPerIP bounds the prekey reads (GET) of one client
	// address.
	PrekeyReadsPerIP ratelimit.Limit
	// LinkRequestsPerIP bounds the device link requests (POST /v1/links)
	// one client address sends, whatever becomes of them.
	LinkRequestsPerIP ratelimit.Limit
	// LinkReadsPerIP bounds the link request reads (GET
	// /v1/links/{code}) of one client address: a new device polls with
	// them, and a guesser of codes is held to this pace.
	LinkReadsPerIP ratelimit.Limit
	// DeviceReadsPerIP bounds the device index reads (GET
	// /v1/devices/{key}) of one client address.
	DeviceReadsPerIP ratelimit.Limit
	// MaxPendingLinkRequests caps the link requests stored and not
	// expired, from all addresses together; a request past it is
	// refused with 429 (reason [ReasonLinkRequests]). Negative: no cap.
	MaxPendingLinkRequests int
	// MaxLinks caps the links of one chain; an append past it is refused
	// with 413 and matches [ErrChainFull]. Negative: no cap.
	MaxLinks int
	// MaxBytes caps the sum of the sizes of one chain's links, the bytes
	// a first reader downloads. Negative: no cap.
	MaxBytes int64
	// ClientIP says how a request's client address is known: the TCP
	// peer, or X-Forwarded-For from trusted proxies only.
	ClientIP ratelimit.ClientIP
	// MaxTracked bounds the keys each limiter tracks (0:
	// [ratelimit.DefaultMaxKeys]).
	MaxTracked int
	// Now is the limiters' clock; nil means time.Now.
	Now func() time.Time
}

// DefaultLimits are the limits of a handler without [WithLimits]: generous
// for people, tight for scripts.
var DefaultLimits = Limits{
	AppendsPerIP:  ratelimit.Limit{N: 600, Per: time.Hour},
	ChainsPerIP:   ratelimit.Limit{N: 10, Per: time.Hour},
	AppendsPerKey: ratelimit.Limit{N: 120, Per: time.Hour},
	ReadsPerIP:    ratelimit.Limit{N: 1200, Per: time.Minute},
	MaxLinks:      4096,
	MaxBytes:      4 << 20,

	PrekeysPerIP:     ratelimit.Limit{N: 600, Per: time.Hour},
	PrekeysPerKey:    ratelimit.Limit{N: 30, Per: time.Hour},
	PrekeyReadsPerIP: ratelimit.Limit{N: 1200, Per: time.Minute},

	LinkRequestsPerIP:      ratelimit.Limit{N: 30, Per: time.Hour},
	LinkReadsPerIP:         ratelimit.Limit{N: 300, Per: time.Minute},
	DeviceReadsPerIP:       ratelimit.Limit{N: 1200, Per: time.Minute},
	MaxPendingLinkRequests: 10000,
}

// NoLimits returns Limits with every rate and cap off.
func NoLimits() Limits {
	u := ratelimit.Unlimited
	return Limits{AppendsPerIP: u, ChainsPerIP: u, AppendsPerKey: u, ReadsPerIP: u, MaxLinks: -1, MaxBytes: -1,
		PrekeysPerIP: u, PrekeysPerKey: u, PrekeyReadsPerIP: u,
		LinkRequestsPerIP: u, LinkReadsPerIP: u, DeviceReadsPerIP: u, MaxPendingLinkRequests: -1}
}

// WithLimits sets the handler's abuse limits (default [DefaultLimits]).
func WithLimits(l Limits) HandlerOption { return func(h *Handler) { h.limits = l } }

// Reasons in the "reason" field of a 413 answer refusing an append
// because of a cap of [Limits].
const (
	ReasonChainLinks = "chain_links" // the chain has Limits.MaxLinks links
	ReasonChainBytes = "chain_bytes" // the link would take the chain past Limits.MaxBytes
)

// Handler is the sig-server HTTP API; see [NewHandler].
type Handler struct {
	store  Store
	log    *slog.Logger
	verify []VerifyOption
	page   int
	mux    *http.ServeMux
	limits Limits

	appendsPerIP, chainsPerIP, appendsPerKey, readsPerIP *ratelimit.Limiter
	tooManyLinks, tooManyBytes                           atomic.Uint64

	prekeys                                       PrekeyStore // nil: no prekey directory
	prekeysPerIP, prekeysPerKey, prekeyReadsPerIP *ratelimit.Limiter
	prekeyCount                                   prekeyCounters

	devices                                             DeviceStore      // nil: no device index
	links                                               LinkRequestStore // nil: no link requests
	linkRequestsPerIP, linkReadsPerIP, deviceReadsPerIP *ratelimit.Limiter
	linkCount                                           linkCounters

	linkLog  LinkLog // nil: no transparency log
	logLocks keyLocks

	mu    sync.Mutex
	cache map[kez.PublicKey]*cached
}

// cached is a verified chain and the sum of its links' sizes.
type cached struct {
	st    *State
	bytes int64
}

// ChainsPath is the prefix of every route of the sig-server API
// ([NewHandler]): mount the handler there in a mux of your own.
const ChainsPath = wire.ChainsPath

// NewHandler returns the sig-server HTTP API (docs/spec/sigchain.md §9)
// over store:
//
//	POST /v1/chains/{key}/links   append one signed link (201, 400, 409, 413, 422, 429)
//	GET  /v1/chains/{key}?since=N the links after N (200, 400, 404, 429)
//
// and, if store is also a [PrekeyStore], the prekey directory
// (docs/spec/sigchain.md §9, "Prekeys"; 501 over another store):
//
//	PUT  /v1/prekeys/{key}        publish the key's signed prekey record (201, 200, 400, 404, 409, 413, 415, 422, 429)
//	GET  /v1/prekeys/{key}        the key's current record (200, 400, 404, 429)
//
// and, if store is also a [DeviceStore] and a [LinkRequestStore], the
// device routes (docs/spec/sigchain.md §9, "Devices"; 501 over another
// store):
//
//	POST /v1/links                store a device link request until it expires (201, 200, 400, 409, 413, 415, 422, 429)
//	GET  /v1/links/{code}         the request of a link code, and its person once added (200, 400, 404, 429)
//	GET  /v1/devices/{key}        the person of a device key (200, 400, 404, 429)
//
// Every append is verified in full on top of the stored head; the handler
// keeps recently verified chain states in memory and re-reads the store
// when another writer moved a head. It applies [Limits] (rates per client
// address and per key, caps on a chain's size). It is safe for concurrent
// use, also with other handlers or processes sharing the store.
func NewHandler(store Store, opts ...HandlerOption) *Handler {
	h := &Handler{store: store, log: slog.Default(), page: MaxLinksPerResponse, cache: map[kez.PublicKey]*cached{}, limits: DefaultLimits}
	for _, o := range opts {
		o(h)
	}
	l, d := &h.limits, DefaultLimits
	if l.MaxLinks == 0 {
		l.MaxLinks = d.MaxLinks
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = d.MaxBytes
	}
	if l.MaxPendingLinkRequests == 0 {
		l.MaxPendingLinkRequests = d.MaxPendingLinkRequests
	}
	limiter := func(lim, def ratelimit.Limit, endpoint, reason string) *ratelimit.Limiter {
		return ratelimit.New(lim.Or(def), ratelimit.Options{Endpoint: endpoint, Reason: reason, MaxKeys: l.MaxTracked, Now: l.Now})
	}
	h.appendsPerIP = limiter(l.AppendsPerIP, d.AppendsPerIP, "append", "ip")
	h.chainsPerIP = limiter(l.ChainsPerIP, d.ChainsPerIP, "append", "new_chain")
	h.appendsPerKey = limiter(l.AppendsPerKey, d.AppendsPerKey, "append", "key")
	h.readsPerIP = limiter(l.ReadsPerIP, d.ReadsPerIP, "chain", "ip")
	h.prekeysPerIP = limiter(l.PrekeysPerIP, d.PrekeysPerIP, "prekey_put", "ip")
	h.prekeysPerKey = limiter(l.PrekeysPerKey, d.PrekeysPerKey, "prekey_put", "key")
	h.prekeyReadsPerIP = limiter(l.PrekeyReadsPerIP, d.PrekeyReadsPerIP, "prekey_get", "ip")
	h.linkRequestsPerIP = limiter(l.LinkRequestsPerIP, d.LinkRequestsPerIP, "link_post", "ip")
	h.linkReadsPerIP = limiter(l.LinkReadsPerIP, d.LinkReadsPerIP, "link_get", "ip")
	h.deviceReadsPerIP = limiter(l.DeviceReadsPerIP, d.DeviceReadsPerIP, "device_get", "ip")
	h.mux = http.NewServeMux()
	h.mux.HandleFunc("POST "+wire.ChainsPath+"{key}/links", h.append)
	h.mux.HandleFunc("GET "+wire.ChainsPath+"{key}", h.get)
	put, get := h.putPrekey, h.getPrekey
	if ps, ok := store.(PrekeyStore); ok {
		h.prekeys = ps
	} else {
		put, get = noPrekeys, noPrekeys
	}
	h.mux.HandleFunc("PUT "+wire.PrekeysPath+"{key}", put)
	h.mux.HandleFunc("GET "+wire.PrekeysPath+"{key}", get)
	h.devices, _ = store.(DeviceStore)
	h.links, _ = store.(LinkRequestStore)
	postLink, getLink, getDevice := h.postLinkRequest, h.getLinkRequest, h.getDevice
	if h.links == nil || h.devices == nil {
		postLink, getLink = noLinkRequests, noLinkRequests
	}
	if h.devices == nil {
		getDevice = noLinkRequests
	}
	h.mux.HandleFunc("POST "+LinksPath, postLink)
	h.mux.HandleFunc("GET "+LinksPath+"/{code}", getLink)
	h.mux.HandleFunc("GET "+DevicesPath+"{key}", getDevice)
	return h
}

// ServeHTTP serves the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// HandlerStats are a handler's counters, for metrics.
type HandlerStats struct {
	// Limiters has one entry per rate limit: endpoint "append" with
	// reason "ip", "new_chain" or "key", endpoint "chain" (reads) with
	// reason "ip", endpoint "prekey_put" with reason "ip" or "key", and
	// endpoint "prekey_get" with reason "ip", and endpoints "link_post",
	// "link_get" and "device_get" with reason "ip".
	Limiters []ratelimit.Stats
	// TooManyLinks and TooManyBytes count appends refused by the caps.
	TooManyLinks, TooManyBytes uint64
	// Prekeys are the prekey directory's counters.
	Prekeys PrekeyStats
	// LinkRequests are the device link requests' counters.
	LinkRequests LinkRequestStats
}

// Stats returns the handler's counters.
func (h *Handler) Stats() HandlerStats {
	return HandlerStats{
		Limiters: []ratelimit.Stats{h.appendsPerIP.Stats(), h.chainsPerIP.Stats(), h.appendsPerKey.Stats(), h.readsPerIP.Stats(),
			h.prekeysPerIP.Stats(), h.prekeysPerKey.Stats(), h.prekeyReadsPerIP.Stats(),
			h.linkRequestsPerIP.Stats(), h.linkReadsPerIP.Stats(), h.deviceReadsPerIP.Stats()},
		TooManyLinks: h.tooManyLinks.Load(),
		TooManyBytes: h.tooManyBytes.Load(),
		Prekeys:      h.prekeyCount.stats(),
		LinkRequests: h.linkCount.stats(),
	}
}

// Limits returns the limits in force, defaults filled in.
func (h *Handler) Limits() Limits {
	l := h.limits
	l.AppendsPerIP, l.ChainsPerIP = h.appendsPerIP.Limit(), h.chainsPerIP.Limit()
	l.AppendsPerKey, l.ReadsPerIP = h.appendsPerKey.Limit(), h.readsPerIP.Limit()
	l.PrekeysPerIP, l.PrekeysPerKey, l.PrekeyReadsPerIP = h.prekeysPerIP.Limit(), h.prekeysPerKey.Limit(), h.prekeyReadsPerIP.Limit()
	l.LinkRequestsPerIP, l.LinkReadsPerIP, l.DeviceReadsPerIP = h.linkRequestsPerIP.Limit(), h.linkReadsPerIP.Limit(), h.deviceReadsPerIP.Limit()
	return l
}

func headText(h Head) string {
	if h.Seqno == 0 {
		return ""
	}
	return h.ID.String()
}

func (h *Handler) pathKey(w http.ResponseWriter, r *http.Request) (kez.PublicKey, bool) {
	k, err := kez.ParsePublicKey(r.PathValue("key"))
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "the key in the path is not a KEZ public key (56 characters, U…)")
		return k, false
	}
	return k, true
}

// readBody reads a request body of at most limit bytes, or answers 413
// (naming what the body is) or 400 and reports false.
func readBody(w http.ResponseWriter, r *http.Request, limit int64, what string) ([]byte, bool) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			httpjson.Error(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s is at most %d bytes", what, limit))
			return nil, false
		}
		httpjson.Error(w, http.StatusBadRequest, "could not read the request body: "+err.Error())
		return nil, false
	}
	return data, true
}

// limited answers 429 if l has no token for key.
func limited(w http.ResponseWriter, l *ratelimit.Limiter, key, msg string) bool {
	ok, wait := l.Allow(key)
	if !ok {
		ratelimit.Refuse(w, wait, msg)
	}
	return !ok
}

// readKey answers 429 if l has no token for the client's address, and
// otherwise returns the key in the path (answering 400 if it is none).
func (h *Handler) readKey(w http.ResponseWriter, r *http.Request, l *ratelimit.Limiter, msg string) (kez.PublicKey, bool) {
	if limited(w, l, h.limits.ClientIP.Key(r), msg) {
		return kez.PublicKey{}, false
	}
	return h.pathKey(w, r)
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	key, ok := h.readKey(w, r, h.readsPerIP, "too many chain reads from your address; wait and try again")
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
	if err != nil && !errors.Is(err, ErrNotFound) {
		h.internal(w, r, "reading chain", err)
		return
	}
	var proof []byte
	if h.linkLog != nil {
		// Logged after reading, so the log covers at least this head;
		// it also logs a deletion when the chain is gone.
		proof = h.headProof(r.Context(), key, head, since+uint64(len(links)) >= head.Seqno && err == nil)
	}
	if errors.Is(err, ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "this server has no chain for "+key.String())
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
	b.WriteByte(']')
	if proof != nil {
		b.WriteString(`,"log":`)
		b.Write(proof)
	}
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Write(b.Bytes())
}

func (h *Handler) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	h.log.ErrorContext(r.Context(), "sigchain: "+what, "err", err, "path", r.URL.Path)
	httpjson.Error(w, http.StatusInternalServerError, "the server failed "+what+"; try again later")
}

func (h *Handler) tooLarge(w http.ResponseWriter, reason, msg string) {
	httpjson.Write(w, http.StatusRequestEntityTooLarge, map[string]string{"error": msg, "reason": reason})
}

func (h *Handler) conflict(w http.ResponseWriter, head Head, msg string) {
	httpjson.Write(w, http.StatusConflict, map[string]any{"error": msg, "head_seqno": head.Seqno, "head": headText(head)})
}

func (h *Handler) append(w http.ResponseWriter, r *http.Request) {
	ip := h.limits.ClientIP.Key(r)
	if limited(w, h.appendsPerIP, ip, "too many appends from your address; wait and try again") {
		return
	}
	key, ok := h.pathKey(w, r)
	if !ok {
		return
	}
	data, ok := readBody(w, r, MaxLinkSize, "a link")
	if !ok {
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
	c, head, err := h.current(ctx, key)
	if err != nil {
		h.internal(w, r, "loading the chain", err)
		return
	}
	if link.Seqno() != head.Seqno+1 {
		if link.Seqno() <= head.Seqno && h.alreadyStored(ctx, link) {
			h.answerLogged(w, r, link, http.StatusOK)
			return
		}
		h.conflict(w, head, (&ConflictError{Head: head}).Error())
		return
	}
	next, err := c.st.Extend([]*Link{link}, h.verify...)
	if err != nil {
		if errors.Is(err, ErrBrokenChain) && link.hasPrev && link.Prev() != head.ID {
			h.conflict(w, head, "the link's prev is not the stored head; "+(&ConflictError{Head: head}).Error())
			return
		}
		httpjson.Error(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	// The caps are exact: the link is stored only on top of this head.
	size := c.bytes + int64(len(link.Bytes()))
	switch {
	case h.limits.MaxLinks >= 0 && link.Seqno() > uint64(h.limits.MaxLinks):
		h.tooManyLinks.Add(1)
		h.tooLarge(w, ReasonChainLinks, fmt.Sprintf("the chain has %d links, the most this sig-server keeps for one key", head.Seqno))
		return
	case h.limits.MaxBytes >= 0 && size > h.limits.MaxBytes:
		h.tooManyBytes.Add(1)
		h.tooLarge(w, ReasonChainBytes, fmt.Sprintf("the chain holds %d bytes; with this link's %d it would pass the %d this sig-server keeps for one key", c.bytes, len(link.Bytes()), h.limits.MaxBytes))
		return
	}
	if why := h.lateRequest(link); why != "" {
		refuseWith(w, http.StatusUnprocessableEntity, ReasonLinkExpired, why)
		return
	}
	if refused, err := h.knownDevice(ctx, link); err != nil {
		h.internal(w, r, "reading the device index", err)
		return
	} else if refused != "" {
		h.deviceKnown(w, refused)
		return
	}
	if link.Seqno() == 1 && limited(w, h.chainsPerIP, ip, "too many new chains from your address; wait and try again") {
		return
	}
	if limited(w, h.appendsPerKey, key.String(), "too many links for this key; wait and try again") {
		return
	}
	if err := h.store.Append(ctx, link); err != nil {
		var ce *ConflictError
		if errors.As(err, &ce) {
			// Lost a race: nothing stored. To the same link, sent twice at
			// once, the answer is the retry's.
			h.appendsPerKey.Refund(key.String())
			if h.alreadyStored(ctx, link) {
				h.answerLogged(w, r, link, http.StatusOK)
				return
			}
			h.conflict(w, ce.Head, ce.Error())
			return
		}
		if errors.Is(err, ErrDeviceKnown) { // another chain added the device meanwhile
			h.appendsPerKey.Refund(key.String())
			h.deviceKnown(w, "the device is already on a chain here")
			return
		}
		h.internal(w, r, "storing the link", err)
		return
	}
	h.remember(&cached{st: next, bytes: size})
	h.log.InfoContext(ctx, "sigchain: appended", "key", key.String(), "seqno", link.Seqno(), "type", link.Type())
	h.answerLogged(w, r, link, http.StatusCreated)
}

// alreadyStored reports whether the identical link is stored, so that a
// client retrying after a lost response gets success, not a conflict.
func (h *Handler) alreadyStored(ctx context.Context, l *Link) bool {
	links, _, err := h.store.Links(ctx, l.Key(), l.Seqno()-1, 1)
	return err == nil && len(links) == 1 && bytes.Equal(links[0], l.Bytes())
}

func (h *Handler) remember(c *cached) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.cache[c.st.key]; old != nil && old.st.seqno >= c.st.seqno {
		return
	}
	if len(h.cache) >= maxCached {
		for k := range h.cache { // evict an arbitrary entry
			delete(h.cache, k)
			break
		}
	}
	h.cache[c.st.key] = c
}

// storedChainOptions re-verify links the handler itself verified before,
// so a clock that moved backwards must not make them fail.
var storedChainOptions = []VerifyOption{WithMaxFuture(100 * 365 * 24 * time.Hour)}

// current returns the verified state at the stored head and the chain's
// size (a zero cached and head if there is no chain), from the cache
// when it is up to date.
func (h *Handler) current(ctx context.Context, key kez.PublicKey) (*cached, Head, error) {
	head, err := h.store.Head(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return &cached{}, Head{}, nil
	}
	if err != nil {
		return nil, Head{}, err
	}
	h.mu.Lock()
	c := h.cache[key]
	h.mu.Unlock()
	if c != nil && (c.st.seqno > head.Seqno || c.st.seqno == head.Seqno && c.st.Head() != head.ID) {
		c = nil // the store was replaced or rolled back under us; start over
	}
	if c == nil {
		c = &cached{}
	}
	for c.st == nil || c.st.seqno < head.Seqno {
		since := uint64(0)
		if c.st != nil {
			since = c.st.seqno
		}
		raw, _, err := h.store.Links(ctx, key, since, MaxLinksPerResponse)
		if err != nil {
			return nil, Head{}, err
		}
		if len(raw) == 0 {
			return nil, Head{}, fmt.Errorf("store reports head %d but has no links after %d", head.Seqno, since)
		}
		links := make([]*Link, len(raw))
		size := c.bytes
		for i, b := range raw {
			if links[i], err = ParseLink(b); err != nil {
				return nil, Head{}, fmt.Errorf("stored link is unreadable: %w", err)
			}
			size += int64(len(b))
		}
		st, err := c.st.Extend(links, storedChainOptions...)
		if err != nil {
			return nil, Head{}, fmt.Errorf("stored chain does not verify: %w", err)
		}
		c = &cached{st: st, bytes: size}
	}
	if c.st.seqno > head.Seqno { // appended meanwhile; report what we verified
		head = Head{Seqno: c.st.seqno, ID: c.st.Head()}
	}
	h.remember(c)
	return c, head, nil
}
