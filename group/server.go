package group

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
)

// GroupsPath is the sig-server's group route ([NewHandler]): POST
// GroupsPath appends a link, GET GroupsPath + "/" + name reads a chain.
const GroupsPath = wire.GroupsPath

// MaxLinksPerResponse bounds the links in one GET answer; clients page
// with since.
const MaxLinksPerResponse = 256

// MaxClockSkew is how far a new link's ctime may be from the
// sig-server's clock, either way.
const MaxClockSkew = 5 * time.Minute

// Reasons in the "reason" field of the group API's refusals
// (docs/spec/group.md §7).
const (
	ReasonMalformed        = "malformed"          // 400: not a link; 413: over MaxLinkSize; 415: not application/octet-stream
	ReasonInvalid          = "invalid"            // 422: the link does not verify on the stored chain
	ReasonNotAllowed       = "not_allowed"        // 422: its signer's role does not allow it
	ReasonNotMember        = "not_member"         // 422: it names a non-member, or its signer is none
	ReasonTooManyMembers   = "too_many_members"   // 422: it would pass MaxMembers
	ReasonDeviceUnknown    = "device_unknown"     // 422: signed by a device of a person whose chain is not here
	ReasonDeviceNotAllowed = "device_not_allowed" // 422: signed by a key that is no current device of by
	ReasonNotLocal         = "not_local"          // 422: a create link for a domain this sig-server does not keep
	ReasonClock            = "clock"              // 422: ctime is more than MaxClockSkew from the server's clock
	ReasonNameTaken        = "name_taken"         // 409: a create link for a name in use
	ReasonConflict         = "conflict"           // 409: the link does not follow the head
	ReasonNoGroup          = "no_group"           // 404: no such group
	ReasonGroupsPerKey     = "groups_per_key"     // 429: its creator made Limits.GroupsPerKey groups already
	ReasonGroupLinks       = "group_links"        // 413: the chain has Limits.MaxLinks links
	ReasonGroupBytes       = "group_bytes"        // 413: the chain would pass Limits.MaxBytes
)

// Limits are the group API's abuse limits (docs/operators.md, "Limits").
// Zero fields take the value of [DefaultLimits]; [ratelimit.Unlimited]
// turns a rate off and a negative cap turns a cap off ([NoLimits] turns
// everything off, for tests and benchmarks).
type Limits struct {
	// AppendsPerIP bounds the appends (POST) one client address sends,
	// whatever becomes of them.
	AppendsPerIP ratelimit.Limit
	// ReadsPerIP bounds the chain reads (GET) of one client address.
	ReadsPerIP ratelimit.Limit
	// GroupsPerKey caps the groups one person creates (stored create
	// links signed for it). Negative: no cap.
	GroupsPerKey int
	// MaxLinks caps the links of one group, at most [MaxLinks].
	// Negative: [MaxLinks].
	MaxLinks int
	// MaxBytes caps the sum of the sizes of one group's links. Negative:
	// no cap.
	MaxBytes int64
	// ClientIP says how a request's client address is known: the TCP
	// peer, or X-Forwarded-For from trusted proxies only.
	ClientIP ratelimit.ClientIP
	// MaxTracked bounds the addresses each limiter tracks (0:
	// [ratelimit.DefaultMaxKeys]).
	MaxTracked int
	// Now is the clock of the limiters and of the ctime check; nil means
	// time.Now.
	Now func() time.Time
}

// DefaultLimits are the limits of a handler without [WithLimits].
var DefaultLimits = Limits{
	AppendsPerIP: ratelimit.Limit{N: 600, Per: time.Hour},
	ReadsPerIP:   ratelimit.Limit{N: 1200, Per: time.Minute},
	GroupsPerKey: 64,
	MaxLinks:     MaxLinks,
	MaxBytes:     MaxChainBytes,
}

// NoLimits returns Limits with every rate and cap off (MaxLinks stays
// [MaxLinks], the format's own bound).
func NoLimits() Limits {
	u := ratelimit.Unlimited
	return Limits{AppendsPerIP: u, ReadsPerIP: u, GroupsPerKey: -1, MaxLinks: -1, MaxBytes: -1}
}

// HandlerOption configures [NewHandler].
type HandlerOption func(*Handler)

// WithLimits sets the handler's abuse limits (default [DefaultLimits]).
func WithLimits(l Limits) HandlerOption { return func(h *Handler) { h.limits = l } }

