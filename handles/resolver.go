package handles

import (
	"context"
	"crypto/ecdh"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/claims"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog"
)

// DefaultResolveTTL is how long a [Resolver] keeps a result when its TTL
// is zero.
const DefaultResolveTTL = time.Minute

// maxCacheEntries bounds a resolver's cache.
const maxCacheEntries = 4096

// Resolved is a handle whose registry answer and sigchain agree, with what
// was verified to find it, so that a caller need not fetch or verify the
// chain again (a contact pins State and stores Links).
type Resolved struct {
	Handle        Handle
	Key           kez.PublicKey
	EncryptionKey *ecdh.PublicKey // the chain's current X25519 key
	Generation    uint32          // its generation
	State         *sigchain.State // the verified chain; pin State.Pin()
	SigchainURL   string          // where the chain was fetched
	// SigServer is the base URL of the sig-server the handle's registry
	// names and the chain was fetched from (SigchainURL without the
	// route); fetch the chain's later links there, with the HTTP client
	// [Resolver.ClientFor] gives for the handle's domain.
	SigServer string
	// Links are the links fetched and verified: the whole chain, or, for
	// [Resolver.ResolveFresh] from a known state of the same key, the
	// links from that state's head on. Shared with the cache: do not
	// modify them.
	Links []*sigchain.Link
}

// Resolver turns handles into verified keys (docs/spec/handles.md §5). A
// handle of DefaultDomain is looked up at HomeServer; a handle of any other
// domain through WebFinger at https://DOMAIN (or BaseURLs[DOMAIN]). The
// key's sigchain is then fetched from the sig-server the answer names and
// verified, and the result is accepted only if the chain is the key's and
// claims exactly the handle asked for.
//
// The servers the user configured (HomeServer, BaseURLs) and the
// sig-servers they name are contacted with HTTPClient, and so are those of
// LocalDomains. Every other server is chosen by whoever controls a domain,
// a stranger perhaps: https://DOMAIN, and the sig-server its answer names.
// Those are remote origins, contacted with RemoteHTTPClient and only if
// they are https at a public address ([CheckRemoteURL], [PublicAddr],
// checked again when the connection is made); anything else fails with
// [ErrForbiddenOrigin] before a byte is sent to it.
//
// Set the fields before the first call and do not change them after; a
// Resolver is then safe for concurrent use. Use it by pointer.
type Resolver struct {
	// DefaultDomain completes bare names and picks the home server.
	DefaultDomain string
	// HomeServer is the base URL of DefaultDomain's chat-server
	// (KEZ_SERVER). Empty: DefaultDomain is resolved like any other domain.
	HomeServer string
	// HTTPClient is used for the configured servers and for local domains;
	// nil means http.DefaultClient. Give it a timeout. The Resolver uses
	// a copy that follows redirects only to https, and one that leaves the
	// server's host under the remote-origin rules, through the remote
	// client's transport; its own CheckRedirect is not used.
	HTTPClient *http.Client
	// RemoteHTTPClient is used for remote origins; nil means one made by
	// [NewRemoteClient]. One given here should refuse what that one
	// refuses (use [RemoteDialControl] and [CheckRemoteURL]).
	RemoteHTTPClient *http.Client
	// BaseURLs maps a domain to the base URL its WebFinger is asked at,
	// instead of https://DOMAIN: for dev stacks and tests (federation
	// without DNS or TLS). A domain listed here is local.
	BaseURLs map[string]string
	// LocalDomains are domains the user or operator marks local (a dev
	// stack, a test, a private deployment): their WebFinger and the
	// sig-servers they name may be http, on loopback or private
	// addresses, and are contacted with HTTPClient. Never mark a domain
	// that strangers can register at.
	LocalDomains []string
	// AllowLocal accepts development domains (see [Rules.AllowLocal]).
	AllowLocal bool
	// TTL is how long a result is reused: 0 means [DefaultResolveTTL], a
	// negative value disables the cache. Failures are never cached.
	TTL time.Duration
	// Now is the cache's clock; nil means time.Now.
	Now func() time.Time
	// VerifyOptions are passed to sigchain verification (e.g. a clock).
	VerifyOptions []sigchain.VerifyOption
	// Log, if set, checks every chain fetched against its sig-server's
	// transparency log (sigchain.Client.Log): a head the log does not
	// prove fails the resolution with an error wrapping translog's (and
	// [ErrMismatch]).
	Log *translog.Monitor
	// Claims checks the identity claims of resolved chains
	// ([Resolver.CheckClaims]); nil means one made on first use with
	// LocalDomains.
	Claims *claims.Checker

	mu    sync.Mutex
	cache map[Handle]cacheEntry

	remoteOnce sync.Once
	remote     *http.Client
	localOnce  sync.Once
	local      *http.Client
	claimsOnce sync.Once
	claims     *claims.Checker
}

