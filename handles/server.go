package handles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ServerConfig configures [NewServer].
type ServerConfig struct {
	// Domain is the handle domain this server registers, e.g. "kez.lat".
	// Required.
	Domain string
	// Store is the registry. Required.
	Store Store
	// SigServer fetches and verifies a claimant's chain before a claim is
	// recorded. Required (its BaseURL, at least).
	SigServer *sigchain.Client
	// PublicSigServerURL is the sig-server's base URL as clients reach it,
	// used in sigchain_url and WebFinger. Empty: SigServer.BaseURL.
	PublicSigServerURL string
	// PublicURL is this server's base URL as clients reach it (e.g.
	// "https://kez.lat"), used in WebFinger aliases. Empty: WebFinger
	// answers have no aliases (never one built from a request's Host,
	// which whoever sends the request chooses).
	PublicURL string
	// AllowLocal accepts development domains (localhost, IP:port) in
	// Domain, claims and WebFinger resources. Never in production.
	AllowLocal bool
	// Now is the clock for claim timestamps. nil: time.Now.
	Now func() time.Time
	// Logger logs accepted and refused claims. nil: slog.Default().
	Logger *slog.Logger
	// ChainTimeout bounds the sig-server fetch of one claim. 0: 10 s.
	ChainTimeout time.Duration
	// Limits are the rate limits on claims and reads (zero fields:
	// [DefaultLimits]).
	Limits Limits
	// DeviceRevoked, if set, is called after a revoke_device link was
	// stored (again for a revocation sent again), before the answer: the
	// chat-server closes the device's connections and empties its inbox
	// there. ctx is the request's.
	DeviceRevoked func(ctx context.Context, person, device kez.PublicKey)
}

// Server is the chat-server's handle registry over HTTP:
//
//	POST    /v1/handles                          claim a handle
//	GET     /v1/handles/{name}                   look one up
//	POST    /v1/devices                          add or revoke a device (one link)
//	GET     /v1/devices/{key}                    whose device a key is
//	GET     /.well-known/webfinger?resource=acct:NAME@DOMAIN
//	OPTIONS /.well-known/webfinger               a browser's CORS preflight
//
// (docs/spec/handles.md §4), with the rate limits of ServerConfig.Limits
// (429 with Retry-After). Mount it whole (it is an http.Handler) or
// register its routes on your own mux with [Server.Register]. It is safe
// for concurrent use.
type Server struct {
	cfg    ServerConfig
	rules  Rules
	sigURL string
	mux    *http.ServeMux

	lookAlikes atomic.Uint64 // claims refused as look-alikes of held names
	limits     *limiters
}

// NewServer checks cfg and returns the server.
func NewServer(cfg ServerConfig) (*Server, error) {
	d, err := ParseDomain(cfg.Domain, cfg.AllowLocal)
	if err != nil {
		return nil, fmt.Errorf("handles: the server's domain: %w", err)
	}
	cfg.Domain = d
	if cfg.Store == nil {
		return nil, errors.New("handles: NewServer needs a Store")
	}
	if cfg.SigServer == nil || cfg.SigServer.BaseURL == "" {
		return nil, errors.New("handles: NewServer needs a sig-server client with a BaseURL")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ChainTimeout <= 0 {
		cfg.ChainTimeout = 10 * time.Second
	}
	s := &Server{
		cfg:    cfg,
		rules:  Rules{DefaultDomain: d, AllowLocal: cfg.AllowLocal},
		sigURL: cfg.PublicSigServerURL,
		mux:    http.NewServeMux(),
		limits: newLimiters(cfg.Limits, cfg.Now),
	}
	if s.sigURL == "" {
		s.sigURL = cfg.SigServer.BaseURL
	}
	s.Register(s.mux)
	return s, nil
}

// LookAlikeRefusals returns how many claims the server refused because
// another key holds a look-alike of the name (same [Skeleton], another
// name): a count for the operator's metrics.
func (s *Server) LookAlikeRefusals() uint64 { return s.lookAlikes.Load() }

// Domain returns the domain the server registers.
func (s *Server) Domain() string { return s.cfg.Domain }

// Register adds the server's routes to mux.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("POST /v1/handles", s.ClaimHandler())
	mux.Handle("GET /v1/handles/{name}", s.LookupHandler())
	mux.Handle("POST "+DevicesPath, s.DevicesHandler())
	mux.Handle("GET "+DevicesPath+"/{key}", s.DeviceLookupHandler())
	mux.Handle("GET /.well-known/webfinger", s.WebFingerHandler())
	mux.Handle("OPTIONS /.well-known/webfinger", s.WebFingerHandler())
}