// WithLogger sets the handler's logger (default slog.Default()).
func WithLogger(l *slog.Logger) HandlerOption { return func(h *Handler) { h.log = l } }

// WithDomains restricts the groups the handler keeps to those of the
// given handle domains: a create link for any other domain is refused
// (422, reason [ReasonNotLocal]). Without it, a group's domain must be
// the domain of its creator's handle on its chain here, whatever it is.
func WithDomains(domains ...string) HandlerOption {
	return func(h *Handler) {
		h.domains = map[string]bool{}
		for _, d := range domains {
			h.domains[strings.ToLower(d)] = true
		}
	}
}

// WithMaxLinksPerResponse sets how many links one GET answer carries at
// most (default [MaxLinksPerResponse], which is also the upper bound).
func WithMaxLinksPerResponse(n int) HandlerOption {
	return func(h *Handler) { h.page = min(max(n, 1), MaxLinksPerResponse) }
}

// maxCached bounds the verified group and person states the handler
// keeps in memory, each.
const maxCached = 4096

// Handler is the sig-server's group API; see [NewHandler].
type Handler struct {
	store   Store
	chains  sigchain.Store
	log     *slog.Logger
	limits  Limits
	domains map[string]bool // nil: any
	page    int
	now     func() time.Time
	mux     *http.ServeMux

	appendsPerIP, readsPerIP *ratelimit.Limiter
	stored                   atomic.Uint64
	refused                  map[string]*atomic.Uint64 // by reason; fixed keys

	createMu sync.Mutex // creates check the creator's count and append as one step

	mu      sync.Mutex
	groups  map[string]*cachedGroup
	persons map[kez.PublicKey]*sigchain.State
}

// cachedGroup is a verified group and the sum of its links' sizes.
type cachedGroup struct {
	st    *State
	bytes int64
}

// NewHandler returns the sig-server's group API (docs/spec/group.md §7)
// over store, with chains the sig-server's sigchains (for the creator's
// handle and the devices of signers):
//
//	POST /v1/groups               append one link: its exact bytes (201, 200, 400, 404, 409, 413, 415, 422, 429)
//	GET  /v1/groups/{name}?since=N the links after N (200, 400, 404, 429)
//
// Every append is verified on top of the stored chain; a create link
// needs its signer's chain here, naming a handle of the group's domain
// (and of the domains of [WithDomains], if given). A link signed by a
// device (key ≠ by) needs by's chain here, listing the device and not
// revoked. The handler keeps recently verified states in memory and
// re-reads the stores when another writer moved a head. It applies
// [Limits]. It is safe for concurrent use, also with other handlers or
// processes sharing the stores.
func NewHandler(store Store, chains sigchain.Store, opts ...HandlerOption) *Handler {
	h := &Handler{store: store, chains: chains, log: slog.Default(), limits: DefaultLimits, page: MaxLinksPerResponse,
		groups: map[string]*cachedGroup{}, persons: map[kez.PublicKey]*sigchain.State{}, refused: map[string]*atomic.Uint64{}}
	for _, o := range opts {
		o(h)
	}
	l, d := &h.limits, DefaultLimits
	if l.GroupsPerKey == 0 {
		l.GroupsPerKey = d.GroupsPerKey
	}
	if l.MaxLinks <= 0 || l.MaxLinks > MaxLinks {
		l.MaxLinks = MaxLinks
	}
	if l.MaxBytes == 0 {
		l.MaxBytes = d.MaxBytes
	}
	h.now = l.Now
	if h.now == nil {
		h.now = time.Now
	}
	limiter := func(lim, def ratelimit.Limit, endpoint string) *ratelimit.Limiter {
		return ratelimit.New(lim.Or(def), ratelimit.Options{Endpoint: endpoint, Reason: "ip", MaxKeys: l.MaxTracked, Now: l.Now})
	}
	h.appendsPerIP = limiter(l.AppendsPerIP, d.AppendsPerIP, "group_append")
	h.readsPerIP = limiter(l.ReadsPerIP, d.ReadsPerIP, "group_get")
	for _, r := range RefusalReasons {
		h.refused[r] = new(atomic.Uint64)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+GroupsPath, h.append)
	mux.HandleFunc("GET "+GroupsPath+"/{name}", h.get)
	h.mux = mux
	return h
}

