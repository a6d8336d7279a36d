package files

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Errors about devices (docs/spec/manifest.md §6). Callers branch with
// errors.Is.
var (
	// ErrNotPrimary reports a Share or Unshare on an install that does
	// not hold its person's primary key (a linked device): the manifest
	// is a sigchain link, which only the primary key signs.
	ErrNotPrimary = errors.New("files: publishing shared files needs the primary key, which this device does not hold")

	// ErrDeviceRevoked reports an entry whose serving device the owner
	// revoked: it is not fetched from. Returned as a *[DeviceError].
	ErrDeviceRevoked = errors.New("files: the device that shares this file was revoked")

	// ErrNoKey reports a private entry on a linked device that holds no
	// key of its person opening it (the keys come from an install that
	// holds the primary key, docs/spec/chat.md §8.6; Config.Keys). It is
	// returned together with ErrForbidden.
	ErrNoKey = errors.New("files: this device holds no encryption key of its person that opens this file")

	// ErrKeyNotRotated reports a private share to a recipient whose
	// chain revokes a device after the link that published their current
	// encryption key: the revoked device holds that key, so nothing is
	// wrapped to it until the recipient's client appends the rotation
	// (docs/spec/sigchain.md, "Rotation on revocation"). Returned as a
	// *[RotationError].
	ErrKeyNotRotated = errors.New("files: the recipient revoked a device and has not rotated their encryption key yet")

	// ErrNotOwnersDevice reports an entry whose serving device is not a
	// device of the owner's chain (even if it is someone else's): it is
	// not fetched from. Returned as a *[DeviceError].
	ErrNotOwnersDevice = errors.New("files: the device named to serve this file is not the owner's")
)

// RotationError is [ErrKeyNotRotated] for one recipient of a private
// share; errors.Is matches ErrKeyNotRotated.
type RotationError struct {
	Handle string // the recipient's handle
}

// Error names the recipient.
func (e *RotationError) Error() string {
	return fmt.Sprintf("files: %s revoked a device and has not rotated their encryption key yet", e.Handle)
}

// Is matches ErrKeyNotRotated.
func (e *RotationError) Is(target error) bool { return target == ErrKeyNotRotated }

// DeviceError is [ErrDeviceRevoked] or [ErrNotOwnersDevice] with the
// details; errors.Is matches the one that applies.
type DeviceError struct {
	Owner   string        // the owner's handle
	Device  kez.PublicKey // the serving device the entry names
	Name    string        // the device's name on the owner's chain ("" if none)
	Revoked bool          // revoked, rather than never the owner's
}

// Error says which device and why.
func (e *DeviceError) Error() string {
	if e.Revoked {
		return fmt.Sprintf("files: the device %q of %s that shares this file was revoked", e.Name, e.Owner)
	}
	return fmt.Sprintf("files: the device %s named to serve this file is not one of %s's", e.Device, e.Owner)
}

// Is matches ErrDeviceRevoked or ErrNotOwnersDevice.
func (e *DeviceError) Is(target error) bool {
	return (target == ErrDeviceRevoked && e.Revoked) || (target == ErrNotOwnersDevice && !e.Revoked)
}

// servingDevice returns the device that serves e on the owner's chain st
// (e's device, else the chain's key) after checking that it is a current
// device of that chain.
func servingDevice(handle string, st *sigchain.State, dev kez.PublicKey) (kez.PublicKey, error) {
	if dev.IsZero() {
		dev = st.Key()
	}
	d, ok := st.DeviceOf(dev)
	if !ok {
		return kez.PublicKey{}, &DeviceError{Owner: handle, Device: dev}
	}
	if d.Revoked {
		return kez.PublicKey{}, &DeviceError{Owner: handle, Device: dev, Name: d.Name, Revoked: true}
	}
	return dev, nil
}

// dropRevoked removes from m the entries whose serving device is not a
// current device of st (the user's own chain), and returns how many.
func dropRevoked(m *format.Manifest, st *sigchain.State) int {
	current := func(d kez.PublicKey) bool {
		if d.IsZero() {
			d = st.Key()
		}
		return st.IsCurrentDevice(d)
	}
	n := len(m.Public) + len(m.Sealed)
	m.Public = slices.DeleteFunc(m.Public, func(e format.Entry) bool { return !current(e.Device) })
	m.Sealed = slices.DeleteFunc(m.Sealed, func(e format.SealedEntry) bool { return !current(e.Device) })
	return n - len(m.Public) - len(m.Sealed)
}

