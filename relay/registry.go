package relay

import (
	"container/list"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// registryACL lets only keys a KEZ chat-server knows reserve a slot: it
// asks GET /v1/devices/{key}, which answers for a person's own key and
// for each current device's. Answers are cached (a known key for the
// cache TTL, an unknown one for a tenth of it) in a bounded table; a
// registry that cannot answer means no, and is not cached. Connecting
// through a reservation is allowed to anyone.
type registryACL struct {
	client *handles.Client
	ttl    time.Duration
	now    func() time.Time
	perIP  *ratelimit.Limiter
	m      *metrics
	log    *slog.Logger

	mu    sync.Mutex
	size  int
	cache map[kez.PublicKey]*list.Element // of *answer
	lru   list.List                       // front: most recently used
}

// answer is a cached answer of the registry about key.
type answer struct {
	key     kez.PublicKey
	allowed bool
	until   time.Time
}

func newRegistryACL(cfg Config, m *metrics) *registryACL {
	hc := cfg.RegistryClient
	if hc == nil {
		hc = &http.Client{Timeout: RegistryTimeout}
	}
	return &registryACL{
		client: &handles.Client{BaseURL: cfg.Registry, HTTPClient: hc},
		ttl:    cfg.RegistryCacheTTL,
		now:    cfg.Clock,
		perIP:  ratelimit.New(cfg.RegistryLookupsPerIP, ratelimit.Options{Endpoint: "relay_registry", Reason: "ip", Now: cfg.Clock}),
		m:      m,
		log:    cfg.Logger,
		size:   cfg.RegistryCacheSize,
		cache:  map[kez.PublicKey]*list.Element{},
	}
}

// AllowReserve asks the registry (or the cache) whether p's key is known.
func (a *registryACL) AllowReserve(p peer.ID, addr ma.Multiaddr) bool {
	key, err := kez.PublicKeyFromPeerID(p)
	if err != nil {
		return a.refuse(ReasonNotRegistered)
	}
	if allowed, ok := a.cached(key); ok {
		if !allowed {
			return a.refuse(ReasonNotRegistered)
		}
		return true
	}
	if ok, _ := a.perIP.Allow(ipKey(addr)); !ok {
		return a.refuse(ReasonRegistryRate)
	}
	ctx, cancel := context.WithTimeout(context.Background(), RegistryTimeout)
	defer cancel()
	info, err := a.client.LookupDevice(ctx, key)
	switch {
	case err == nil && !info.Revoked:
		a.store(key, true, a.ttl)
		return true
	case err == nil, errors.Is(err, handles.ErrNotFound), errors.Is(err, handles.ErrSuspended):
		a.store(key, false, a.ttl/10)
		return a.refuse(ReasonNotRegistered)
	}
	a.log.Warn("the registry did not answer; reservation refused", "key", key.String(), "err", err)
	return a.refuse(ReasonRegistryUnreachable)
}

// AllowConnect allows everyone: who fetches a file through a reservation
// may be a stranger with a ticket.
func (a *registryACL) AllowConnect(peer.ID, ma.Multiaddr, peer.ID) bool { return true }

func (a *registryACL) refuse(reason string) bool {
	a.m.refused.WithLabelValues(reason).Inc()
	return false
}

// cached returns the cached answer about key, if one is fresh.
func (a *registryACL) cached(key kez.PublicKey) (allowed, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.cache[key]
	if !ok {
		return false, false
	}
	ans := e.Value.(*answer)
	if !a.now().Before(ans.until) {
		a.lru.Remove(e)
		delete(a.cache, key)
		return false, false
	}
	a.lru.MoveToFront(e)
	return ans.allowed, true
}

// store caches an answer for ttl, forgetting the least recently used
// beyond the table's size.
func (a *registryACL) store(key kez.PublicKey, allowed bool, ttl time.Duration) {
	if a.size <= 0 || ttl <= 0 {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ans := &answer{key: key, allowed: allowed, until: a.now().Add(ttl)}
	if e, ok := a.cache[key]; ok {
		e.Value = ans
		a.lru.MoveToFront(e)
		return
	}
	a.cache[key] = a.lru.PushFront(ans)
	for a.lru.Len() > a.size {
		old := a.lru.Back()
		a.lru.Remove(old)
		delete(a.cache, old.Value.(*answer).key)
	}
}
