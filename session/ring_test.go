package session_test

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

const day = 24 * time.Hour

// ringIDs returns the IDs of the ring's keys, oldest first.
func ringIDs(r *session.Ring) []uint32 {
	var ids []uint32
	for _, k := range r.Keys() {
		ids = append(ids, k.Public.ID)
	}
	return ids
}

// rotate calls Rotate and fails the test on an error.
func rotate(t *testing.T, r *session.Ring, now time.Time) (*session.PrekeyPrivate, []uint32) {
	t.Helper()
	created, deleted, err := r.Rotate(prekeyRand(byte(now.Unix())), prekeyIdentity(t, 1), now)
	if err != nil {
		t.Fatal(err)
	}
	return created, deleted
}

// TestRingBoundaries walks one prekey's life across each boundary of the
// default policy with a fake clock.
func TestRingBoundaries(t *testing.T) {
	var r session.Ring
	t0 := prekeyEpoch
	ms := time.Millisecond
	if r.Current() != nil || !r.NextRotation().IsZero() {
		t.Fatal("an empty ring has a current key or a next rotation")
	}

	first, deleted := rotate(t, &r, t0)
	if first == nil || deleted != nil {
		t.Fatalf("empty ring: created %v, deleted %v", first, deleted)
	}
	if r.Current() != first || !first.Public.Created.Equal(t0) || !first.Public.Expires.Equal(t0.Add(14*day)) {
		t.Fatalf("current %v, first created %v expires %v", r.Current(), first.Public.Created, first.Public.Expires)
	}
	if err := first.Public.Verify(prekeyIdentity(t, 1).PublicKey(), t0); err != nil {
		t.Fatal(err)
	}
	if k, ok := r.Lookup(first.Public.ID); !ok || k != first {
		t.Fatal("Lookup misses the new key")
	}
	if _, ok := r.Lookup(first.Public.ID + 1); ok {
		t.Fatal("Lookup finds an ID that is not there")
	}
	if got := r.NextRotation(); !got.Equal(t0.Add(7 * day)) {
		t.Fatalf("next rotation %v, want %v", got, t0.Add(7*day))
	}

	// Until the newest is 7 days old nothing happens.
	for _, now := range []time.Time{t0, t0.Add(time.Hour), t0.Add(7*day - ms)} {
		if c, d := rotate(t, &r, now); c != nil || d != nil {
			t.Fatalf("at %v: created %v, deleted %v", now.Sub(t0), c, d)
		}
	}
	// At 7 days, a second key; the first is kept.
	second, deleted := rotate(t, &r, t0.Add(7*day))
	if second == nil || deleted != nil || r.Current() != second {
		t.Fatalf("at 7 days: created %v, deleted %v", second, deleted)
	}
	if second.Public.ID == first.Public.ID {
		t.Fatal("two keys with one ID")
	}
	if !slices.Equal(ringIDs(&r), []uint32{first.Public.ID, second.Public.ID}) {
		t.Fatalf("ring %v", ringIDs(&r))
	}
	if c, _ := rotate(t, &r, t0.Add(7*day)); c != nil {
		t.Fatal("a second Rotate at the same time makes another key")
	}

	// The first expires at 14 days (and the third key is made then) but
	// stays for the 7 days of grace: deleted at exactly 21 days.
	third, deleted := rotate(t, &r, t0.Add(14*day))
	if third == nil || deleted != nil {
		t.Fatalf("at 14 days: created %v, deleted %v", third, deleted)
	}
	if _, ok := r.Lookup(first.Public.ID); !ok {
		t.Fatal("the expired key is gone before its grace period ended")
	}
	if got := r.NextRotation(); !got.Equal(t0.Add(21 * day)) {
		t.Fatalf("next rotation %v, want the end of the first key's grace %v", got, t0.Add(21*day))
	}
	if c, d := rotate(t, &r, t0.Add(21*day-ms)); c != nil || d != nil {
		t.Fatalf("just before the grace ends: created %v, deleted %v", c, d)
	}
	// At 21 days the third key is 7 days old too: a fourth is due.
	fourth, deleted := rotate(t, &r, t0.Add(21*day))
	if fourth == nil {
		t.Fatal("at 21 days the third key is 7 days old and no fourth was made")
	}
	if !slices.Equal(deleted, []uint32{first.Public.ID}) {
		t.Fatalf("at 21 days deleted %v, want [%d]", deleted, first.Public.ID)
	}
	if _, ok := r.Lookup(first.Public.ID); ok {
		t.Fatal("the first key is still there after its grace period")
	}
	if _, ok := r.Lookup(second.Public.ID); !ok {
		t.Fatal("the second key went with the first")
	}
}

