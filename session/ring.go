package session

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// The rotation policy of a [Ring] unless its fields say otherwise.
const (
	// DefaultPrekeyLifetime is how long a new prekey's record is valid.
	DefaultPrekeyLifetime = 14 * 24 * time.Hour
	// DefaultPrekeyRotation is how old the newest prekey may get before
	// the ring makes the next one.
	DefaultPrekeyRotation = 7 * 24 * time.Hour
	// DefaultPrekeyGrace is how long a private prekey is kept after its
	// record expired, for handshakes queued before their sender saw the
	// next record.
	DefaultPrekeyGrace = 7 * 24 * time.Hour
)

// Ring is a device's set of private prekeys and the policy that rotates
// them: a new prekey once the newest is Rotation old, valid for
// Lifetime; each private key kept until its record's Expires + Grace,
// then deleted, so that whoever later takes the device cannot open the
// handshakes made to it. Ring does no input or output and reads no clock:
// the caller loads the stored keys, calls [Ring.Rotate] with the time
// (at start and then from time to time, see [Ring.NextRotation]), stores
// what it made, deletes what it dropped and publishes [Ring.Current].
//
// The zero value is an empty ring with the default policy. A Ring is safe
// for concurrent use; it must not be copied once used.
type Ring struct {
	// Lifetime, Rotation and Grace are the policy; zero means
	// [DefaultPrekeyLifetime], [DefaultPrekeyRotation],
	// [DefaultPrekeyGrace]. Rotation must be shorter than Lifetime.
	Lifetime, Rotation, Grace time.Duration

	mu    sync.Mutex
	keys  []*PrekeyPrivate // by Created, then ID
	owner kez.PublicKey
	now   time.Time // of the last Rotate; zero before
}

// ErrRingOwner reports a prekey, or an identity given to [Ring.Rotate],
// of another key than the prekeys already in the ring.
var ErrRingOwner = errors.New("session: prekey of another identity in the ring")

func (r *Ring) policy() (lifetime, rotation, grace time.Duration, err error) {
	lifetime, rotation, grace = r.Lifetime, r.Rotation, r.Grace
	if lifetime == 0 {
		lifetime = DefaultPrekeyLifetime
	}
	if rotation == 0 {
		rotation = DefaultPrekeyRotation
	}
	if grace == 0 {
		grace = DefaultPrekeyGrace
	}
	if lifetime < 0 || rotation < 0 || grace < 0 || rotation >= lifetime {
		return 0, 0, 0, fmt.Errorf("session: prekey ring policy: lifetime %v, rotation %v, grace %v: want positive durations and a rotation shorter than the lifetime", lifetime, rotation, grace)
	}
	return lifetime, rotation, grace, nil
}

// Load adds stored prekeys to the ring (e.g. those read from chat.db at
// start). It refuses, changing nothing, a nil key, two keys with one ID,
// and keys of another owner than those in the ring ([ErrRingOwner]).
func (r *Ring) Load(keys ...*PrekeyPrivate) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	owner, seen := r.owner, map[uint32]bool{}
	for _, k := range r.keys {
		seen[k.Public.ID] = true
	}
	for _, k := range keys {
		if k == nil || k.kem == nil || k.ratchet == nil {
			return errors.New("session: loading an empty prekey into the ring")
		}
		if owner.IsZero() {
			owner = k.Public.Owner
		}
		if k.Public.Owner != owner {
			return fmt.Errorf("%w: prekey %d is of %s, the ring's of %s", ErrRingOwner, k.Public.ID, k.Public.Owner, owner)
		}
		if seen[k.Public.ID] {
			return fmt.Errorf("session: two prekeys with ID %d in the ring", k.Public.ID)
		}
		seen[k.Public.ID] = true
	}
	r.owner = owner
	r.keys = append(r.keys, keys...)
	r.sort()
	return nil
}

func (r *Ring) sort() {
	slices.SortFunc(r.keys, func(a, b *PrekeyPrivate) int {
		if c := a.Public.Created.Compare(b.Public.Created); c != 0 {
			return c
		}
		return cmp.Compare(a.Public.ID, b.Public.ID)
	})
}

// Current returns the prekey to publish: the newest one (by creation
// time, then ID), leaving out, once [Ring.Rotate] has run, keys dated
// more than [PrekeyClockSkew] after the time it was given (made while
// the clock was ahead: no one could verify them yet). It returns nil
// for an empty ring.
func (r *Ring) Current() *PrekeyPrivate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.current()
}