// deviceRefresh is how long the serving node trusts a recipient's chain
// it fetched, and the least time between two fetches of it.
const deviceRefresh = time.Minute

// maxRecipientChains bounds the recipients' chains the node keeps (the
// members of a few groups of group.MaxMembers).
const maxRecipientChains = 4096

// servePolicy is the node's Policy: the share index's (public rows to
// everyone, private ones to their recipients' person keys) and, for a
// private blob asked for by another key, the current devices of its
// recipients' verified chains (docs/spec/manifest.md §6); for a share to
// a group, the sharer's devices and the members since the share, and
// their current devices (§7).
type servePolicy struct{ s *Sharing }

// Allow implements Policy.
func (p servePolicy) Allow(peer kez.PublicKey, c cid.Cid) bool {
	s := p.s
	if s.idx.Allow(peer, c) {
		return true
	}
	ctx, cancel := context.WithTimeout(s.done, 10*time.Second)
	defer cancel()
	rcs, err := s.idx.recipientsOf(ctx, c)
	if err != nil {
		s.log.Error("files: reading the share index", "err", err)
		return false
	}
	groups := map[string]*groupRef{}
	for _, r := range rcs {
		if r.group != nil {
			groups[r.group.key()] = r.group
			if r.key != s.me {
				continue // a group's members are checked against its chain
			}
		}
		if r.key == peer || s.chains.isDevice(ctx, s, r, peer) {
			return true
		}
	}
	for _, g := range groups {
		if s.allowsGroup(ctx, g, peer) {
			return true
		}
	}
	return false
}

// recipientChains keeps the verified chains of private files' recipients,
// to tell their devices.
type recipientChains struct {
	mu sync.Mutex
	m  map[kez.PublicKey]*recipientChain
}

type recipientChain struct {
	mu      sync.Mutex // held while fetching: one fetch at a time
	st      *sigchain.State
	fetched time.Time // of the last attempt, successful or not
}

func (rc *recipientChains) get(k kez.PublicKey) *recipientChain {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.m == nil || len(rc.m) >= maxRecipientChains {
		rc.m = make(map[kez.PublicKey]*recipientChain)
	}
	e := rc.m[k]
	if e == nil {
		e = &recipientChain{}
		rc.m[k] = e
	}
	return e
}

// cached returns the chain of the recipient k as last fetched, nil if
// none; it fetches nothing.
func (rc *recipientChains) cached(k kez.PublicKey) *sigchain.State {
	rc.mu.Lock()
	e := rc.m[k]
	rc.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.st
}

// isDevice reports whether peer is a current device of the recipient r's
// chain, fetched (again) if the copy kept is older than deviceRefresh.
func (rc *recipientChains) isDevice(ctx context.Context, s *Sharing, r recipient, peer kez.PublicKey) bool {
	e := rc.get(r.key)
	e.mu.Lock()
	defer e.mu.Unlock()
	if now := s.now(); e.fetched.IsZero() || now.Sub(e.fetched) >= deviceRefresh || now.Before(e.fetched) {
		e.fetched = now
		st, err := s.recipientChain(ctx, r, e.st)
		if err != nil {
			s.log.Warn("files: reading a recipient's sigchain to check a device", "recipient", r.handle, "err", err)
		} else {
			e.st = st
		}
	}
	return e.st != nil && e.st.Key() == r.key && e.st.IsCurrentDevice(peer)
}

// recipient is one recipient of a private row: their person key, the
// handle recorded when it was shared and, for a share to a group, that
// group.
type recipient struct {
	key    kez.PublicKey
	handle string
	group  *groupRef
}

// recipientChain fetches and verifies the chain of r: the user's own from
// their sig-server, anyone else's by their handle, which must still name
// r's key.
func (s *Sharing) recipientChain(ctx context.Context, r recipient, known *sigchain.State) (*sigchain.State, error) {
	if r.key == s.me && s.sigc != nil {
		return s.sigc.FetchVerified(ctx, r.key, known)
	}
	h, err := s.rules().Parse(r.handle)
	if err != nil {
		return nil, err
	}
	res, err := s.resolver.ResolveFresh(ctx, h, known)
	if err != nil {
		return nil, err
	}
	if res.Key != r.key {
		return nil, fmt.Errorf("files: %s now names another key than the one the file was shared with", r.handle)
	}
	return res.State, nil
}