// RefusalReasons are the reasons [HandlerStats].Refused counts.
var RefusalReasons = []string{ReasonMalformed, ReasonInvalid, ReasonNotAllowed, ReasonNotMember, ReasonTooManyMembers,
	ReasonDeviceUnknown, ReasonDeviceNotAllowed, ReasonNotLocal, ReasonClock, ReasonNameTaken, ReasonConflict,
	ReasonNoGroup, ReasonGroupsPerKey, ReasonGroupLinks, ReasonGroupBytes}

// ServeHTTP serves the API.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// HandlerStats are a handler's counters, for metrics.
type HandlerStats struct {
	// Limiters has the rate limits: endpoint "group_append" and
	// "group_get", reason "ip".
	Limiters []ratelimit.Stats
	// Stored counts the links stored (201 answers).
	Stored uint64
	// Refused counts the appends refused, by reason (every one of
	// [RefusalReasons] is present).
	Refused map[string]uint64
}

// Stats returns the handler's counters.
func (h *Handler) Stats() HandlerStats {
	s := HandlerStats{Limiters: []ratelimit.Stats{h.appendsPerIP.Stats(), h.readsPerIP.Stats()}, Stored: h.stored.Load(), Refused: map[string]uint64{}}
	for r, c := range h.refused {
		s.Refused[r] = c.Load()
	}
	return s
}

// Limits returns the limits in force, defaults filled in.
func (h *Handler) Limits() Limits {
	l := h.limits
	l.AppendsPerIP, l.ReadsPerIP = h.appendsPerIP.Limit(), h.readsPerIP.Limit()
	return l
}

// headJSON is a head as the API writes it.
type headJSON struct {
	Seqno uint64 `json:"seqno"`
	ID    string `json:"id"`
}

func toJSON(hd Head) headJSON {
	if hd.Seqno == 0 {
		return headJSON{}
	}
	return headJSON{Seqno: hd.Seqno, ID: hd.ID.String()}
}

// refuse answers status with {"error": msg, "reason": reason} and counts
// the refusal.
func (h *Handler) refuse(w http.ResponseWriter, status int, reason, msg string) {
	if c := h.refused[reason]; c != nil {
		c.Add(1)
	}
	httpjson.Write(w, status, map[string]string{"error": msg, "reason": reason})
}

func (h *Handler) conflict(w http.ResponseWriter, reason string, hd Head, msg string) {
	h.refused[reason].Add(1)
	httpjson.Write(w, http.StatusConflict, map[string]any{"error": msg, "reason": reason, "head": toJSON(hd)})
}

func (h *Handler) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	h.log.ErrorContext(r.Context(), "group: "+what, "err", err, "path", r.URL.Path)
	httpjson.Error(w, http.StatusInternalServerError, "the server failed "+what+"; try again later")
}

// limited answers 429 if l has no token for the client's address.
func (h *Handler) limited(w http.ResponseWriter, r *http.Request, l *ratelimit.Limiter, msg string) bool {
	ok, wait := l.Allow(h.limits.ClientIP.Key(r))
	if !ok {
		ratelimit.Refuse(w, wait, msg)
	}
	return !ok
}