// ServeHTTP serves the routes.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// ClaimHandler serves POST /v1/handles.
func (s *Server) ClaimHandler() http.Handler { return http.HandlerFunc(s.claim) }

// LookupHandler serves GET /v1/handles/{name}; it reads the path value
// "name", so mount it on a pattern with that wildcard.
func (s *Server) LookupHandler() http.Handler { return http.HandlerFunc(s.lookup) }

// WebFingerHandler serves GET (and HEAD) /.well-known/webfinger, and
// answers an OPTIONS request there as a CORS preflight; mount it on both
// methods.
func (s *Server) WebFingerHandler() http.Handler { return http.HandlerFunc(s.webfinger) }

// claimStatus maps a claim error to its HTTP status.
func claimStatus(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case ReasonOf(err) != "", errors.Is(err, ErrBadClaim):
		return http.StatusBadRequest
	case errors.Is(err, ErrBadSignature), errors.Is(err, ErrClaimTime):
		return http.StatusUnauthorized
	case errors.Is(err, ErrSuspended):
		return http.StatusForbidden
	case errors.Is(err, ErrTaken), errors.Is(err, ErrKeyHasHandle):
		return http.StatusConflict
	case errors.Is(err, ErrChainMismatch):
		return http.StatusUnprocessableEntity
	case errors.Is(err, sigchain.ErrUnreachable):
		return http.StatusServiceUnavailable
	case errors.Is(err, errSigServer):
		return http.StatusBadGateway
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests
	}
	return http.StatusInternalServerError
}

// errSigServer marks a sig-server answer that is neither a chain nor a
// known refusal.
var errSigServer = errors.New("handles: the sig-server failed")

func (s *Server) claim(w http.ResponseWriter, r *http.Request) {
	if err := limitedError(s.limits.claimsPerIP, s.limits.ip.Key(r), "too many handle claims from your address; wait and try again"); err != nil {
		refuse(w, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxClaimBody)
	rec, created, err := s.doClaim(r)
	if err != nil {
		status := claimStatus(err)
		if status == http.StatusTooManyRequests {
			refuse(w, err)
			return
		}
		if status == http.StatusInternalServerError {
			s.cfg.Logger.Error("handle claim failed", "err", err)
			err = errors.New("the registry failed; try again later")
		} else {
			var te *TakenError
			if errors.As(err, &te) && te.LookAlike() {
				s.lookAlikes.Add(1)
			}
			s.cfg.Logger.Info("handle claim refused", "status", status, "err", err)
		}
		writeError(w, status, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.cfg.Logger.Info("handle claimed", "handle", rec.Handle.String(), "key", rec.Key.String())
	}
	httpjson.Write(w, status, lookupRecord(rec, ChainURL(s.sigURL, rec.Key)))
}

func (s *Server) doClaim(r *http.Request) (Record, bool, error) {
	var c Claim
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(&c); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return Record{}, false, fmt.Errorf("the claim is over %d bytes: %w", MaxClaimBody, err)
		}
		return Record{}, false, fmt.Errorf("%w: the body is not a claim object: %w", ErrBadClaim, err)
	}
	if dec.More() {
		return Record{}, false, fmt.Errorf("%w: data after the claim object", ErrBadClaim)
	}
	now := s.cfg.Now()
	h, key, err := c.Verify(s.rules, s.cfg.Domain, now)
	if err != nil {
		return Record{}, false, err
	}
	if err := limitedError(s.limits.claimsPerKey, key.String(), "too many handle claims for this key; wait and try again"); err != nil {
		return Record{}, false, err
	}
	if err := CheckClaimable(h); err != nil {
		return Record{}, false, err
	}
	ctx := r.Context()
	// Refuse what the registry already decides before asking the sig-server.
	if err := s.precheck(ctx, h, key); err != nil {
		return Record{}, false, err
	}
	st, err := s.chainOf(ctx, key)
	if err != nil {
		return Record{}, false, err
	}
	if st.Handle() != h.String() {
		claimed := st.Handle()
		if claimed == "" {
			claimed = "no handle"
		}
		return Record{}, false, fmt.Errorf("%w: the chain of %s claims %s, not %s; append a set_handle link first", ErrChainMismatch, key, claimed, h)
	}
	rec := Record{
		Handle:        h,
		Key:           key,
		EncryptionKey: st.EncryptionKey().Bytes(),
		Generation:    st.EncryptionGeneration(),
		UpdatedAt:     now,
	}
	created, err := s.cfg.Store.Claim(ctx, rec)
	if err != nil {
		return Record{}, false, err
	}
	rec, err = s.cfg.Store.Lookup(ctx, h)
	return rec, created, err
}

