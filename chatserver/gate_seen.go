package chatserver

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go/jetstream"
)

// When a person's devices were last seen (docs/spec/chat.md §1, the
// Kez-Devices header). A device asks through its own consumer request,
// which only it may make, so the gate answers about the person the
// registry says the asking key belongs to, and about no one else: a key
// that is no one's device learns of itself alone, a revoked device is
// refused before this.
//
// A device is seen when it pulls from its inbox or asks for its
// consumer. The gate takes the latest of what JetStream tells of the
// device's consumer (its last delivery and last acknowledgement, and a
// pull waiting on it now, which every chat-server replica sees) and the
// last pull or consumer request this process forwarded for it. Neither
// survives a restart of both: then a device is not seen until it pulls.
//
// The look-ups cost: one consumer-info call per device, at most
// sigchain.MaxDevices. They are charged to the asking device's pull and
// consumer-request bucket (one token each, on top of the request's own),
// and their answer is kept for seenTTL per person, so that a flood of
// such requests costs JetStream at most one round of look-ups per person
// per seenTTL.

// seenTTL is how long the gate reuses the consumer information it looked
// up for a person's devices.
const seenTTL = 10 * time.Second

// errSeenQuota: the asking device's bucket cannot pay for the look-ups.
var errSeenQuota = errors.New("over the consumer request rate")

// seenEntry is what the gate looked up of one person's devices.
type seenEntry struct {
	devices []kez.PublicKey
	last    []time.Time // by device, from its consumer's information; zero: nothing known
	until   time.Time
}

// devicesSeen returns when each current device of key's person was last
// seen: the key itself (now) when it is no one's device.
func (g *gate) devicesSeen(ctx context.Context, key kez.PublicKey, now time.Time) ([]wire.DeviceSeen, error) {
	e, err := g.lookup(key.String(), now)
	if err != nil {
		return nil, err
	}
	person := key
	if e.state == keyRegistered {
		if p, err := kez.ParsePublicKey(e.person); err == nil {
			person = p
		}
	}
	var cached seenEntry
	g.seen.peek(person.String(), func(s *seenEntry) {
		if now.Before(s.until) {
			cached = *s
		}
	})
	if cached.until.IsZero() {
		if cached, err = g.lookUpSeen(ctx, key, person, now); err != nil {
			return nil, err
		}
		g.seen.with(person.String(), now, func(s *seenEntry) { *s = cached })
	}
	out := make([]wire.DeviceSeen, 0, len(cached.devices))
	for i, d := range cached.devices {
		revoked := false
		g.known.peek(d.String(), func(k *knownEntry) { revoked = k.state == keyRevoked && now.Before(k.until) })
		if revoked {
			continue // since the look-up
		}
		last := cached.last[i]
		g.users.peek(d.String(), func(b *userBuckets) {
			if b.pulledAt.After(last) {
				last = b.pulledAt
			}
		})
		if d == key {
			last = now // it is asking
		}
		ds := wire.DeviceSeen{Key: d.String()}
		if !last.IsZero() {
			ds.LastActive = last.Unix()
		}
		out = append(out, ds)
	}
	return out, nil
}

// lookUpSeen lists person's current devices (the person alone when it is
// key itself and the registry lists none) and looks up each device's
// consumer, charging key's bucket one token per look-up.
func (g *gate) lookUpSeen(ctx context.Context, key, person kez.PublicKey, now time.Time) (seenEntry, error) {
	devices := []kez.PublicKey{person}
	if g.devices != nil {
		ds, err := g.devices(ctx, person)
		if err != nil {
			return seenEntry{}, err
		}
		devices = ds
	}
	if person != key && !slices.Contains(devices, key) {
		// The registry answered the two look-ups differently (a device
		// revoked between them): tell nothing.
		devices = []kez.PublicKey{key}
	}
	devices = devices[:min(len(devices), sigchain.MaxDevices)]
	allowed := true
	g.users.with(key.String(), now, func(b *userBuckets) {
		allowed = b.api.take(now, g.lim.APIRate, g.lim.APIBurst, float64(len(devices)))
	})
	if !allowed {
		return seenEntry{}, errSeenQuota
	}
	s := seenEntry{devices: devices, last: make([]time.Time, len(devices)), until: now.Add(seenTTL)}
	for i, d := range devices {
		c, err := g.js.Consumer(ctx, g.stream, callout.ConsumerName(d))
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
			continue // nothing was ever sent to it, and it never asked
		case err != nil:
			return seenEntry{}, err
		}
		s.last[i] = consumerSeen(c.CachedInfo())
	}
	return s, nil
}

// consumerSeen is when JetStream last saw the consumer's device: its last
// delivery or acknowledgement, or now if a pull is waiting on it.
func consumerSeen(info *jetstream.ConsumerInfo) time.Time {
	var last time.Time
	if info.NumWaiting > 0 {
		last = info.TimeStamp
	}
	for _, t := range []*time.Time{info.Delivered.Last, info.AckFloor.Last} {
		if t != nil && t.After(last) {
			last = *t
		}
	}
	return last
}