type cacheEntry struct {
	res     Resolved
	expires time.Time
}

// Resolve parses handle text (a bare name takes DefaultDomain) and resolves
// it. See [Resolver.ResolveHandle].
func (r *Resolver) Resolve(ctx context.Context, handle string) (*Resolved, error) {
	h, err := Rules{DefaultDomain: r.DefaultDomain, AllowLocal: r.AllowLocal}.Parse(handle)
	if err != nil {
		return nil, err
	}
	return r.ResolveHandle(ctx, h)
}

// ResolveHandle resolves h to a verified key. Errors: [ErrNotFound] (no
// such handle), [ErrSuspended], [ErrMismatch] (the server's answer and the
// chain disagree: never use the handle then), [ErrForbiddenOrigin] (the
// domain, or the sig-server its answer names, is not public https),
// [ErrUnreachable] (a server could not be reached or failed; retry later),
// or a *[HandleError].
func (r *Resolver) ResolveHandle(ctx context.Context, h Handle) (*Resolved, error) {
	if res, ok := r.cached(h); ok {
		return res, nil
	}
	return r.ResolveFresh(ctx, h, nil)
}

// ResolveFresh resolves h as [Resolver.ResolveHandle] does, without using
// the cache: the registry is asked now, and the chain fetched from the
// sig-server it names now (which may have moved since a key was pinned).
//
// known, if not nil, is a verified state of a chain the caller holds (a
// pinned contact's). If the registry still gives h to known's key, only
// the links from known's head on are fetched and verified on top of it
// (see [sigchain.Client.FetchVerified]): a chain that forks from or rolls
// back known fails with an error matching [sigchain.ErrFork] or
// [sigchain.ErrRollback] (and [ErrMismatch]). If the registry gives h to
// another key, that key's whole chain is verified and returned: compare
// Key with known's. A full resolution (known nil, or another key) is
// cached for later ResolveHandle calls; one from known is not.
func (r *Resolver) ResolveFresh(ctx context.Context, h Handle, known *sigchain.State) (*Resolved, error) {
	key, chainURL, err := r.ask(ctx, h)
	if err != nil {
		return nil, err
	}
	sigServer, err := sigServerOf(chainURL, key)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMismatch, h, err)
	}
	hc, err := r.ClientFor(h.Domain, sigServer)
	if err != nil {
		return nil, fmt.Errorf("handles: the sig-server named for %s: %w", h, err)
	}
	sc := sigchain.Client{BaseURL: sigServer, HTTPClient: hc, VerifyOptions: r.VerifyOptions, Log: r.Log}
	var st *sigchain.State
	var links []*sigchain.Link
	if known != nil && known.Key() == key && known.Seqno() > 0 {
		links, err = sc.Fetch(ctx, key, known.Seqno()-1)
		if errors.Is(err, sigchain.ErrNotFound) {
			err = fmt.Errorf("%w: the sig-server has no chain for %s, the known head is seqno %d", sigchain.ErrRollback, key, known.Seqno())
		}
		if err == nil {
			err = sigchain.CheckAgainst(known.Pin(), links)
		}
		if err == nil {
			st, err = known.Extend(links, r.VerifyOptions...)
		}
	} else {
		known = nil
		links, err = sc.Fetch(ctx, key, 0)
		if err == nil {
			st, err = sigchain.Verify(links, r.VerifyOptions...)
		}
	}
	if err != nil {
		return nil, chainError(h, key, err)
	}
	switch {
	case st.Key() != key:
		return nil, fmt.Errorf("%w: %s: the registry says %s, the chain is %s's", ErrMismatch, h, key, st.Key())
	case st.Handle() != h.String():
		return nil, fmt.Errorf("%w: the registry gives %s to %s, but that key's chain claims %q", ErrMismatch, h, key, st.Handle())
	}
	res := Resolved{
		Handle:        h,
		Key:           key,
		EncryptionKey: st.EncryptionKey(),
		Generation:    st.EncryptionGeneration(),
		State:         st,
		SigchainURL:   chainURL,
		SigServer:     sigServer,
		Links:         links,
	}
	if known == nil {
		r.store(res)
	}
	return &res, nil
}

func chainError(h Handle, key kez.PublicKey, err error) error {
	var se *sigchain.ServerError
	switch {
	case errors.Is(err, ErrForbiddenOrigin):
		return fmt.Errorf("handles: the sig-server of %s: %w", h, err)
	case errors.Is(err, sigchain.ErrUnreachable), errors.As(err, &se) && se.StatusCode >= 500,
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: the sig-server of %s: %w", ErrUnreachable, h, err)
	case errors.Is(err, sigchain.ErrNotFound):
		return fmt.Errorf("%w: the registry gives %s to %s, but the sig-server it names has no chain for it", ErrMismatch, h, key)
	case errors.Is(err, translog.ErrNotLogged), errors.Is(err, translog.ErrBadProof), errors.Is(err, translog.ErrBadCheckpoint),
		errors.Is(err, translog.ErrInconsistent), errors.Is(err, translog.ErrSplitView), errors.Is(err, translog.ErrLogKeyChanged):
		return fmt.Errorf("%w: the sig-server of %s does not prove the chain of %s is in its log: %w", ErrMismatch, h, key, err)
	}
	return fmt.Errorf("%w: the chain of %s (%s) does not verify: %w", ErrMismatch, h, key, err)
}