func (s *Server) precheck(ctx context.Context, h Handle, key kez.PublicKey) error {
	held, err := s.cfg.Store.LookupKey(ctx, key)
	var re *DeviceRevokedError
	if errors.As(err, &re) {
		held, err = re.Record, nil
	}
	switch {
	case err == nil && held.Key != key:
		return fmt.Errorf("%w: it is a device of %s", ErrKeyHasHandle, held.Key)
	case err == nil && held.Handle != h:
		return fmt.Errorf("%w: it holds %s", ErrKeyHasHandle, held.Handle)
	case err != nil && !errors.Is(err, ErrNotFound):
		return err
	}
	held, err = s.cfg.Store.Lookup(ctx, h)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case err != nil:
		return err
	case held.Key != key:
		return taken(h, h)
	case held.Suspended:
		return fmt.Errorf("%w: %s", ErrSuspended, h)
	}
	return nil
}

// chainOf fetches and verifies key's chain, mapping sig-server failures
// to the claim errors.
func (s *Server) chainOf(ctx context.Context, key kez.PublicKey) (*sigchain.State, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ChainTimeout)
	defer cancel()
	st, err := s.cfg.SigServer.FetchVerified(ctx, key, nil)
	switch {
	case err == nil:
		if st.Key() != key {
			return nil, fmt.Errorf("%w: the sig-server answered with the chain of %s", errSigServer, st.Key())
		}
		return st, nil
	case errors.Is(err, sigchain.ErrNotFound):
		return nil, fmt.Errorf("%w: the sig-server has no chain for %s; append the eldest link first", ErrChainMismatch, key)
	case errors.Is(err, sigchain.ErrUnreachable), errors.Is(err, context.DeadlineExceeded):
		return nil, fmt.Errorf("%w: %w", sigchain.ErrUnreachable, err)
	case errors.Is(err, sigchain.ErrInvalid):
		var se *sigchain.ServerError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%w: %w", errSigServer, err)
		}
		return nil, fmt.Errorf("%w: the chain of %s does not verify: %w", ErrChainMismatch, key, err)
	}
	return nil, fmt.Errorf("%w: %w", errSigServer, err)
}

// record looks up a handle of this domain, mapping errors to statuses.
func (s *Server) record(ctx context.Context, h Handle) (Record, int, error) {
	if h.Domain != s.cfg.Domain {
		return Record{}, http.StatusNotFound, fmt.Errorf("%w: this server serves %s, not %s", ErrNotFound, s.cfg.Domain, h.Domain)
	}
	rec, err := s.cfg.Store.Lookup(ctx, h)
	switch {
	case errors.Is(err, ErrNotFound):
		return Record{}, http.StatusNotFound, fmt.Errorf("%w: %s", ErrNotFound, h)
	case err != nil:
		s.cfg.Logger.Error("handle lookup failed", "handle", h.String(), "err", err)
		return Record{}, http.StatusInternalServerError, errors.New("the registry failed; try again later")
	case rec.Suspended:
		return Record{}, http.StatusGone, fmt.Errorf("%w: %s", ErrSuspended, h)
	}
	return rec, http.StatusOK, nil
}

