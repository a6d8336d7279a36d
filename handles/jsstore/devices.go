package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
)

// device is the value at device.<U…>: the key's device record. It is the
// authority on the device; the person's list (devices.<U…>) only counts.
type device struct {
	V         int    `json:"v"`
	Person    string `json:"person"`
	Name      string `json:"name"`
	Added     int64  `json:"added"`
	RevokedAt int64  `json:"revoked_at,omitempty"` // 0: current

	person kez.PublicKey
}

// personDevices is the value at devices.<U…>: a person's current devices
// (the bound on them is a compare-and-set of this value), the latest
// revoked ones, and whether the person's own key was revoked as a device.
type personDevices struct {
	V              int      `json:"v"`
	Current        []string `json:"current,omitempty"`
	Revoked        []string `json:"revoked,omitempty"`
	PrimaryRevoked bool     `json:"primary_revoked,omitempty"`
}

// MaxListedRevoked bounds the revoked devices a person's list keeps for
// [Store.Devices] (the oldest are dropped; their records stay, so they
// stay revoked).
const MaxListedRevoked = 16

func deviceKey(k kez.PublicKey) string        { return "device." + k.String() }
func personDevicesKey(k kez.PublicKey) string { return "devices." + k.String() }

func (d device) encode() []byte {
	b, err := json.Marshal(d)
	if err != nil {
		panic(err)
	}
	return b
}

func (p personDevices) encode() []byte {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err)
	}
	return b
}

func decodeDevice(b []byte) (device, error) {
	var d device
	if err := decodeValue(b, &d, &d.V); err != nil {
		return device{}, err
	}
	k, err := kez.ParsePublicKey(d.Person)
	if err != nil {
		return device{}, fmt.Errorf("the device's person: %w", err)
	}
	if len(d.Name) > 64 {
		return device{}, errors.New("the device's name is over 64 bytes")
	}
	d.person = k
	return d, nil
}

func decodePersonDevices(b []byte) (personDevices, error) {
	var p personDevices
	if err := decodeValue(b, &p, &p.V); err != nil {
		return personDevices{}, err
	}
	if len(p.Current) > handles.MaxDevices || len(p.Revoked) > MaxListedRevoked {
		return personDevices{}, errors.New("the device list is longer than a person may have")
	}
	for _, k := range append(slices.Clone(p.Current), p.Revoked...) {
		if _, err := kez.ParsePublicKey(k); err != nil {
			return personDevices{}, fmt.Errorf("the device list: %w", err)
		}
	}
	return p, nil
}

func (d device) record(k kez.PublicKey) handles.DeviceRecord {
	r := handles.DeviceRecord{Person: d.person, Device: k, Name: d.Name, Added: time.UnixMilli(d.Added)}
	if d.RevokedAt != 0 {
		r.Revoked, r.RevokedAt = true, time.UnixMilli(d.RevokedAt)
	}
	return r
}

// listOf reads person's device list (empty if none).
func (s *Store) listOf(ctx context.Context, person kez.PublicKey) (personDevices, uint64, error) {
	cur, err := s.get(ctx, personDevicesKey(person))
	if err != nil || !cur.found {
		return personDevices{V: formatVersion}, cur.rev, err
	}
	p, err := decodePersonDevices(cur.value)
	if err != nil {
		return personDevices{}, 0, fmt.Errorf("jsstore: the devices of %s are unreadable: %w", person, err)
	}
	return p, cur.rev, nil
}

// count is how many current devices p lists, the person's own key
// counted unless revoked.
func (p personDevices) count() int {
	n := len(p.Current)
	if !p.PrimaryRevoked {
		n++
	}
	return n
}

// holds returns nil when key holds a handle, handles.ErrNotFound when it
// does not; with person set, handles.ErrSuspended for a suspended entry.
func (s *Store) holds(ctx context.Context, key kez.PublicKey, person bool) error {
	rec, err := s.personRecord(ctx, key)
	switch {
	case err != nil:
		return err
	case person && rec.Suspended:
		return fmt.Errorf("%w: %s", handles.ErrSuspended, rec.Handle)
	}
	return nil
}

