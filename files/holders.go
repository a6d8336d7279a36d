package files

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/nats-io/nats.go"
)

// Holders (docs/spec/signalling.md §6): people who fetched a public file
// and re-serve it ([Config.Reshare]) tell the owner's serving device, which
// keeps their signed haves and hands them to fetchers, who then fetch from
// several peers at once ([WithSources]).

// Limits of what a node remembers of the blobs it sent whole.
const (
	// maxServedPairs bounds the (peer, CID) pairs a node remembers.
	maxServedPairs = 4096
	// servedLife is how long a node remembers that it sent a peer the last
	// chunk of a blob.
	servedLife = 24 * time.Hour
)

// servedSet remembers the (peer, CID) pairs a node sent the last chunk of
// a blob to, for at most servedLife and maxServedPairs (the oldest go
// first). The zero value is ready; it is safe for concurrent use.
type servedSet struct {
	mu    sync.Mutex
	at    map[servedPair]time.Time
	order []servedPair // oldest first; may hold pairs seen again later
}

type servedPair struct {
	p peer.ID
	c string // the CID's bytes
}

func (s *servedSet) add(p peer.ID, c cid.Cid, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[servedPair]time.Time{}
	}
	k := servedPair{p, c.KeyString()}
	if _, ok := s.at[k]; ok {
		s.at[k] = now
		return
	}
	for len(s.at) >= maxServedPairs && len(s.order) > 0 {
		delete(s.at, s.order[0])
		s.order = s.order[1:]
	}
	s.at[k] = now
	s.order = append(s.order, k)
}

// has reports whether p was sent the last chunk of c within servedLife.
func (s *servedSet) has(p peer.ID, c cid.Cid, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.at[servedPair{p, c.KeyString()}]
	return ok && now.Sub(at) < servedLife && now.Sub(at) > -signal.MaxSignalSkew
}

// HolderLimits bound what a serving device keeps of the haves re-sharers
// send it (docs/spec/signalling.md §6). The zero value means the
// defaults.
type HolderLimits struct {
	// PerBlob is how many holders are kept per blob, the newest; 0 means
	// 8, the most an answer carries.
	PerBlob int
	// Life is how long a have is kept after its time; 0 means 30 min.
	Life time.Duration
	// Blobs bounds how many blobs have holders kept at once; 0 means
	// 1024. A have for one more blob is dropped.
	Blobs int
}

func (l HolderLimits) withDefaults() HolderLimits {
	if l.PerBlob <= 0 || l.PerBlob > signal.MaxHolders {
		l.PerBlob = signal.MaxHolders
	}
	if l.Life <= 0 {
		l.Life = signal.HaveLife
	}
	if l.Blobs <= 0 {
		l.Blobs = 1024
	}
	return l
}

// HolderStats count what a serving device did with the haves it was sent
// and the holders requests it answered.
type HolderStats struct {
	Kept       int64 // haves kept (a new holder, or a newer have of one)
	Invalid    int64 // dropped: malformed, for another device, stale or future, bad signature
	NotPublic  int64 // dropped: not the CID of a public file this device serves
	NotFetched int64 // dropped: this node did not send the holder the blob's last chunk in the last 24 h
	Replayed   int64 // dropped: not newer than the have kept from that holder
	Full       int64 // dropped: the blob limit is reached
	Evicted    int64 // kept haves pushed out by newer ones (the per-blob limit)
	Answers    int64 // holders requests answered
}

// holderTable is the haves a serving device keeps, per blob.
type holderTable struct {
	lim HolderLimits

	mu    sync.Mutex
	blobs map[string][]heldHave // by the CID's bytes, newest first

	kept, invalid, notPublic, notFetched, replayed, full, evicted, answers atomic.Int64
}

type heldHave struct {
	holder kez.PublicKey
	at     time.Time
	raw    []byte
}

func (t *holderTable) stats() HolderStats {
	return HolderStats{Kept: t.kept.Load(), Invalid: t.invalid.Load(), NotPublic: t.notPublic.Load(),
		NotFetched: t.notFetched.Load(), Replayed: t.replayed.Load(), Full: t.full.Load(),
		Evicted: t.evicted.Load(), Answers: t.answers.Load()}
}

// prune drops the expired haves of blob k; t.mu is held.
func (t *holderTable) prune(k string, now time.Time) []heldHave {
	hs := slices.DeleteFunc(t.blobs[k], func(h heldHave) bool { return now.Sub(h.at) > t.lim.Life })
	if len(hs) == 0 {
		delete(t.blobs, k)
		return nil
	}
	t.blobs[k] = hs
	return hs
}

// keep adds a verified have that passed the owner's checks, unless the
// holder's kept one is as new or the limits say no.
func (t *holderTable) keep(h *signal.Have, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.blobs == nil {
		t.blobs = map[string][]heldHave{}
	}
	k := h.CID.KeyString()
	hs := t.prune(k, now)
	if hs == nil && len(t.blobs) >= t.lim.Blobs {
		for k2 := range t.blobs { // drop the expired before refusing
			t.prune(k2, now)
		}
		if len(t.blobs) >= t.lim.Blobs {
			t.full.Add(1)
			return
		}
	}
	if i := slices.IndexFunc(hs, func(x heldHave) bool { return x.holder == h.Holder }); i >= 0 {
		if !h.Time.After(hs[i].at) {
			t.replayed.Add(1)
			return
		}
		hs = slices.Delete(hs, i, i+1)
	} else if len(hs) >= t.lim.PerBlob {
		if !h.Time.After(hs[len(hs)-1].at) {
			t.evicted.Add(1) // the new one is the oldest: it goes at once
			return
		}
		hs = hs[:len(hs)-1]
		t.evicted.Add(1)
	}
	hs = append(hs, heldHave{holder: h.Holder, at: h.Time, raw: h.Bytes()})
	slices.SortStableFunc(hs, func(a, b heldHave) int { return b.at.Compare(a.at) })
	t.blobs[k] = hs
	t.kept.Add(1)
}

