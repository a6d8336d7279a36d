package sigchain

import (
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Device link types (docs/spec/sigchain.md, "Devices").
const (
	// TypeAddDevice certifies a device key, with its own signed link
	// request. Body: [AddDeviceBody].
	TypeAddDevice = "add_device"
	// TypeRevokeDevice revokes a current device for good. Body:
	// [RevokeDeviceBody].
	TypeRevokeDevice = "revoke_device"
)

// MaxDevices bounds the current (not revoked) devices of one chain,
// the primary key included.
const MaxDevices = 32

// PrimaryDeviceName is the name of the primary key as a device.
const PrimaryDeviceName = "primary"

// ErrNotDeviceLink reports a link given to [VerifyDeviceLink] whose type
// is neither add_device nor revoke_device.
var ErrNotDeviceLink = errors.New("sigchain: not a device link")

// Device is one device of a chain: the primary key, or a key an
// add_device link certified.
type Device struct {
	Key          kez.PublicKey // the device's key (the chain's own for the primary)
	Name         string        // "primary" for the primary key
	Primary      bool          // the chain's own key
	AddedSeqno   uint64        // the add_device link's seqno (1 for the primary)
	Added        time.Time     // that link's ctime
	Revoked      bool          // a revoke_device link named it
	RevokedSeqno uint64        // the revoke_device link's seqno, or 0
	RevokedAt    time.Time     // that link's ctime, or the zero time
}

type device struct {
	key          kez.PublicKey
	name         string
	addedSeqno   uint64
	added        int64
	revokedSeqno uint64 // 0: current
	revokedAt    int64
}

func (d *device) export() Device {
	out := Device{Key: d.key, Name: d.name, Primary: d.addedSeqno == 1, AddedSeqno: d.addedSeqno,
		Added: time.Unix(d.added, 0).UTC(), Revoked: d.revokedSeqno != 0, RevokedSeqno: d.revokedSeqno}
	if out.Revoked {
		out.RevokedAt = time.Unix(d.revokedAt, 0).UTC()
	}
	return out
}

// Devices returns every device the chain ever had: the primary key first,
// then the added keys in the order they were added, revoked ones included.
func (s *State) Devices() []Device {
	out := make([]Device, len(s.devices))
	for i := range s.devices {
		out[i] = s.devices[i].export()
	}
	return out
}

// CurrentDevices returns the keys of the chain's current devices: the
// primary key first (unless it was revoked), then the added keys not
// revoked, in the order they were added.
func (s *State) CurrentDevices() []kez.PublicKey {
	out := make([]kez.PublicKey, 0, s.current)
	for i := range s.devices {
		if s.devices[i].revokedSeqno == 0 {
			out = append(out, s.devices[i].key)
		}
	}
	return out
}

// DeviceOf returns the device with key k, current or revoked, and false
// if the chain never had it.
func (s *State) DeviceOf(k kez.PublicKey) (Device, bool) {
	i, ok := s.deviceIdx[k]
	if !ok {
		return Device{}, false
	}
	return s.devices[i].export(), true
}

// IsCurrentDevice reports whether k is a current (not revoked) device of
// the chain.
func (s *State) IsCurrentDevice(k kez.PublicKey) bool {
	i, ok := s.deviceIdx[k]
	return ok && s.devices[i].revokedSeqno == 0
}

// RotationDue reports whether a revoke_device link follows the link that
// published the chain's current encryption key: the revoked device may
// hold that key's private half (docs/spec/chat.md §8.6), so nothing
// should be sealed to it until a set_encryption_key link rotates it
// (docs/spec/sigchain.md, "Rotation on revocation").
func (s *State) RotationDue() bool {
	if len(s.encKeys) == 0 {
		return false
	}
	cur := s.encKeys[len(s.encKeys)-1].Seqno
	for i := range s.devices {
		if s.devices[i].revokedSeqno > cur {
			return true
		}
	}
	return false
}

// AddDeviceBody returns the body of an add_device link that certifies the
// device of req. The link must be made within the request's validity
// (its ctime no earlier than [LinkRequestSkew] before the request was
// made and no later than its expiry).
func AddDeviceBody(req *LinkRequest) []byte {
	b := []byte(`{"device":`)
	b = appendString(b, req.device.String())
	b = append(b, `,"name":`...)
	b = appendString(b, req.name)
	b = append(b, `,"request":`...)
	b = append(b, req.raw...)
	return append(b, '}')
}

// RevokeDeviceBody returns the body of a revoke_device link for device k.
func RevokeDeviceBody(k kez.PublicKey) []byte {
	return append(appendString([]byte(`{"device":`), k.String()), '}')
}

// addDevice checks the rules of an add_device link that need no chain
// state and returns its request.
func addDevice(l *Link) (*LinkRequest, error) {
	v, err := bodyFields(l.typ, l.Body(), "device", "name", "request")
	if err != nil {
		return nil, err
	}
	dev, err := keyValue("device", v[0])
	if err != nil {
		return nil, err
	}
	name, err := stringValue("name", v[1])
	if err != nil {
		return nil, err
	}
	req, err := ParseLinkRequest(v[2])
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if req.device != dev {
		return nil, fmt.Errorf("the request is for device %s, the body names %s", req.device, dev)
	}
	if req.name != name {
		return nil, fmt.Errorf("the request names the device %q, the body %q", req.name, name)
	}
	if l.ctime < req.created-int64(LinkRequestSkew/time.Second) || l.ctime > req.expires {
		return nil, fmt.Errorf("ctime %d is outside the request's validity [%d, %d]", l.ctime, req.created-int64(LinkRequestSkew/time.Second), req.expires)
	}
	if dev == l.key {
		return nil, fmt.Errorf("the primary key %s is already the chain's first device", dev)
	}
	return req, nil
}

// revokeDevice parses a revoke_device body.
func revokeDevice(l *Link) (kez.PublicKey, error) {
	v, err := bodyFields(l.typ, l.Body(), "device")
	if err != nil {
		return kez.PublicKey{}, err
	}
	return keyValue("device", v[0])
}

// applyDevice checks an add_device or revoke_device link against s and
// applies it. bad wraps a rule violation as ErrBadBody.
func (s *State) applyDevice(l *Link, bad func(error) error) error {
	switch l.typ {
	case TypeAddDevice:
		req, err := addDevice(l)
		if err != nil {
			return bad(err)
		}
		if i, ok := s.deviceIdx[req.device]; ok {
			return bad(fmt.Errorf("device %s was already added at seqno %d (a key is added once; a revoked key stays revoked)", req.device, s.devices[i].addedSeqno))
		}
		if s.current >= MaxDevices {
			return bad(fmt.Errorf("a chain has at most %d current devices; revoke one first", MaxDevices))
		}
		s.addDevice(device{key: req.device, name: req.name, addedSeqno: l.seqno, added: l.ctime})
	case TypeRevokeDevice:
		k, err := revokeDevice(l)
		if err != nil {
			return bad(err)
		}
		i, ok := s.deviceIdx[k]
		switch {
		case !ok:
			return bad(fmt.Errorf("%s is not a device of this chain", k))
		case s.devices[i].revokedSeqno != 0:
			return bad(fmt.Errorf("device %s was already revoked at seqno %d", k, s.devices[i].revokedSeqno))
		case s.current == 1:
			return bad(fmt.Errorf("device %s is the chain's last current device", k))
		}
		s.devices[i].revokedSeqno, s.devices[i].revokedAt = l.seqno, l.ctime
		s.current--
	}
	return nil
}

func (s *State) addDevice(d device) {
	if s.deviceIdx == nil {
		s.deviceIdx = make(map[kez.PublicKey]int)
	}
	s.deviceIdx[d.key] = len(s.devices)
	s.devices = append(s.devices, d)
	s.current++
}

// DeviceChange is one verified add_device or revoke_device link, read
// without its chain by [VerifyDeviceLink].
type DeviceChange struct {
	Person  kez.PublicKey // the chain's key, which signed the link
	Device  kez.PublicKey // the device added or revoked
	Name    string        // the device's name (add_device only)
	Revoke  bool          // a revoke_device link
	Link    *Link         // the link itself, verified
	Request *LinkRequest  // the device's link request (add_device only)
}

// VerifyDeviceLink parses one add_device or revoke_device link from its
// exact bytes, verifies its signature with its own key and checks the
// rules that need no chain: for add_device, the request's signature by the
// device key (the counter-signature), that it names the body's device and
// name, that the link was made within the request's validity, and that the
// device is not the link's key. It is for servers that hold no chain; it
// cannot know whether the device is new to the chain, whether it is
// current, nor whether the link is on the chain at all. Errors wrap
// [ErrMalformed], [ErrNotDeviceLink] or [ErrInvalid] (with
// [ErrBadSignature] or [ErrBadBody]).
func VerifyDeviceLink(b []byte) (*DeviceChange, error) {
	l, err := ParseLink(b)
	if err != nil {
		return nil, err
	}
	if l.typ != TypeAddDevice && l.typ != TypeRevokeDevice {
		return nil, fmt.Errorf("%w: type %s", ErrNotDeviceLink, l.typ)
	}
	fail := func(kind error, err error) error {
		return &LinkError{Seqno: l.seqno, Err: fmt.Errorf("%w: %s: %w", kind, l.typ, err)}
	}
	if _, ok := l.verifySignature(nil); !ok {
		return nil, fail(ErrBadSignature, fmt.Errorf("the signature does not verify with key %s", l.key))
	}
	if n := len(l.Body()); n > MaxBodySize {
		return nil, fail(ErrBadBody, fmt.Errorf("%w: the body is %d bytes, the limit is %d", ErrTooLarge, n, MaxBodySize))
	}
	ch := &DeviceChange{Person: l.key, Link: l}
	if l.typ == TypeRevokeDevice {
		if ch.Device, err = revokeDevice(l); err != nil {
			return nil, fail(ErrBadBody, err)
		}
		ch.Revoke = true
		return ch, nil
	}
	if ch.Request, err = addDevice(l); err != nil {
		return nil, fail(ErrBadBody, err)
	}
	ch.Device, ch.Name = ch.Request.device, ch.Request.name
	return ch, nil
}