func (s *Server) lookup(w http.ResponseWriter, r *http.Request) {
	if s.readLimited(w, r) {
		return
	}
	name := r.PathValue("name")
	rules := s.rules
	if strings.Contains(name, "@") {
		rules.DefaultDomain = "" // a full handle names its domain
	}
	h, err := rules.Parse(name)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	rec, status, err := s.record(r.Context(), h)
	if err != nil {
		writeError(w, status, err)
		return
	}
	httpjson.Write(w, http.StatusOK, lookupRecord(rec, ChainURL(s.sigURL, rec.Key)))
}

// WebFinger caching: an answer may be reused for a minute (as long as a
// Resolver keeps a result by default); an error is not stored, so a
// handle registered a moment later is found.
const (
	webFingerCacheOK    = "max-age=60"
	webFingerCacheError = "no-store"
)

func (s *Server) webfinger(w http.ResponseWriter, r *http.Request) {
	// Every answer, refusals included, may be read by any web page: the
	// document is public and no request carries credentials (RFC 7033 §5).
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Cache-Control", webFingerCacheError)
	if s.readLimited(w, r) {
		return
	}
	if r.Method == http.MethodOptions {
		h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "Accept")
		h.Set("Access-Control-Max-Age", "86400")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	h.Set("Content-Type", JRDContentType)
	q := r.URL.Query()
	res := q["resource"]
	if len(res) != 1 {
		writeError(w, http.StatusBadRequest, fmt.Errorf("give exactly one resource parameter, acct:name@domain (got %d)", len(res)))
		return
	}
	hd, err := ParseWebFingerResource(res[0], s.cfg.AllowLocal)
	if err != nil {
		status := http.StatusBadRequest
		if otherScheme(res[0]) {
			// A well-formed URI this server has no information about
			// (RFC 7033 §4.2): not the client's mistake.
			status = http.StatusNotFound
			err = fmt.Errorf("%w: this server knows acct: resources only", ErrNotFound)
		}
		writeError(w, status, err)
		return
	}
	rec, status, err := s.record(r.Context(), hd)
	if err != nil {
		writeError(w, status, err)
		return
	}
	key, fp := rec.Key.String(), rec.Key.Fingerprint()
	links := []JRDLink{
		{Rel: RelKey, Properties: map[string]*string{PropKey: &key, PropFingerprint: &fp}},
		{Rel: RelSigchain, Type: "application/json", Href: ChainURL(s.sigURL, rec.Key)},
	}
	if rels := q["rel"]; len(rels) > 0 { // RFC 7033 §4.3: only the asked relations
		links = filterLinks(links, rels)
	}
	jrd := JRD{Subject: hd.Acct(), Links: links}
	if s.cfg.PublicURL != "" {
		jrd.Aliases = []string{strings.TrimRight(s.cfg.PublicURL, "/") + "/v1/handles/" + hd.Name}
	}
	h.Set("Cache-Control", webFingerCacheOK)
	httpjson.Write(w, http.StatusOK, jrd)
}

// otherScheme reports whether resource is an absolute URI of a scheme
// other than acct: (https://…, mailto:…), which WebFinger may be asked
// about and this server has no information on.
func otherScheme(resource string) bool {
	u, err := url.Parse(resource)
	return err == nil && u.Scheme != "" && !strings.EqualFold(u.Scheme, "acct") && (u.Host != "" || u.Opaque != "")
}

func filterLinks(links []JRDLink, rels []string) []JRDLink {
	out := []JRDLink{}
	for _, l := range links {
		for _, rel := range rels {
			if l.Rel == rel {
				out = append(out, l)
				break
			}
		}
	}
	return out
}
