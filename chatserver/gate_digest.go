package chatserver

import (
	"context"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// A send may carry the header Kez-Devices: the digest of the recipient
// person's current devices as the sender's copy of their chain lists them
// (docs/spec/chat.md §1). The gate compares it with the registry's list
// and refuses a send whose sender has not seen a device added or revoked
// (ErrCodeDevicesChanged), so that the sender refreshes the chain and
// seals a copy to each current device. The digest tells the sender nothing
// the person's public chain does not.

// digestTTL is how long the gate keeps a person's digest: short, because
// another chat-server may store a device meanwhile. The process that
// stores an addition or a revocation forgets the digest at once, and
// every other on a revocation notice.
const digestTTL = 2 * time.Second

// digestEntry is a person's devices digest, until when the gate trusts it.
type digestEntry struct {
	digest string
	until  time.Time
}

// devicesDigest returns wire.DevicesDigest of the current devices of the
// person with text form person, from a short-lived cache.
func (g *gate) devicesDigest(person string, now time.Time) (string, error) {
	var d string
	g.digests.with(person, now, func(e *digestEntry) {
		if now.Before(e.until) {
			d = e.digest
		}
	})
	if d != "" {
		return d, nil
	}
	epoch := g.digestEpoch.Load()
	keys := []string{person}
	if g.devices != nil {
		p, err := kez.ParsePublicKey(person)
		if err != nil {
			return "", errNotAKey
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ds, err := g.devices(ctx, p)
		if err != nil {
			return "", err
		}
		keys = keys[:0]
		for _, k := range ds {
			keys = append(keys, k.String())
		}
	}
	d = wire.DevicesDigest(keys)
	// A device stored (or a revocation noticed) while the registry was
	// asked may be missing from this answer: it is used once, not kept.
	if g.digestEpoch.Load() == epoch {
		g.digests.with(person, now, func(e *digestEntry) { *e = digestEntry{digest: d, until: now.Add(digestTTL)} })
	}
	return d, nil
}

// forgetDigests drops the cached digest of person, or of every person
// when person is "" (a revocation notice names only the device).
func (g *gate) forgetDigests(person string) {
	if g == nil || g.digests == nil {
		return
	}
	g.digestEpoch.Add(1)
	if person == "" {
		g.digests.clear()
		return
	}
	g.digests.peek(person, func(e *digestEntry) { *e = digestEntry{} })
}
