package sigchain

import (
	"context"
	"errors"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// ErrNoDevice reports a key that no chain on the sig-server lists as a
// device (404 to GET /v1/devices/{key}).
var ErrNoDevice = errors.New("sigchain: no chain lists this device")

// ErrDeviceKnown reports a device key the sig-server already knows: an
// add_device link stored on some chain named it (also if it was revoked
// since), or it has a chain of its own. A device key serves one person
// once: a link request for it is refused (409, reason
// [ReasonDeviceKnown]) and so is a second add_device link naming it
// (422, same reason).
var ErrDeviceKnown = errors.New("sigchain: the device key is already on a chain")

// ErrDeviceRevoked reports a device key revoked on its chain: its prekey
// record is deleted and no new one is taken (422 to a prekey PUT, reason
// [ReasonDeviceRevoked]).
var ErrDeviceRevoked = errors.New("sigchain: the device was revoked")

// ErrNoLinkRequest reports a link code for which the sig-server holds no
// request: never posted, or expired (404 to GET /v1/links/{code}).
var ErrNoLinkRequest = errors.New("sigchain: no link request for this code")

// ErrLinkRequestsFull reports a link request refused because the store
// holds as many pending requests as the sig-server allows
// ([Limits].MaxPendingLinkRequests). The handler answers 429 with reason
// [ReasonLinkRequests], and [Client.PostLinkRequest] returns an error
// that matches both it and [ErrRateLimited].
var ErrLinkRequestsFull = errors.New("sigchain: the sig-server holds as many link requests as it allows")

// Reasons in the "reason" field of the device routes' refusals.
const (
	ReasonDeviceKnown   = "device_known"    // 409 to POST /v1/links, 422 to an add_device append
	ReasonDeviceRevoked = "device_revoked"  // 422 to a prekey PUT of a revoked device
	ReasonNoDevice      = "no_device"       // 404 to GET /v1/devices/{key}
	ReasonNoLinkRequest = "no_link_request" // 404 to GET /v1/links/{code}
	ReasonLinkRequests  = "link_requests"   // 429 to POST /v1/links: the cap on pending requests
)

// LinksPath is the route of link requests: POST LinksPath, GET
// LinksPath + "/" + code.
const LinksPath = "/v1/links"

// DevicesPath is the prefix of the device index: the person of a device
// key is at DevicesPath + key.
const DevicesPath = "/v1/devices/"

// MaxLinkRequestBody bounds the body of POST /v1/links.
const MaxLinkRequestBody = 2048

// DeviceEntry is what the device index of a sig-server says about a
// device key.
type DeviceEntry struct {
	// Person is the key of the chain whose add_device link named the
	// device.
	Person kez.PublicKey
	// Revoked is set once a revoke_device link of that chain named it.
	Revoked bool
}

// DeviceStore is a [Store] that keeps the device index: for every
// add_device link it stores, the device key → the chain's key, and for
// every revoke_device link the device's revoked flag. A store that
// implements it keeps the index in the transaction of [Store.Append]:
//
//   - an add_device link naming a device already in the index (of any
//     chain, revoked or not) or a key that has a chain is refused,
//     storing nothing, with an error matching [ErrDeviceKnown], and so
//     is an eldest link of a key in the index (the handler checks
//     first; the store makes it hold for appends racing each other);
//   - a revoke_device link marks its device revoked and deletes the
//     device's prekey record, if the store is a [PrekeyStore];
//   - a [PrekeyStore] takes a record for a current device of a stored
//     chain as for a key with a chain, and refuses one for a revoked
//     device with [ErrDeviceRevoked];
//   - collecting an orphan chain ([OrphanCollector]) removes its devices
//     from the index, with their prekey records.
//
// sigchain/sqlitestore and sigchain/jsstore implement it.
type DeviceStore interface {
	Store
	// Device returns the index entry of device, or [ErrNoDevice].
	Device(ctx context.Context, device kez.PublicKey) (DeviceEntry, error)
}

// LinkRequestStore keeps pending device link requests, each under its
// link code ([LinkRequest.Code]) until it expires. A [Store] that also
// implements it has [NewHandler] serve POST /v1/links and GET
// /v1/links/{code}. Implementations never verify a request (the handler
// does).
type LinkRequestStore interface {
	// PutLinkRequest stores req under req.Code(). It stores nothing and
	// returns created false if a request is stored under that code
	// already (the handler compares the bytes), and [ErrLinkRequestsFull]
	// if max ≥ 0 and max requests not expired by now are stored.
	PutLinkRequest(ctx context.Context, req *LinkRequest, now time.Time, max int) (created bool, err error)
	// LinkRequest returns the exact bytes of the request stored under
	// code, or [ErrNoLinkRequest]. It may return a request that has
	// expired but was not swept yet; the handler checks.
	LinkRequest(ctx context.Context, code LinkCode) ([]byte, error)
	// SweepLinkRequests deletes the requests that expired before now and
	// returns how many it deleted (a store whose requests expire by
	// themselves returns 0).
	SweepLinkRequests(ctx context.Context, now time.Time) (int, error)
}

// NamedDevice returns the device an add_device or revoke_device link
// names, and whether it revokes it; ok is false for every other type and
// for a body that does not parse (only verified links reach a store).
// Stores use it to keep the device index ([DeviceStore]).
func (l *Link) NamedDevice() (device kez.PublicKey, revoke, ok bool) {
	var v [][]byte
	var err error
	switch l.typ {
	case TypeAddDevice:
		v, err = bodyFields(l.typ, l.Body(), "device", "name", "request")
	case TypeRevokeDevice:
		v, err = bodyFields(l.typ, l.Body(), "device")
		revoke = true
	default:
		return kez.PublicKey{}, false, false
	}
	if err != nil {
		return kez.PublicKey{}, false, false
	}
	s, err := stringValue("device", v[0])
	if err != nil {
		return kez.PublicKey{}, false, false
	}
	k, err := kez.ParsePublicKey(s)
	if err != nil {
		return kez.PublicKey{}, false, false
	}
	return k, revoke, true
}
