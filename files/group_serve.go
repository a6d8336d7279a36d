package files

// Serving the blob of a share to a group (docs/spec/manifest.md §7): the
// fetching key must be a member's, or a current device of a member's
// verified chain, for a member since the share.

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// refusedRefresh is how long a key a share to a group refused is not
// looked up in the device indexes again.
const refusedRefresh = time.Minute

// maxRefusedKeys bounds the refused keys remembered.
const maxRefusedKeys = 4096

// refusedKeys remembers the keys a share to a group refused, per group,
// so that a flood of requests from unknown keys costs one device-index
// lookup per key a minute.
type refusedKeys struct {
	mu sync.Mutex
	m  map[string]time.Time
}

func (r *refusedKeys) recent(k string, now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	at, ok := r.m[k]
	return ok && !now.Before(at) && now.Sub(at) < refusedRefresh
}

func (r *refusedKeys) add(k string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil || len(r.m) >= maxRefusedKeys {
		r.m = make(map[string]time.Time)
	}
	r.m[k] = now
}

// allowsGroup reports whether peer may fetch the blob of a share to the
// group g: the group's chain (read at most once a minute) lists a current
// member since the share (or before it) whose key peer is, or one of whose
// current devices peer is. The member is found among the members' keys,
// then the chains of members already held, then through the device index
// of each member domain's sig-server (an answer names whose chain to
// read: that chain decides).
func (s *Sharing) allowsGroup(ctx context.Context, g *groupRef, peer kez.PublicKey) bool {
	st := s.groups.current(ctx, s, g)
	if st == nil {
		return false
	}
	member := func(k kez.PublicKey) (group.Member, bool) {
		m, ok := st.Member(k)
		return m, ok && m.Since <= g.seqno
	}
	if _, ok := member(peer); ok {
		return true
	}
	isDevice := func(m group.Member) bool {
		return s.chains.isDevice(ctx, s, recipient{key: m.Key, handle: m.Handle}, peer)
	}
	for _, m := range st.Members() {
		if cs := s.chains.cached(m.Key); cs != nil && m.Since <= g.seqno && cs.IsCurrentDevice(peer) && isDevice(m) {
			return true
		}
	}
	rk := g.key() + " " + peer.String()
	if s.refused.recent(rk, s.now()) {
		return false
	}
	for _, ix := range s.deviceIndexes(ctx, st, g) {
		person, _, err := ix.DevicePerson(ctx, peer)
		if err != nil {
			if !errors.Is(err, sigchain.ErrNoDevice) {
				s.log.Info("files: asking a sig-server whose device fetches a group's file", "group", g.name, "sig_server", ix.BaseURL, "err", err)
			}
			continue
		}
		if m, ok := member(person); ok && isDevice(m) {
			return true
		}
	}
	s.refused.add(rk, s.now())
	return false
}

// deviceIndexes returns the sig-servers whose device index may know a
// device of a member of st since the share of g: the group's own, and
// that of each other domain of those members (found by resolving a
// member's handle there, which the resolver caches).
func (s *Sharing) deviceIndexes(ctx context.Context, st *group.State, g *groupRef) []*sigchain.Client {
	var out []*sigchain.Client
	seen := map[string]bool{}
	add := func(domain, base string) {
		if seen[base] {
			return
		}
		seen[base] = true
		hc, err := s.resolver.ClientFor(domain, base)
		if err != nil {
			s.log.Info("files: a sig-server of a group's members", "group", g.name, "sig_server", base, "err", err)
			return
		}
		out = append(out, &sigchain.Client{BaseURL: base, HTTPClient: hc, Log: s.cfg.Client.Log})
	}
	gh, err := s.resolverRules().Parse(g.name)
	if err != nil {
		return nil
	}
	add(gh.Domain, g.sigServer)
	domains := map[string]bool{gh.Domain: true}
	for _, m := range st.Members() {
		h, err := s.resolverRules().Parse(m.Handle)
		if err != nil || m.Since > g.seqno || domains[h.Domain] {
			continue
		}
		domains[h.Domain] = true
		res, err := s.resolver.ResolveHandle(ctx, h)
		if err != nil || res.Key != m.Key {
			s.log.Info("files: the sig-server of a group member's domain", "group", g.name, "member", m.Handle, "err", err)
			continue
		}
		add(h.Domain, res.SigServer)
	}
	return out
}
