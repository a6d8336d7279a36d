package handles

import (
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// DeviceRecord is one device of a person in the registry: a key that logs
// in to NATS for the person who holds a handle here (docs/spec/handles.md,
// "Devices"). The person's own key is its primary device and has no
// record unless it was revoked.
type DeviceRecord struct {
	Person kez.PublicKey // the key that holds the handle and signed the link
	Device kez.PublicKey // the device's own key
	// Name is the device's name from its add_device link ("primary" for
	// the person's own key).
	Name    string
	Added   time.Time // when the registry stored it
	Revoked bool      // revoke_device seen: permanent
	// RevokedAt is when the registry stored the revocation (zero while
	// current).
	RevokedAt time.Time
}

// PrimaryName is the name of a person's own key as a device.
const PrimaryName = "primary"

// MaxDevices bounds a person's current devices in the registry, the
// person's own key included unless revoked: the sigchain's bound.
const MaxDevices = sigchain.MaxDevices

// Errors of the device registry.
var (
	// ErrDeviceRevoked: the key was a device and was revoked; it may not
	// log in, receive or be added again. Errors matching it from
	// [Store.LookupKey] are a *[DeviceRevokedError].
	ErrDeviceRevoked = errors.New("handles: the device was revoked")
	// ErrDeviceTaken: the device key is another person's device, or a
	// key that holds a handle itself.
	ErrDeviceTaken = errors.New("handles: the device key belongs to someone else")
	// ErrTooManyDevices: the person has [MaxDevices] current devices.
	ErrTooManyDevices = errors.New("handles: the person has the most devices allowed")
	// ErrBadDeviceLink: the body is not an add_device or revoke_device
	// link that verifies.
	ErrBadDeviceLink = errors.New("handles: not a valid device link")
)

// DeviceRevokedError is what [Store.LookupKey] returns for a revoked
// device key: it matches [ErrDeviceRevoked], and Record is the registry
// entry of the person it belonged to (with Device set), so that a server
// can still find the handle of a person whose own key was revoked as a
// device.
type DeviceRevokedError struct {
	Record Record
}

// Error names the device.
func (e *DeviceRevokedError) Error() string {
	return fmt.Sprintf("handles: the device %s of %s was revoked", e.Record.Device, e.Record.Handle)
}

// Is makes errors.Is(err, ErrDeviceRevoked) true.
func (e *DeviceRevokedError) Is(target error) bool { return target == ErrDeviceRevoked }

// Reasons of device refusals, in the "reason" of HTTP error bodies.
const (
	ReasonDeviceRevoked  Reason = "device_revoked"
	ReasonDeviceTaken    Reason = "device_taken"
	ReasonTooManyDevices Reason = "too_many_devices"
	ReasonBadDeviceLink  Reason = "bad_link"
)

// deviceReason returns the reason of a device refusal, or "".
func deviceReason(err error) Reason {
	switch {
	case errors.Is(err, ErrDeviceRevoked):
		return ReasonDeviceRevoked
	case errors.Is(err, ErrDeviceTaken):
		return ReasonDeviceTaken
	case errors.Is(err, ErrTooManyDevices):
		return ReasonTooManyDevices
	case errors.Is(err, ErrBadDeviceLink):
		return ReasonBadDeviceLink
	}
	return ""
}

// Check refuses a record no store may keep: a zero key, a device that is
// its person's own key, a name outside 1 to 64 bytes.
func (d DeviceRecord) Check() error {
	switch {
	case d.Person.IsZero() || d.Device.IsZero():
		return errors.New("handles: a device needs a person and a device key")
	case d.Person == d.Device:
		return fmt.Errorf("%w: a person's own key is its primary device", ErrDeviceTaken)
	case d.Name == "" || len(d.Name) > 64:
		return errors.New("handles: a device name has 1 to 64 bytes")
	}
	return nil
}
