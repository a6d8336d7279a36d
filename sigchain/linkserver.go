package sigchain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/kez"
)

// Reasons in the "reason" field of a 422 to POST /v1/links for a
// request that is valid but not now, and (ReasonLinkExpired) of a 422 to
// an append of an add_device link that came more than [LinkRequestSkew]
// after its request expired.
const (
	ReasonLinkExpired     = "link_expired"       // the request's expiry has passed
	ReasonLinkNotYetValid = "link_not_yet_valid" // the request was made more than LinkRequestSkew ahead
)

// linkRequestsFullRetry is the Retry-After of a request refused by the
// cap on pending requests: the oldest of them expire within
// [LinkRequestTTL], many much sooner.
const linkRequestsFullRetry = time.Minute

// linkCounters count the link requests' outcomes, for metrics.
type linkCounters struct {
	stored, malformed, invalid, expired, known, full counter
}

// LinkRequestStats are the counters of POST /v1/links.
type LinkRequestStats struct {
	// Stored counts requests stored (201).
	Stored uint64
	// Malformed counts requests refused before they were read: too
	// large, wrong content type (413, 415).
	Malformed uint64
	// Invalid counts bytes that are not a validly signed request (422).
	Invalid uint64
	// Expired counts valid requests expired or made in the future (422).
	Expired uint64
	// DeviceKnown counts requests for a device already on a chain (409).
	DeviceKnown uint64
	// Full counts requests refused because the pending requests were at
	// [Limits].MaxPendingLinkRequests (429).
	Full uint64
}

func (c *linkCounters) stats() LinkRequestStats {
	return LinkRequestStats{Stored: c.stored.Load(), Malformed: c.malformed.Load(), Invalid: c.invalid.Load(),
		Expired: c.expired.Load(), DeviceKnown: c.known.Load(), Full: c.full.Load()}
}

// noLinkRequests answers the device routes of a handler whose store
// keeps no device index or link requests.
func noLinkRequests(w http.ResponseWriter, _ *http.Request) {
	httpjson.Error(w, http.StatusNotImplemented, "this sig-server keeps no devices")
}

func (h *Handler) deviceKnown(w http.ResponseWriter, msg string) {
	refuseWith(w, http.StatusUnprocessableEntity, ReasonDeviceKnown, msg)
}

// lateRequest returns why an add_device link may not be stored now ("" if
// it may): its request expired more than [LinkRequestSkew] ago by the
// handler's clock. The chain's rule bounds the link's ctime by the
// request's validity, but a ctime is its signer's word: without this, a
// request read from any chain could be replayed into a new chain, dated
// back, at any time.
func (h *Handler) lateRequest(link *Link) string {
	if link.Type() != TypeAddDevice {
		return ""
	}
	req, err := addDevice(link)
	if err != nil {
		return "" // unreachable: the link was verified
	}
	if h.now().Unix() > req.expires+int64(LinkRequestSkew/time.Second) {
		return fmt.Sprintf("the device's link request expired at %s; this sig-server stores an add_device link only until %s after its request expired", req.Expires().Format(time.RFC3339), LinkRequestSkew)
	}
	return ""
}

// knownDevice returns why link may not be stored because of the device
// index ("" if it may): an add_device link naming a device known here,
// or an eldest link of a key that is a device of a chain here.
func (h *Handler) knownDevice(ctx context.Context, link *Link) (string, error) {
	if h.devices == nil {
		return "", nil
	}
	if link.Seqno() == 1 {
		_, err := h.devices.Device(ctx, link.Key())
		if err == nil {
			return "the key is a device on a chain here; a device key never starts a chain of its own", nil
		}
		if !errors.Is(err, ErrNoDevice) {
			return "", err
		}
		return "", nil
	}
	d, revoke, ok := link.NamedDevice()
	if !ok || revoke {
		return "", nil
	}
	return h.deviceTaken(ctx, d)
}

// deviceTaken returns why d cannot be added to a chain ("" if it can): it
// is in the device index, or it has a chain of its own.
func (h *Handler) deviceTaken(ctx context.Context, d kez.PublicKey) (string, error) {
	e, err := h.devices.Device(ctx, d)
	switch {
	case err == nil && e.Revoked:
		return "the device " + d.String() + " was revoked; a revoked device key never comes back", nil
	case err == nil:
		return "the device " + d.String() + " is already on a chain here", nil
	case !errors.Is(err, ErrNoDevice):
		return "", err
	}
	if _, err := h.store.Head(ctx, d); err == nil {
		return "the device key " + d.String() + " has a chain of its own here", nil
	} else if !errors.Is(err, ErrNotFound) {
		return "", err
	}
	return "", nil
}