func (r *Ring) current() *PrekeyPrivate {
	for i := len(r.keys) - 1; i >= 0; i-- {
		if k := r.keys[i]; r.now.IsZero() || !k.Public.Created.After(r.now.Add(PrekeyClockSkew)) {
			return k
		}
	}
	return nil
}

// Lookup returns the prekey with this ID, for opening a handshake made
// to it, whether its record expired or not: the ring holds only keys
// within their grace period once Rotate ran.
func (r *Ring) Lookup(id uint32) (*PrekeyPrivate, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range r.keys {
		if k.Public.ID == id {
			return k, true
		}
	}
	return nil, false
}

// Keys returns the prekeys in the ring, oldest first.
func (r *Ring) Keys() []*PrekeyPrivate {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.keys)
}

// Rotate applies the policy at now. It drops every key whose record
// expired Grace or longer ago (now ≥ Expires + Grace) and returns their
// IDs in deleted, and makes a new prekey for id (with 4 bytes of rnd, nil
// meaning crypto/rand, for a random ID that no key in the ring has, then
// [NewPrekey]'s 64) when
// there is no current key, or the current one is Rotation old or
// expired; the caller stores created, deletes the deleted keys from its
// storage and publishes created. Keys dated in the future are kept until
// they too expire. On an error nothing changes.
func (r *Ring) Rotate(rnd io.Reader, id *kez.Identity, now time.Time) (created *PrekeyPrivate, deleted []uint32, err error) {
	lifetime, rotation, grace, err := r.policy()
	if err != nil {
		return nil, nil, err
	}
	if id == nil {
		return nil, nil, errors.New("session: rotating prekeys needs an identity")
	}
	if rnd == nil {
		rnd = rand.Reader
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.owner.IsZero() && r.owner != id.PublicKey() {
		return nil, nil, fmt.Errorf("%w: rotating %s's prekeys with %s's identity", ErrRingOwner, r.owner, id.PublicKey())
	}
	keep := make([]*PrekeyPrivate, 0, len(r.keys)+1)
	for _, k := range r.keys {
		if now.Before(k.Public.Expires.Add(grace)) {
			keep = append(keep, k)
		} else {
			deleted = append(deleted, k.Public.ID)
		}
	}
	prev := r.now
	r.now = now // for current(), undone on an error
	cur := (&Ring{keys: keep, now: now}).current()
	if cur == nil || !now.Before(cur.Public.Created.Add(rotation)) || !now.Before(cur.Public.Expires) {
		prekeyID, err := newID(rnd, keep)
		if err == nil {
			created, err = NewPrekey(rnd, id, prekeyID, now, lifetime)
		}
		if err != nil {
			r.now = prev
			return nil, nil, err
		}
		keep = append(keep, created)
	}
	r.keys, r.owner = keep, id.PublicKey()
	r.sort()
	return created, deleted, nil
}

// newID draws a random nonzero prekey ID that no key in keys has, so
// that a device whose storage was wiped does not reuse the IDs peers may
// still send handshakes to.
func newID(rnd io.Reader, keys []*PrekeyPrivate) (uint32, error) {
	for {
		var b [4]byte
		if _, err := io.ReadFull(rnd, b[:]); err != nil {
			return 0, fmt.Errorf("session: reading randomness for a prekey ID: %w", err)
		}
		id := binary.BigEndian.Uint32(b[:])
		if id != 0 && !slices.ContainsFunc(keys, func(k *PrekeyPrivate) bool { return k.Public.ID == id }) {
			return id, nil
		}
	}
}

// NextRotation returns when [Ring.Rotate] next has something to do (the
// current key reaches Rotation or expires, or a key reaches the end of
// its grace period), or the zero time for an empty ring, where Rotate
// has something to do at once.
func (r *Ring) NextRotation() time.Time {
	_, rotation, grace, err := r.policy()
	if err != nil {
		return time.Time{}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.current()
	if cur == nil {
		return time.Time{}
	}
	next := cur.Public.Created.Add(rotation)
	if cur.Public.Expires.Before(next) {
		next = cur.Public.Expires
	}
	for _, k := range r.keys {
		if end := k.Public.Expires.Add(grace); end.Before(next) {
			next = end
		}
	}
	return next
}
