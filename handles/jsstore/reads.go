package jsstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
)

// source is where the lookup rules read the bucket: the stream leader
// (a [Store]) or the memory of a [View]. Each method returns the decoded
// value at one bucket key, its revision (0 from a view, which keeps
// none) and whether there is one; a value that does not decode is an
// error.
type source interface {
	entryValue(ctx context.Context, k string) (entry, uint64, bool, error)
	indexValue(ctx context.Context, key kez.PublicKey) (index, bool, error)
	deviceValue(ctx context.Context, key kez.PublicKey) (device, uint64, bool, error)
}

// reads are the lookup rules over a source: the one copy of them, which
// the Store and the View share.
type reads struct{ src source }

// lookupKey is [handles.Store.LookupKey]: the key's device record, then
// (for a person, or a device's person) two reads, the key's index and
// then the entry it names.
func (r reads) lookupKey(ctx context.Context, key kez.PublicKey) (handles.Record, error) {
	d, _, err := r.deviceOf(ctx, key)
	if err != nil {
		return handles.Record{}, err
	}
	if d == nil {
		return r.personRecord(ctx, key)
	}
	rec, err := r.personRecord(ctx, d.person)
	if err != nil && !(d.RevokedAt != 0 && errors.Is(err, handles.ErrNotFound)) {
		return handles.Record{}, err
	}
	rec.Key, rec.Device = d.person, key
	if d.RevokedAt != 0 {
		return handles.Record{}, &handles.DeviceRevokedError{Record: rec}
	}
	return rec, nil
}

// deviceOf reads k's device record; nil if k is no device. The revision
// is the record's, or the delete marker's (what a create must expect).
func (r reads) deviceOf(ctx context.Context, k kez.PublicKey) (*device, uint64, error) {
	d, rev, found, err := r.src.deviceValue(ctx, k)
	if err != nil || !found {
		return nil, rev, err
	}
	return &d, rev, nil
}

// personRecord is the entry held by key as a person (the handle's own key).
func (r reads) personRecord(ctx context.Context, key kez.PublicKey) (handles.Record, error) {
	ix, found, err := r.src.indexValue(ctx, key)
	if err != nil {
		return handles.Record{}, err
	}
	if !found {
		return handles.Record{}, handles.ErrNotFound
	}
	e, _, _, err := r.entryOf(ctx, ix.handle())
	if err != nil {
		return handles.Record{}, err
	}
	if e == nil || e.key != key {
		return handles.Record{}, handles.ErrNotFound // a stale index
	}
	return e.record(), nil
}

// entryOf returns h's entry, the bucket key it is at and its revision,
// or nil if there is none (or only a look-alike's). The entry is at its
// skeleton's key, or, for a twin, at its legacy key. It does not check
// the index.
func (r reads) entryOf(ctx context.Context, h handles.Handle) (*entry, string, uint64, error) {
	nk, err := nameKey(h)
	if err != nil {
		return nil, "", 0, nil // not a name any claim could have written
	}
	e, rev, err := r.entryAt(ctx, nk, h)
	if e != nil || err != nil {
		return e, nk, rev, err
	}
	return r.legacyEntry(ctx, h)
}

// legacyEntry returns h's entry at its legacy key, if that is not its
// skeleton's key and holds it.
func (r reads) legacyEntry(ctx context.Context, h handles.Handle) (*entry, string, uint64, error) {
	nk, err := nameKey(h)
	if err != nil {
		return nil, "", 0, nil
	}
	lk, err := legacyKey(h)
	if err != nil || lk == nk {
		return nil, "", 0, nil
	}
	e, rev, err := r.entryAt(ctx, lk, h)
	return e, lk, rev, err
}

// entryAt returns the entry at the bucket key k if it is h's (and not a
// released lock), else nil.
func (r reads) entryAt(ctx context.Context, k string, h handles.Handle) (*entry, uint64, error) {
	e, rev, found, err := r.src.entryValue(ctx, k)
	if err != nil || !found {
		return nil, 0, err
	}
	if e.Name != h.Name || e.Domain != h.Domain || e.Released {
		return nil, 0, nil
	}
	return &e, rev, nil
}

// entryValue implements source: a leader read of the entry at k.
func (s *Store) entryValue(ctx context.Context, k string) (entry, uint64, bool, error) {
	cur, err := s.get(ctx, k)
	if err != nil || !cur.found {
		return entry{}, cur.rev, false, err
	}
	e, err := decodeEntry(cur.value)
	if err != nil {
		return entry{}, 0, false, fmt.Errorf("jsstore: the entry %s is unreadable: %w", k, err)
	}
	return e, cur.rev, true, nil
}

// indexValue implements source: a leader read of key's index.
func (s *Store) indexValue(ctx context.Context, key kez.PublicKey) (index, bool, error) {
	ik := indexKey(key)
	cur, err := s.get(ctx, ik)
	if err != nil || !cur.found {
		return index{}, false, err
	}
	ix, err := decodeIndex(cur.value)
	if err != nil {
		return index{}, false, fmt.Errorf("jsstore: the index %s is unreadable: %w", ik, err)
	}
	return ix, true, nil
}

// deviceValue implements source: a leader read of key's device record.
func (s *Store) deviceValue(ctx context.Context, key kez.PublicKey) (device, uint64, bool, error) {
	cur, err := s.get(ctx, deviceKey(key))
	if err != nil || !cur.found {
		return device{}, cur.rev, false, err
	}
	d, err := decodeDevice(cur.value)
	if err != nil {
		return device{}, 0, false, fmt.Errorf("jsstore: the device %s is unreadable: %w", key, err)
	}
	return d, cur.rev, true, nil
}
