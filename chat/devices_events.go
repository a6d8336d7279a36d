package chat

// What the user is shown of their contacts' devices (docs/spec/chat.md
// §8.3): a device a contact's chain added or revoked is a contact event,
// device_added or device_revoked, never a flag: the contact's primary key
// signed the link, which is what a chain's rules require of it. The
// client tells of each one found (Config.OnContactDevice) and lists those
// recorded (ContactDeviceEvents).

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// Contact events of a contact's devices.
const (
	eventDeviceAdded   = "device_added"
	eventDeviceRevoked = "device_revoked"
)

// ContactDevice is a device a contact's chain added or revoked, as a
// check of the contact found it. The contact's primary key signed the
// link: it is news, not a warning.
type ContactDevice struct {
	Handle  string        // the contact's handle
	Person  kez.PublicKey // the contact's (primary) key
	Device  kez.PublicKey // the device's key
	Name    string        // the device's name, as the chain gives it
	Revoked bool          // revoked; false: added
	Seqno   uint64        // the chain link that added (or revoked) it
	At      time.Time     // when this client found it
}

// String words the event for a person: `@bob@kez.lat added a device,
// "phone" (signed by their key).`
func (d ContactDevice) String() string {
	verb := "added a device"
	if d.Revoked {
		verb = "revoked a device"
	}
	return fmt.Sprintf("@%s %s, %q (signed by their key).", d.Handle, verb, d.Name)
}

// deviceDetail is the detail of a device event as contact_events keeps
// it: `device <key> ("<name>") at chain seqno <n>` for an addition, "by"
// instead of "at" for a revocation.
func deviceDetail(d chainDevice, revoked bool, seqno uint64) string {
	if revoked {
		return fmt.Sprintf("device %s (%q) by chain seqno %d", d.Key, d.Name, seqno)
	}
	return fmt.Sprintf("device %s (%q) at chain seqno %d", d.Key, d.Name, d.AddedSeqno)
}

// errDeviceDetail: a contact event's detail that is not a device's.
var errDeviceDetail = errors.New("chat: not a device event's detail")

// parseDeviceEvent reads a device event back from its kind and detail
// (deviceDetail); the handle, person and time are the caller's.
func parseDeviceEvent(kind, detail string) (ContactDevice, error) {
	var d ContactDevice
	var word string
	switch kind {
	case eventDeviceAdded:
		word = " at chain seqno "
	case eventDeviceRevoked:
		d.Revoked, word = true, " by chain seqno "
	default:
		return d, errDeviceDetail
	}
	rest, ok := strings.CutPrefix(detail, "device ")
	key, rest, ok2 := strings.Cut(rest, " (")
	if !ok || !ok2 {
		return d, errDeviceDetail
	}
	k, err := kez.ParsePublicKey(key)
	if err != nil {
		return d, errDeviceDetail
	}
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return d, errDeviceDetail
	}
	name, err := strconv.Unquote(q)
	if err != nil {
		return d, errDeviceDetail
	}
	num, ok := strings.CutPrefix(rest[len(q):], ")"+word)
	if !ok {
		return d, errDeviceDetail
	}
	seqno, err := strconv.ParseUint(num, 10, 64)
	if err != nil || strconv.FormatUint(seqno, 10) != num {
		return d, errDeviceDetail
	}
	d.Device, d.Name, d.Seqno = k, name, seqno
	return d, nil
}

// tellDevices tells Config.OnContactDevice of the device events among
// events, recorded for the contact handle (key person) at at.
func (c *Client) tellDevices(handle string, person kez.PublicKey, at time.Time, events [][2]string) {
	if c.cfg.OnContactDevice == nil {
		return
	}
	for _, ev := range events {
		d, err := parseDeviceEvent(ev[0], ev[1])
		if err != nil {
			continue
		}
		d.Handle, d.Person, d.At = handle, person, at
		c.cfg.OnContactDevice(d)
	}
}

// ContactDeviceEvents returns the devices the contact's chain added or
// revoked since the contact was added here, as checks of the contact
// found them, oldest first. The devices the chain listed when it was
// added are not events: Contact.Devices lists them.
func (c *Client) ContactDeviceEvents(ctx context.Context, handle string) ([]ContactDevice, error) {
	ct, err := c.Contact(ctx, handle)
	if err != nil {
		return nil, err
	}
	evs, err := c.ContactEvents(ctx, ct.Handle)
	if err != nil {
		return nil, err
	}
	var out []ContactDevice
	for _, ev := range evs {
		if ev.Event == "added" || ev.Event == "accepted_new_key" {
			out = out[:0] // the devices of the key pinned before
			continue
		}
		d, err := parseDeviceEvent(ev.Event, ev.Detail)
		if err != nil {
			continue
		}
		d.Handle, d.Person, d.At = ct.Handle, ct.Key, ev.At
		out = append(out, d)
	}
	return out, nil
}