// TestRingOverTime runs the default policy for 120 days in steps of an
// hour, as a client that rotates hourly would.
func TestRingOverTime(t *testing.T) {
	var r session.Ring
	owner := prekeyIdentity(t, 1).PublicKey()
	alive := map[uint32]*session.Prekey{}
	for now := prekeyEpoch; now.Before(prekeyEpoch.Add(120 * day)); now = now.Add(time.Hour) {
		created, deleted := rotate(t, &r, now)
		if created != nil {
			alive[created.Public.ID] = &created.Public
		}
		for _, id := range deleted {
			p := alive[id]
			if p == nil {
				t.Fatalf("deleted unknown key %d", id)
			}
			if now.Before(p.Expires.Add(7 * day)) {
				t.Fatalf("key %d deleted at %v, before its grace ended (%v)", id, now, p.Expires.Add(7*day))
			}
			if now.After(p.Expires.Add(7*day + time.Hour)) {
				t.Fatalf("key %d kept until %v, past its grace (%v)", id, now, p.Expires.Add(7*day))
			}
			delete(alive, id)
		}
		if err := r.Current().Public.Verify(owner, now); err != nil {
			t.Fatalf("at %v the current key does not verify: %v", now.Sub(prekeyEpoch), err)
		}
		if age := now.Sub(r.Current().Public.Created); age >= 7*day {
			t.Fatalf("at %v the current key is %v old", now.Sub(prekeyEpoch), age)
		}
		if n := len(r.Keys()); n != len(alive) || n > 4 {
			t.Fatalf("at %v the ring holds %d keys (%d expected, at most 4)", now.Sub(prekeyEpoch), n, len(alive))
		}
		for id := range alive {
			if _, ok := r.Lookup(id); !ok {
				t.Fatalf("key %d missing", id)
			}
		}
	}
}

// TestRingOffline: a device off for longer than a key's life and grace
// finds every key dead, deletes them all and makes a new one.
func TestRingOffline(t *testing.T) {
	var r session.Ring
	first, _ := rotate(t, &r, prekeyEpoch)
	created, deleted := rotate(t, &r, prekeyEpoch.Add(60*day))
	if created == nil || !slices.Equal(deleted, []uint32{first.Public.ID}) || r.Current() != created || len(r.Keys()) != 1 {
		t.Fatalf("created %v, deleted %v, ring %v", created, deleted, ringIDs(&r))
	}
}

// TestRingLoadAndRestart: keys stored and loaded into a new ring (a
// restart) are rotated as if the ring had not stopped.
func TestRingLoadAndRestart(t *testing.T) {
	var r session.Ring
	a, _ := rotate(t, &r, prekeyEpoch)
	b, _ := rotate(t, &r, prekeyEpoch.Add(7*day))
	var stored [][]byte
	for _, k := range r.Keys() {
		raw, err := k.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, raw)
	}
	var again session.Ring
	for _, raw := range slices.Backward(stored) { // order does not matter
		k, err := session.ParsePrekeyPrivate(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := again.Load(k); err != nil {
			t.Fatal(err)
		}
	}
	if again.Current().Public.ID != b.Public.ID {
		t.Fatal("after a restart the current key is not the newest")
	}
	if c, d := rotate(t, &again, prekeyEpoch.Add(8*day)); c != nil || d != nil {
		t.Fatalf("after a restart: created %v, deleted %v", c, d)
	}
	if _, d := rotate(t, &again, prekeyEpoch.Add(21*day)); !slices.Equal(d, []uint32{a.Public.ID}) {
		t.Fatalf("deleted %v, want [%d]", d, a.Public.ID)
	}
}