// AddDevice implements [handles.Store.AddDevice]. The person's list is
// written first (a compare-and-set, which keeps the bound), then the
// device's record (a create, which keeps a device to one person); a
// device listed without a record (a crash in between, or an add still on
// its way) is dropped from the list when the list is full, its record
// created revoked so that the add cannot finish beyond the bound.
func (s *Store) AddDevice(ctx context.Context, d handles.DeviceRecord) (bool, error) {
	if err := d.Check(); err != nil {
		return false, err
	}
	if d.Added.IsZero() {
		d.Added = s.now()
	}
	if err := s.holds(ctx, d.Person, true); err != nil {
		return false, err
	}
	switch err := s.holds(ctx, d.Device, false); {
	case err == nil:
		return false, fmt.Errorf("%w: %s holds a handle", handles.ErrDeviceTaken, d.Device)
	case !errors.Is(err, handles.ErrNotFound):
		return false, err
	}
	dk := d.Device.String()
	for range maxAttempts {
		old, drev, err := s.deviceOf(ctx, d.Device)
		if err != nil {
			return false, err
		}
		list, lrev, err := s.listOf(ctx, d.Person)
		if err != nil {
			return false, err
		}
		if old != nil {
			switch {
			case old.person != d.Person:
				return false, fmt.Errorf("%w: %s is a device of another person", handles.ErrDeviceTaken, d.Device)
			case old.RevokedAt != 0:
				return false, fmt.Errorf("%w: %s", handles.ErrDeviceRevoked, d.Device)
			case slices.Contains(list.Current, dk):
				return false, nil
			}
			// The record without its place in the list: list it again.
		} else if slices.Contains(list.Current, dk) {
			// Listed by an add that did not finish: finish it below.
		} else if list.count() >= handles.MaxDevices {
			pruned, err := s.prune(ctx, d.Person, list)
			if err != nil {
				return false, err
			}
			if pruned.count() >= handles.MaxDevices {
				return false, fmt.Errorf("%w: %s has %d current devices", handles.ErrTooManyDevices, d.Person, pruned.count())
			}
			list = pruned
		}
		if !slices.Contains(list.Current, dk) {
			if old != nil && list.count() >= handles.MaxDevices {
				// A current record the list lost: listed again only
				// within the bound.
				pruned, err := s.prune(ctx, d.Person, list)
				if err != nil {
					return false, err
				}
				list = pruned
			}
			if list.count() >= handles.MaxDevices {
				return false, fmt.Errorf("%w: %s has %d current devices", handles.ErrTooManyDevices, d.Person, list.count())
			}
			list.Current = append(list.Current, dk)
			if _, err := s.put(ctx, personDevicesKey(d.Person), list.encode(), lrev); errors.Is(err, errConflict) {
				continue
			} else if err != nil {
				return false, err
			}
		}
		if old != nil {
			return false, nil
		}
		rec := device{V: formatVersion, Person: d.Person.String(), Name: d.Name, Added: d.Added.UnixMilli()}
		if _, err := s.put(ctx, deviceKey(d.Device), rec.encode(), drev); errors.Is(err, errConflict) {
			continue // someone wrote the device meanwhile: read it again
		} else if err != nil {
			return false, err
		}
		return true, nil
	}
	return false, ErrContention
}

// prune drops from list the devices whose record is missing, revoked or
// another person's; it returns what it kept, for the caller to write with
// its compare-and-set. A missing record is an add cut short, or one still
// on its way: prune creates it revoked (a compare-and-set too), so that
// the add's own create fails rather than make a current device the list
// no longer counts (a device beyond the bound). That add answers
// ErrDeviceRevoked; its device links again with a new key.
func (s *Store) prune(ctx context.Context, person kez.PublicKey, list personDevices) (personDevices, error) {
	kept := list.Current[:0:0]
	for _, t := range list.Current {
		k, err := kez.ParsePublicKey(t)
		if err != nil {
			continue
		}
		d, _, err := s.deviceOf(ctx, k)
		if err != nil {
			return list, err
		}
		if d == nil {
			at := s.now().UnixMilli()
			tomb := device{V: formatVersion, Person: person.String(), Added: at, RevokedAt: at}
			switch _, err := s.put(ctx, deviceKey(k), tomb.encode(), 0); {
			case errors.Is(err, errConflict):
				// The add finished first: judge its record.
				if d, _, err = s.deviceOf(ctx, k); err != nil {
					return list, err
				}
			case err != nil:
				return list, err
			}
		}
		if d != nil && d.person == person && d.RevokedAt == 0 {
			kept = append(kept, t)
		}
	}
	if len(kept) == len(list.Current) {
		return list, nil
	}
	list.Current = kept
	return list, nil // the caller writes it with its compare-and-set
}