// ask gets the key and chain URL the handle's home server gives.
func (r *Resolver) ask(ctx context.Context, h Handle) (kez.PublicKey, string, error) {
	if h.Domain == r.DefaultDomain && r.HomeServer != "" {
		c := Client{BaseURL: r.HomeServer, HTTPClient: r.httpClient()}
		rec, err := c.Lookup(ctx, h.Name)
		if err != nil {
			return kez.PublicKey{}, "", answerError(h, err)
		}
		if rec.Handle != h.String() {
			return kez.PublicKey{}, "", fmt.Errorf("%w: asked for %s, the home server answered with %q", ErrMismatch, h, rec.Handle)
		}
		key, err := kez.ParsePublicKey(rec.Key)
		if err != nil {
			return kez.PublicKey{}, "", fmt.Errorf("%w: %s: the home server's key: %w", ErrMismatch, h, err)
		}
		return key, rec.SigchainURL, nil
	}
	base, ok := r.BaseURLs[h.Domain]
	hc := r.httpClient()
	if !ok {
		base = "https://" + h.Domain
		if !r.IsLocal(h.Domain) {
			if err := CheckRemoteURL(&url.URL{Scheme: "https", Host: h.Domain}); err != nil {
				return kez.PublicKey{}, "", fmt.Errorf("handles: the domain of %s: %w", h, err)
			}
			hc = r.RemoteClient()
		}
	}
	c := Client{BaseURL: base, HTTPClient: hc}
	jrd, err := c.WebFinger(ctx, h)
	if err != nil {
		return kez.PublicKey{}, "", answerError(h, err)
	}
	if subj, err := ParseWebFingerResource(jrd.Subject, r.AllowLocal); err != nil || subj != h {
		return kez.PublicKey{}, "", fmt.Errorf("%w: asked WebFinger of %s for %s, it answered for %q", ErrMismatch, h.Domain, h, jrd.Subject)
	}
	kl, sl := jrd.Link(RelKey), jrd.Link(RelSigchain)
	if kl == nil || kl.Properties[PropKey] == nil || sl == nil || sl.Href == "" {
		return kez.PublicKey{}, "", fmt.Errorf("%w: the WebFinger answer for %s lacks the %s or %s link", ErrMismatch, h, RelKey, RelSigchain)
	}
	key, err := kez.ParsePublicKey(*kl.Properties[PropKey])
	if err != nil {
		return kez.PublicKey{}, "", fmt.Errorf("%w: %s: the WebFinger key: %w", ErrMismatch, h, err)
	}
	return key, sl.Href, nil
}

// answerError maps a registry client error to the resolver's errors.
func answerError(h Handle, err error) error {
	switch {
	case errors.Is(err, ErrForbiddenOrigin):
		return fmt.Errorf("handles: resolving %s: %w", h, err)
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("%w: %s", ErrNotFound, h)
	case errors.Is(err, ErrSuspended):
		return fmt.Errorf("%w: %s", ErrSuspended, h)
	case errors.Is(err, ErrUnreachable), errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: resolving %s: %w", ErrUnreachable, h, err)
	case ReasonOf(err) != "":
		return err
	}
	return fmt.Errorf("%w: resolving %s: %w", ErrMismatch, h, err)
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Resolver) ttl() time.Duration {
	if r.TTL == 0 {
		return DefaultResolveTTL
	}
	return r.TTL
}

func (r *Resolver) cached(h Handle) (*Resolved, bool) {
	if r.ttl() < 0 {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[h]
	if !ok {
		return nil, false
	}
	if !r.now().Before(e.expires) {
		delete(r.cache, h)
		return nil, false
	}
	res := e.res
	return &res, true
}

func (r *Resolver) store(res Resolved) {
	ttl := r.ttl()
	if ttl < 0 {
		return
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = make(map[Handle]cacheEntry)
	}
	if len(r.cache) >= maxCacheEntries {
		for h, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, h)
			}
		}
		if len(r.cache) >= maxCacheEntries {
			clear(r.cache)
		}
	}
	r.cache[res.Handle] = cacheEntry{res: res, expires: now.Add(ttl)}
}

// Forget drops h from the cache, so the next resolution asks again.
func (r *Resolver) Forget(h Handle) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.cache, h)
}