// list returns the live haves of blob c, newest first.
func (t *holderTable) list(c cid.Cid, now time.Time) [][]byte {
	t.answers.Add(1)
	t.mu.Lock()
	defer t.mu.Unlock()
	var out [][]byte
	for _, h := range t.prune(c.KeyString(), now) {
		out = append(out, h.raw)
	}
	return out
}

// holds reports whether a live have of holder for blob c is kept: the
// holder proved once that it fetched the blob (onHave).
func (t *holderTable) holds(holder kez.PublicKey, c cid.Cid, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.ContainsFunc(t.prune(c.KeyString(), now), func(x heldHave) bool { return x.holder == holder })
}

// onHave is the serving device's handler of the haves sent to it: it
// keeps one only if it verified (signal did that), names a public file
// this device serves, and this node sent the holder the last chunk of the
// blob within the last day, or a have of that holder for the blob is
// kept already (a refresh: the holder proved itself once, and the served
// pairs, which strangers can push out, are not asked again).
func (s *Sharing) onHave(h *signal.Have, err error) {
	t := &s.holders
	if err != nil {
		t.invalid.Add(1)
		s.log.Debug("files: dropping a have", "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(s.done, 10*time.Second)
	defer cancel()
	public, err := s.idx.isPublic(ctx, h.CID)
	if err != nil {
		s.log.Error("files: reading the share index", "err", err)
		return
	}
	if !public {
		t.notPublic.Add(1)
		s.log.Debug("files: dropping a have for a blob that is not a public file of this device", "holder", h.Holder, "cid", h.CID)
		return
	}
	s.mu.Lock()
	node := s.node
	s.mu.Unlock()
	now := s.now()
	if !t.holds(h.Holder, h.CID, now) && (node == nil || !node.served.has(h.Holder.PeerID(), h.CID, now)) {
		t.notFetched.Add(1)
		s.log.Debug("files: dropping a have from a key this node did not send the blob to", "holder", h.Holder, "cid", h.CID)
		return
	}
	t.keep(h, now)
}

// askHolders asks the owner's serving device dev for the holders of blob
// c and returns them as fetch sources: the records that verified, each
// dialled by its holder key's PeerID. A failure gives none: holders are
// an extra.
func (s *Sharing) askHolders(ctx context.Context, nc *nats.Conn, dev kez.PublicKey, c cid.Cid, ownerAddrs []ma.Multiaddr) []peer.AddrInfo {
	hs, err := signal.AskHolders(ctx, nc, s.devKey, dev, c, signal.HoldersOptions{Timeout: s.cfg.HoldersTimeout, Now: s.now})
	if err != nil {
		s.log.Debug("files: asking for the holders of a blob", "cid", c, "err", err)
		return nil
	}
	out := make([]peer.AddrInfo, 0, len(hs))
	for _, h := range hs {
		if as := holderAddrs(h.Addrs, ownerAddrs); len(as) > 0 {
			out = append(out, peer.AddrInfo{ID: h.Holder.PeerID(), Addrs: as})
		}
	}
	return out
}

// maxHolderAddrs bounds the addresses of one holder a fetcher dials.
const maxHolderAddrs = 4

// Address scopes of holderAddrs.
const (
	scopeOther = iota // a name to resolve, a unix socket…: never dialled
	scopePublic
	scopePrivate
	scopeLoopback
)

// addrScope is the scope of a's IP (a circuit address's: its relay's).
func addrScope(a ma.Multiaddr) int {
	if len(a) == 0 || (a[0].Code() != ma.P_IP4 && a[0].Code() != ma.P_IP6) {
		return scopeOther
	}
	switch {
	case manet.IsIPLoopback(a):
		return scopeLoopback
	case manet.IsPrivateAddr(a):
		return scopePrivate
	case manet.IsPublicAddr(a):
		return scopePublic
	}
	return scopeOther
}

// holderAddrs keeps the addresses of a holder's have record that a
// fetcher dials. A holder is a stranger the fetcher did not choose (the
// owner names whoever fetched the file from it), so its addresses are
// kept only if they are IP addresses (no name to resolve) of the public
// internet, or of a private or loopback range the owner's own answer
// used too (a LAN or one machine, where holders are on it as well); at
// most maxHolderAddrs, so that a holder cannot point the fetcher's dials
// at its network or at a third party in bulk.
func holderAddrs(as, owner []ma.Multiaddr) []ma.Multiaddr {
	ok := map[int]bool{scopePublic: true}
	for _, a := range owner {
		if sc := addrScope(a); sc == scopePrivate || sc == scopeLoopback {
			ok[sc] = true
		}
	}
	var out []ma.Multiaddr
	for _, a := range as {
		if len(out) == maxHolderAddrs {
			break
		}
		if sc := addrScope(a); sc != scopeOther && ok[sc] && !ma.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}