func (h *Handler) get(w http.ResponseWriter, r *http.Request) {
	if h.limited(w, r, h.readsPerIP, "too many group reads from your address; wait and try again") {
		return
	}
	name := r.PathValue("name")
	if err := CheckName(name); err != nil {
		httpjson.Error(w, http.StatusBadRequest, "the name in the path is not a group name (name@domain, lower case)")
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
	links, hd, err := h.store.Links(r.Context(), name, since, h.page)
	if errors.Is(err, ErrNotFound) {
		httpjson.Write(w, http.StatusNotFound, map[string]string{"error": "this server has no group " + name, "reason": ReasonNoGroup})
		return
	}
	if err != nil {
		h.internal(w, r, "reading the group", err)
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"links":[`)
	for i, l := range links {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(l) // canonical JSON, stored only after verification
	}
	fmt.Fprintf(&b, `],"head":{"seqno":%d,"id":%q}}`+"\n", hd.Seqno, hd.ID.String())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(b.Bytes())
}

// errDeviceUnknown is a device check of a person whose chain the
// sig-server does not keep.
var errDeviceUnknown = errors.New("group: the signer's chain is not on this sig-server")

func (h *Handler) append(w http.ResponseWriter, r *http.Request) {
	if h.limited(w, r, h.appendsPerIP, "too many group appends from your address; wait and try again") {
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && ct != "application/octet-stream" {
		h.refuse(w, http.StatusUnsupportedMediaType, ReasonMalformed, "the body is one link's exact bytes, as application/octet-stream")
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxLinkSize))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			h.refuse(w, http.StatusRequestEntityTooLarge, ReasonMalformed, fmt.Sprintf("a link is at most %d bytes", MaxLinkSize))
			return
		}
		httpjson.Error(w, http.StatusBadRequest, "could not read the request body: "+err.Error())
		return
	}
	link, err := ParseLink(data)
	if err != nil {
		h.refuse(w, http.StatusBadRequest, ReasonMalformed, err.Error())
		return
	}
	ctx := r.Context()
	name := link.Group()
	c, hd, err := h.current(ctx, name)
	if err != nil {
		h.internal(w, r, "loading the group", err)
		return
	}
	if !Follows(hd, link) {
		switch {
		case link.Seqno() <= hd.Seqno && h.alreadyStored(ctx, link):
			httpjson.Write(w, http.StatusOK, map[string]any{"seqno": link.Seqno(), "head": link.ID().String()})
		case hd.Seqno == 0:
			h.refuse(w, http.StatusNotFound, ReasonNoGroup, "this server has no group "+name)
		case link.Seqno() == 1:
			h.conflict(w, ReasonNameTaken, hd, "the group "+name+" exists already")
		default:
			h.conflict(w, ReasonConflict, hd, (&ConflictError{Head: hd}).Error())
		}
		return
	}
	if now, at := h.now(), link.Ctime(); at.Before(now.Add(-MaxClockSkew)) || at.After(now.Add(MaxClockSkew)) {
		h.refuse(w, http.StatusUnprocessableEntity, ReasonClock, fmt.Sprintf("the link's ctime %s is more than %v from the server's clock %s", at.Format(time.RFC3339), MaxClockSkew, now.UTC().Format(time.RFC3339)))
		return
	}
	size := c.bytes + int64(len(link.Bytes()))
	switch {
	case link.Seqno() > uint64(h.limits.MaxLinks):
		h.refuse(w, http.StatusRequestEntityTooLarge, ReasonGroupLinks, fmt.Sprintf("the group has %d links, the most this sig-server keeps for one group", hd.Seqno))
		return
	case h.limits.MaxBytes >= 0 && size > h.limits.MaxBytes:
		h.refuse(w, http.StatusRequestEntityTooLarge, ReasonGroupBytes, fmt.Sprintf("the group holds %d bytes; with this link's %d it would pass the %d this sig-server keeps for one group", c.bytes, len(link.Bytes()), h.limits.MaxBytes))
		return
	}
	if link.Key() != link.By() {
		if err := h.checkDevice(ctx, link.By(), link.Key(), link.Ctime()); err != nil {
			h.refuseInvalid(w, r, err)
			return
		}
	}
	var next *State
	if link.Seqno() == 1 {
		if next, err = Verify(ctx, [][]byte{link.Bytes()}, h.checkDevice, WithClock(h.now)); err != nil {
			h.refuseInvalid(w, r, err)
			return
		}
		if why, err := h.local(ctx, link, next); err != nil {
			h.internal(w, r, "reading the creator's chain", err)
			return
		} else if why != "" {
			h.refuse(w, http.StatusUnprocessableEntity, ReasonNotLocal, why)
			return
		}
		h.createMu.Lock()
		defer h.createMu.Unlock()
		if n, err := h.store.CreatedBy(ctx, link.By()); err != nil {
			h.internal(w, r, "counting the creator's groups", err)
			return
		} else if h.limits.GroupsPerKey >= 0 && n >= h.limits.GroupsPerKey {
			h.refuse(w, http.StatusTooManyRequests, ReasonGroupsPerKey, fmt.Sprintf("%s created %d groups, the most this sig-server keeps for one person", link.By(), n))
			return
		}
	} else if next, err = c.st.Extend(ctx, [][]byte{link.Bytes()}, h.checkDevice, WithClock(h.now)); err != nil {
		h.refuseInvalid(w, r, err)
		return
	}
	if err := h.store.Append(ctx, link); err != nil {
		var ce *ConflictError
		switch {
		case errors.As(err, &ce) && link.Seqno() == 1:
			h.conflict(w, ReasonNameTaken, ce.Head, "the group "+name+" exists already")
		case errors.As(err, &ce):
			h.conflict(w, ReasonConflict, ce.Head, ce.Error())
		default:
			h.internal(w, r, "storing the link", err)
		}
		return
	}
	h.stored.Add(1)
	h.remember(name, &cachedGroup{st: next, bytes: size})
	h.log.InfoContext(ctx, "group: appended", "group", name, "seqno", link.Seqno(), "type", link.Type(), "by", link.By().String())
	httpjson.Write(w, http.StatusCreated, map[string]any{"seqno": link.Seqno(), "head": link.ID().String()})
}

// refuseInvalid answers 422 for a link that does not verify, with the
// reason its error matches.
func (h *Handler) refuseInvalid(w http.ResponseWriter, r *http.Request, err error) {
	reason := ReasonInvalid
	switch {
	case errors.Is(err, errDeviceUnknown):
		reason = ReasonDeviceUnknown
	case errors.Is(err, ErrDeviceNotAllowed):
		reason = ReasonDeviceNotAllowed
	case errors.Is(err, ErrNotAllowed):
		reason = ReasonNotAllowed
	case errors.Is(err, ErrNotMember):
		reason = ReasonNotMember
	case errors.Is(err, ErrTooManyMembers):
		reason = ReasonTooManyMembers
	case !errors.Is(err, ErrInvalid):
		h.internal(w, r, "verifying the link", err)
		return
	}
	h.refuse(w, http.StatusUnprocessableEntity, reason, err.Error())
}

// local says why a create link (verified into st) may not start a group
// here, or "": its signer's chain must be here and name the handle the
// link names, of the group's domain, one of the handler's domains if set.
func (h *Handler) local(ctx context.Context, link *Link, st *State) (string, error) {
	gh, err := handles.Rules{AllowLocal: true}.Parse(link.Group())
	if err != nil {
		return "the group's name is not name@domain", nil
	}
	if h.domains != nil && !h.domains[gh.Domain] {
		return "this sig-server keeps no groups of the domain " + gh.Domain, nil
	}
	ps, err := h.person(ctx, link.By())
	if errors.Is(err, errDeviceUnknown) {
		return "the creator " + link.By().String() + " has no chain on this sig-server", nil
	}
	if err != nil {
		return "", err
	}
	m, _ := st.Member(link.By())
	if ps.Handle() == "" || ps.Handle() != m.Handle {
		return fmt.Sprintf("the create link names the handle %q, the creator's chain here names %q", m.Handle, ps.Handle()), nil
	}
	ch, err := handles.Rules{AllowLocal: true}.Parse(ps.Handle())
	if err != nil || ch.Domain != gh.Domain {
		return fmt.Sprintf("the creator's handle %s is not of the group's domain %s", ps.Handle(), gh.Domain), nil
	}
	return "", nil
}

// checkDevice is the handler's [DeviceChecker] for new links: device
// must be a current device of person on person's chain here (a device
// revoked at any time is refused, since a new link's ctime is the
// signer's word). It returns errDeviceUnknown when person has no chain
// here.
func (h *Handler) checkDevice(ctx context.Context, person, device kez.PublicKey, _ time.Time) error {
	if person == device {
		return nil
	}
	ps, err := h.person(ctx, person)
	if err != nil {
		return err
	}
	d, ok := ps.DeviceOf(device)
	switch {
	case !ok || d.Primary:
		return fmt.Errorf("%w: %s is no device of %s", ErrDeviceNotAllowed, device, person)
	case d.Revoked:
		return fmt.Errorf("%w: %s revoked the device %s", ErrDeviceNotAllowed, person, device)
	}
	return nil
}

// storedDevice is the [DeviceChecker] for links read back from the
// store: the handler checked them when it stored them, and a device
// revoked since does not undo them.
func storedDevice(context.Context, kez.PublicKey, kez.PublicKey, time.Time) error { return nil }

// alreadyStored reports whether the identical link is stored, so that a
// client retrying after a lost answer gets success, not a conflict.
func (h *Handler) alreadyStored(ctx context.Context, l *Link) bool {
	links, _, err := h.store.Links(ctx, l.Group(), l.Seqno()-1, 1)
	return err == nil && len(links) == 1 && bytes.Equal(links[0], l.Bytes())
}

func (h *Handler) remember(name string, c *cachedGroup) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old := h.groups[name]; old != nil && old.st.Seqno() >= c.st.Seqno() {
		return
	}
	if len(h.groups) >= maxCached {
		for k := range h.groups { // evict an arbitrary entry
			delete(h.groups, k)
			break
		}
	}
	h.groups[name] = c
}

// current returns the verified group at the stored head and its size (a
// zero cachedGroup and head if there is no group), from the cache when
// it is up to date.
func (h *Handler) current(ctx context.Context, name string) (*cachedGroup, Head, error) {
	hd, err := h.store.Head(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return &cachedGroup{}, Head{}, nil
	}
	if err != nil {
		return nil, Head{}, err
	}
	h.mu.Lock()
	c := h.groups[name]
	h.mu.Unlock()
	if c != nil && (c.st.Seqno() > hd.Seqno || c.st.Seqno() == hd.Seqno && c.st.Head() != hd.ID) {
		c = nil // the store was replaced or rolled back under us; start over
	}
	if c == nil {
		c = &cachedGroup{}
	}
	for c.st == nil || c.st.Seqno() < hd.Seqno {
		since := uint64(0)
		if c.st != nil {
			since = c.st.Seqno()
		}
		raw, _, err := h.store.Links(ctx, name, since, MaxLinksPerResponse)
		if err != nil {
			return nil, Head{}, err
		}
		if len(raw) == 0 {
			return nil, Head{}, fmt.Errorf("store reports head %d of %s but has no links after %d", hd.Seqno, name, since)
		}
		size := c.bytes
		for _, b := range raw {
			size += int64(len(b))
		}
		var st *State
		if c.st == nil {
			st, err = Verify(ctx, raw, storedDevice, storedGroupOptions...)
		} else {
			st, err = c.st.Extend(ctx, raw, storedDevice, storedGroupOptions...)
		}
		if err != nil {
			return nil, Head{}, fmt.Errorf("stored group %s does not verify: %w", name, err)
		}
		c = &cachedGroup{st: st, bytes: size}
	}
	if c.st.Seqno() > hd.Seqno { // appended meanwhile; report what we verified
		hd = Head{Seqno: c.st.Seqno(), ID: c.st.Head()}
	}
	h.remember(name, c)
	return c, hd, nil
}

// storedGroupOptions re-verify groups the handler verified before, so a
// clock that moved backwards must not make them fail.
var storedGroupOptions = []VerifyOption{WithMaxFuture(100 * 365 * 24 * time.Hour)}

// storedChainOptions re-verify chains the sig-server verified before, so
// a clock that moved backwards must not make them fail.
var storedChainOptions = []sigchain.VerifyOption{sigchain.WithMaxFuture(100 * 365 * 24 * time.Hour)}

// person returns the verified chain of key from the sig-server's chains,
// or errDeviceUnknown when there is none.
func (h *Handler) person(ctx context.Context, key kez.PublicKey) (*sigchain.State, error) {
	hd, err := h.chains.Head(ctx, key)
	if errors.Is(err, sigchain.ErrNotFound) {
		return nil, fmt.Errorf("%w: no chain for %s", errDeviceUnknown, key)
	}
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	st := h.persons[key]
	h.mu.Unlock()
	if st != nil && (st.Seqno() > hd.Seqno || st.Seqno() == hd.Seqno && st.Head() != hd.ID) {
		st = nil
	}
	for st == nil || st.Seqno() < hd.Seqno {
		since := uint64(0)
		if st != nil {
			since = st.Seqno()
		}
		raw, _, err := h.chains.Links(ctx, key, since, sigchain.MaxLinksPerResponse)
		if err != nil {
			return nil, err
		}
		if len(raw) == 0 {
			return nil, fmt.Errorf("the chain store reports head %d of %s but has no links after %d", hd.Seqno, key, since)
		}
		links := make([]*sigchain.Link, len(raw))
		for i, b := range raw {
			if links[i], err = sigchain.ParseLink(b); err != nil {
				return nil, fmt.Errorf("a stored link of %s is unreadable: %w", key, err)
			}
		}
		if st, err = st.Extend(links, storedChainOptions...); err != nil {
			return nil, fmt.Errorf("the stored chain of %s does not verify: %w", key, err)
		}
	}
	h.mu.Lock()
	if len(h.persons) >= maxCached {
		for k := range h.persons {
			delete(h.persons, k)
			break
		}
	}
	h.persons[key] = st
	h.mu.Unlock()
	return st, nil
}