// postLinkRequest serves POST /v1/links.
func (h *Handler) postLinkRequest(w http.ResponseWriter, r *http.Request) {
	if limited(w, h.linkRequestsPerIP, h.limits.ClientIP.Key(r), "too many link requests from your address; wait and try again") {
		return
	}
	c := &h.linkCount
	data, ok := readOctets(w, r, MaxLinkRequestBody, "a link request", &c.malformed)
	if !ok {
		return
	}
	req, err := ParseLinkRequest(data)
	if err != nil {
		c.invalid.Add(1)
		httpjson.Error(w, http.StatusUnprocessableEntity, err.Error())
		return
	}
	now := h.now()
	if err := req.CheckFresh(now); err != nil {
		c.expired.Add(1)
		reason := ReasonLinkExpired
		if errors.Is(err, ErrLinkNotYetValid) {
			reason = ReasonLinkNotYetValid
		}
		refuseWith(w, http.StatusUnprocessableEntity, reason, err.Error())
		return
	}
	ctx := r.Context()
	if why, err := h.deviceTaken(ctx, req.Device()); err != nil {
		h.internal(w, r, "reading the device index", err)
		return
	} else if why != "" {
		c.known.Add(1)
		refuseWith(w, http.StatusConflict, ReasonDeviceKnown, why)
		return
	}
	created, err := h.links.PutLinkRequest(ctx, req, now, h.limits.MaxPendingLinkRequests)
	if errors.Is(err, ErrLinkRequestsFull) {
		c.full.Add(1)
		secs := int64(linkRequestsFullRetry / time.Second)
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		httpjson.Write(w, http.StatusTooManyRequests, map[string]any{
			"error":       "this sig-server holds as many link requests as it allows; try again in a minute",
			"retry_after": secs,
			"reason":      ReasonLinkRequests,
		})
		return
	}
	if err != nil {
		h.internal(w, r, "storing the link request", err)
		return
	}
	code := req.Code()
	status := http.StatusCreated
	if !created {
		stored, err := h.links.LinkRequest(ctx, code)
		if err == nil && !bytes.Equal(stored, req.Bytes()) {
			err = fmt.Errorf("another request is stored under the code %s", code)
		}
		if err != nil {
			h.internal(w, r, "storing the link request", err)
			return
		}
		status = http.StatusOK
	} else {
		c.stored.Add(1)
		h.log.InfoContext(ctx, "sigchain: link request stored", "device", req.Device().String(), "expires", req.Expires())
	}
	httpjson.Write(w, status, map[string]any{"code": code.String(), "expires": req.Expires().Unix()})
}

// getLinkRequest serves GET /v1/links/{code}.
func (h *Handler) getLinkRequest(w http.ResponseWriter, r *http.Request) {
	if limited(w, h.linkReadsPerIP, h.limits.ClientIP.Key(r), "too many link request reads from your address; wait and try again") {
		return
	}
	code, err := ParseLinkCode(r.PathValue("code"))
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "the code in the path is not a link code: "+err.Error())
		return
	}
	ctx := r.Context()
	raw, err := h.links.LinkRequest(ctx, code)
	var req *LinkRequest
	if err == nil {
		if req, err = ParseLinkRequest(raw); err != nil {
			h.internal(w, r, "reading the link request", fmt.Errorf("stored link request is unreadable: %w", err))
			return
		}
		if req.Code() != code || h.now().After(req.Expires()) {
			err = ErrNoLinkRequest // expired, not swept yet
		}
	}
	if errors.Is(err, ErrNoLinkRequest) {
		refuseWith(w, http.StatusNotFound, ReasonNoLinkRequest, "this server has no link request for "+code.String()+" (never made, or expired)")
		return
	}
	if err != nil {
		h.internal(w, r, "reading the link request", err)
		return
	}
	person := ""
	if e, err := h.device(ctx, req.Device()); err == nil {
		person = e.Person.String()
	} else if !errors.Is(err, ErrNoDevice) {
		h.internal(w, r, "reading the device index", err)
		return
	}
	var b bytes.Buffer
	b.WriteString(`{"person":"` + person + `","request":`)
	b.Write(raw) // canonical JSON, verified again above
	b.WriteString("}\n")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b.Bytes())
}

// device returns the index entry of d if the chain that added it is
// stored, else [ErrNoDevice]: an entry outlives its chain only in a race
// with the collection of orphan chains.
func (h *Handler) device(ctx context.Context, d kez.PublicKey) (DeviceEntry, error) {
	e, err := h.devices.Device(ctx, d)
	if err != nil {
		return DeviceEntry{}, err
	}
	if _, err := h.store.Head(ctx, e.Person); err != nil {
		if errors.Is(err, ErrNotFound) {
			return DeviceEntry{}, ErrNoDevice
		}
		return DeviceEntry{}, err
	}
	return e, nil
}

// getDevice serves GET /v1/devices/{key}.
func (h *Handler) getDevice(w http.ResponseWriter, r *http.Request) {
	key, ok := h.readKey(w, r, h.deviceReadsPerIP, "too many device reads from your address; wait and try again")
	if !ok {
		return
	}
	e, err := h.device(r.Context(), key)
	if errors.Is(err, ErrNoDevice) {
		refuseWith(w, http.StatusNotFound, ReasonNoDevice, "no chain on this server lists the device "+key.String())
		return
	}
	if err != nil {
		h.internal(w, r, "reading the device index", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"person":"` + e.Person.String() + `","revoked":` + strconv.FormatBool(e.Revoked) + "}\n"))
}

// prekeyOwner reports whether key may hold a prekey record here: nil if
// it has a chain or is a current device of a stored chain,
// [ErrDeviceRevoked] for a revoked device (also a chain's own key that a
// revoke_device link named), [ErrNotFound] for any other key.
func (h *Handler) prekeyOwner(ctx context.Context, key kez.PublicKey) error {
	if h.devices != nil {
		e, err := h.devices.Device(ctx, key)
		switch {
		case err == nil && e.Revoked:
			return ErrDeviceRevoked
		case err == nil:
			_, err = h.store.Head(ctx, e.Person)
			return err
		case !errors.Is(err, ErrNoDevice):
			return err
		}
	}
	_, err := h.store.Head(ctx, key)
	return err
}