func TestRingRefuses(t *testing.T) {
	alice, mallory := prekeyIdentity(t, 1), prekeyIdentity(t, 2)
	k1 := newTestPrekey(t, alice, 1, prekeyEpoch, day)
	k1again := newTestPrekey(t, alice, 1, prekeyEpoch.Add(time.Hour), day)
	m := newTestPrekey(t, mallory, 2, prekeyEpoch, day)

	var r session.Ring
	if err := r.Load(k1, k1again); err == nil {
		t.Error("two keys with one ID load")
	}
	if err := r.Load(k1, m); !errors.Is(err, session.ErrRingOwner) {
		t.Errorf("keys of two owners: %v", err)
	}
	if len(r.Keys()) != 0 {
		t.Fatal("a refused Load changed the ring")
	}
	if err := r.Load(nil); err == nil {
		t.Error("a nil key loads")
	}
	if err := r.Load(&session.PrekeyPrivate{}); err == nil {
		t.Error("a key without private keys loads")
	}
	if err := r.Load(k1); err != nil {
		t.Fatal(err)
	}
	if err := r.Load(k1again); err == nil {
		t.Error("a second load of ID 1 works")
	}
	if err := r.Load(m); !errors.Is(err, session.ErrRingOwner) {
		t.Errorf("another owner's key after the first load: %v", err)
	}
	if _, _, err := r.Rotate(prekeyRand(1), mallory, prekeyEpoch.Add(30*day)); !errors.Is(err, session.ErrRingOwner) {
		t.Errorf("rotating with another identity: %v", err)
	}
	if _, _, err := r.Rotate(prekeyRand(1), nil, prekeyEpoch); err == nil {
		t.Error("rotating without an identity works")
	}

	// A random source that fails changes nothing, not even deletions.
	for _, n := range []int{0, 3, 4, 67} { // inside the ID, inside the seeds
		_, _, err := r.Rotate(&failingReader{r: prekeyRand(1), n: n}, alice, prekeyEpoch.Add(30*day))
		if err == nil {
			t.Errorf("randomness failing after %d bytes: no error", n)
		}
		if !slices.Equal(ringIDs(&r), []uint32{1}) {
			t.Fatalf("a failed Rotate changed the ring: %v", ringIDs(&r))
		}
	}

	for _, p := range []*session.Ring{
		{Rotation: 14 * day},               // not shorter than the default lifetime
		{Lifetime: day, Rotation: 2 * day}, // longer than the lifetime
		{Grace: -time.Hour},
	} {
		if _, _, err := p.Rotate(prekeyRand(1), alice, prekeyEpoch); err == nil {
			t.Errorf("policy %v/%v/%v: no error", p.Lifetime, p.Rotation, p.Grace)
		}
	}
}

// failingReader returns n bytes of r, then an error.
type failingReader struct {
	r io.Reader
	n int
}

func (f *failingReader) Read(b []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("randomness ran out")
	}
	b = b[:min(len(b), f.n)]
	n, err := f.r.Read(b)
	f.n -= n
	return n, err
}

// TestRingClockAhead: a key made while the clock was a year ahead is not
// published once the clock is right again; a new one is made and is
// current, and the future key stays until it too has expired.
func TestRingClockAhead(t *testing.T) {
	var r session.Ring
	future, _ := rotate(t, &r, prekeyEpoch.Add(365*day))
	now := prekeyEpoch
	c, deleted := rotate(t, &r, now)
	if c == nil || deleted != nil || r.Current() != c {
		t.Fatalf("created %v, deleted %v, current %v", c, deleted, r.Current())
	}
	if _, ok := r.Lookup(future.Public.ID); !ok {
		t.Fatal("the future key was dropped")
	}
	if next := r.NextRotation(); !next.Equal(now.Add(7 * day)) {
		t.Fatalf("next rotation %v", next)
	}
	// A key dated within the clock skew is current as usual.
	var s session.Ring
	ahead, _ := rotate(t, &s, prekeyEpoch.Add(session.PrekeyClockSkew))
	if c, _ := rotate(t, &s, prekeyEpoch); c != nil || s.Current() != ahead {
		t.Fatalf("a key 5 minutes ahead was replaced by %v", c)
	}
}

func ExampleRing() {
	id, _, _ := kez.NewIdentity()
	var ring session.Ring // default policy: 14-day keys, a new one weekly, 7 days of grace
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for d := range 22 {
		now := start.Add(time.Duration(d) * 24 * time.Hour)
		created, deleted, err := ring.Rotate(nil, id, now)
		if err != nil {
			panic(err)
		}
		if created != nil || deleted != nil {
			// store created and publish it; delete the deleted keys' rows
			fmt.Printf("day %d: new prekey %t, %d deleted, %d kept\n", d, created != nil, len(deleted), len(ring.Keys()))
		}
	}
	// Output:
	// day 0: new prekey true, 0 deleted, 1 kept
	// day 7: new prekey true, 0 deleted, 2 kept
	// day 14: new prekey true, 0 deleted, 3 kept
	// day 21: new prekey true, 1 deleted, 3 kept
}