// RevokeDevice implements [handles.Store.RevokeDevice]: the device's
// record first (the authority: created revoked for a device never added
// here), then the person's list.
func (s *Store) RevokeDevice(ctx context.Context, person, dev kez.PublicKey, at time.Time) error {
	if person.IsZero() || dev.IsZero() {
		return errors.New("jsstore: a revocation needs a person and a device key")
	}
	if at.IsZero() {
		at = s.now()
	}
	if err := s.holds(ctx, person, false); err != nil {
		return err
	}
	if dev != person {
		switch err := s.holds(ctx, dev, false); {
		case err == nil:
			return fmt.Errorf("%w: %s holds a handle, it is no device of %s", handles.ErrNotFound, dev, person)
		case !errors.Is(err, handles.ErrNotFound):
			return err
		}
	}
	for range maxAttempts {
		old, drev, err := s.deviceOf(ctx, dev)
		if err != nil {
			return err
		}
		switch {
		case old != nil && old.person != person:
			return fmt.Errorf("%w: %s is a device of another person", handles.ErrNotFound, dev)
		case old != nil && old.RevokedAt != 0:
		default:
			rec := device{V: formatVersion, Person: person.String(), Added: at.UnixMilli(), RevokedAt: at.UnixMilli()}
			if old != nil {
				rec = *old
				rec.RevokedAt = at.UnixMilli()
			} else if dev == person {
				rec.Name = handles.PrimaryName
			}
			if _, err := s.put(ctx, deviceKey(dev), rec.encode(), drev); errors.Is(err, errConflict) {
				continue
			} else if err != nil {
				return err
			}
		}
		return s.unlist(ctx, person, dev)
	}
	return ErrContention
}

// unlist moves dev from person's current devices to the revoked ones.
func (s *Store) unlist(ctx context.Context, person, dev kez.PublicKey) error {
	dk := dev.String()
	for range maxAttempts {
		list, rev, err := s.listOf(ctx, person)
		if err != nil {
			return err
		}
		if dev == person {
			if list.PrimaryRevoked {
				return nil
			}
			list.PrimaryRevoked = true
		} else {
			if slices.Contains(list.Revoked, dk) && !slices.Contains(list.Current, dk) {
				return nil
			}
			list.Current = slices.DeleteFunc(list.Current, func(t string) bool { return t == dk })
			if !slices.Contains(list.Revoked, dk) {
				list.Revoked = append(list.Revoked, dk)
			}
			if n := len(list.Revoked); n > MaxListedRevoked {
				list.Revoked = list.Revoked[n-MaxListedRevoked:]
			}
		}
		if _, err := s.put(ctx, personDevicesKey(person), list.encode(), rev); errors.Is(err, errConflict) {
			continue
		} else {
			return err
		}
	}
	return ErrContention
}

// Devices implements [handles.Store.Devices]: the current devices and the
// [MaxListedRevoked] latest revoked ones (and the person's own key, if
// revoked), oldest first.
func (s *Store) Devices(ctx context.Context, person kez.PublicKey) ([]handles.DeviceRecord, error) {
	list, _, err := s.listOf(ctx, person)
	if err != nil {
		return nil, err
	}
	keys := append(slices.Clone(list.Current), list.Revoked...)
	if list.PrimaryRevoked {
		keys = append(keys, person.String())
	}
	var out []handles.DeviceRecord
	seen := map[string]bool{}
	for _, t := range keys {
		if seen[t] {
			continue
		}
		seen[t] = true
		k, err := kez.ParsePublicKey(t)
		if err != nil {
			continue
		}
		d, _, err := s.deviceOf(ctx, k)
		if err != nil {
			return nil, err
		}
		if d != nil && d.person == person {
			out = append(out, d.record(k))
		}
	}
	slices.SortStableFunc(out, func(a, b handles.DeviceRecord) int { return a.Added.Compare(b.Added) })
	return out, nil
}
