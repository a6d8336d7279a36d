package handles

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// DevicesPath is where devices are registered (POST) and looked up (GET
// DevicesPath + key).
const DevicesPath = "/v1/devices"

// MaxDeviceLinkBody bounds the body of POST /v1/devices: one link.
const MaxDeviceLinkBody = 8 << 10

// DeviceInfo is the JSON answer of GET /v1/devices/{key} and of POST
// /v1/devices: whose device a key is.
type DeviceInfo struct {
	Person  string `json:"person"`         // the person's key, nkey text
	Handle  string `json:"handle"`         // the handle the person holds here
	Device  string `json:"device"`         // the device's key
	Name    string `json:"name,omitempty"` // from its add_device link ("primary" for the person's own key)
	Revoked bool   `json:"revoked"`        // its person revoked it, for good
}

// DevicesHandler serves POST /v1/devices: the body is one add_device or
// revoke_device link, its exact bytes (docs/spec/handles.md, "Devices").
func (s *Server) DevicesHandler() http.Handler { return http.HandlerFunc(s.postDevice) }

// DeviceLookupHandler serves GET /v1/devices/{key}; it reads the path
// value "key".
func (s *Server) DeviceLookupHandler() http.Handler { return http.HandlerFunc(s.getDevice) }

// deviceStatus maps a device registration error to its HTTP status.
func deviceStatus(err error) int {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, ErrRateLimited):
		return http.StatusTooManyRequests
	case errors.Is(err, ErrBadDeviceLink):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, ErrSuspended):
		return http.StatusForbidden
	case errors.Is(err, ErrDeviceRevoked), errors.Is(err, ErrDeviceTaken), errors.Is(err, ErrTooManyDevices):
		return http.StatusConflict
	case errors.Is(err, sigchain.ErrUnreachable):
		return http.StatusServiceUnavailable
	case errors.Is(err, errSigServer):
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}

func (s *Server) postDevice(w http.ResponseWriter, r *http.Request) {
	if err := limitedError(s.limits.devicesPerIP, s.limits.ip.Key(r), "too many device registrations from your address; wait and try again"); err != nil {
		refuse(w, err)
		return
	}
	info, created, err := s.doDevice(r.Context(), http.MaxBytesReader(w, r.Body, MaxDeviceLinkBody))
	if err != nil {
		status := deviceStatus(err)
		switch status {
		case http.StatusTooManyRequests:
			refuse(w, err)
			return
		case http.StatusInternalServerError:
			s.cfg.Logger.Error("device registration failed", "err", err)
			err = errors.New("the registry failed; try again later")
		default:
			s.cfg.Logger.Info("device registration refused", "status", status, "err", err)
		}
		httpjson.Write(w, status, errorBody{Error: err.Error(), Reason: deviceReason(err)})
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
		s.cfg.Logger.Info("device registered", "person", info.Person, "device", info.Device, "revoked", info.Revoked)
	}
	httpjson.Write(w, status, info)
}

func (s *Server) doDevice(ctx context.Context, body io.Reader) (*DeviceInfo, bool, error) {
	b, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, false, fmt.Errorf("a device link is at most %d bytes: %w", MaxDeviceLinkBody, err)
		}
		return nil, false, fmt.Errorf("%w: reading the body: %w", ErrBadDeviceLink, err)
	}
	ch, err := sigchain.VerifyDeviceLink(bytes.TrimSpace(b))
	if err != nil {
		return nil, false, fmt.Errorf("%w: %w", ErrBadDeviceLink, err)
	}
	// Only the person's signature got this far: their bucket, nobody else's.
	if err := limitedError(s.limits.devicesPerKey, ch.Person.String(), "too many device registrations for this person; wait and try again"); err != nil {
		return nil, false, err
	}
	rec, err := s.personEntry(ctx, ch.Person, ch.Revoke)
	if err != nil {
		return nil, false, err
	}
	info := &DeviceInfo{Person: ch.Person.String(), Handle: rec.Handle.String(), Device: ch.Device.String(), Name: ch.Name}
	if err := s.checkDeviceLink(ctx, ch); err != nil {
		return nil, false, err
	}
	if ch.Revoke {
		if err := s.cfg.Store.RevokeDevice(ctx, ch.Person, ch.Device, s.cfg.Now()); err != nil {
			return nil, false, err
		}
		info.Revoked = true
		if s.cfg.DeviceRevoked != nil {
			// Also for a revocation sent again: it finishes what a
			// crash may have cut short (the kicks, the inbox).
			s.cfg.DeviceRevoked(ctx, ch.Person, ch.Device)
		}
		return info, false, nil
	}
	created, err := s.cfg.Store.AddDevice(ctx, DeviceRecord{Person: ch.Person, Device: ch.Device, Name: ch.Name, Added: s.cfg.Now()})
	if err != nil {
		return nil, false, err
	}
	return info, created, nil
}

// checkDeviceLink refuses the device links that would let one person take
// or block another's device key, which the link alone cannot show (its
// signer says what it likes about any key; a device's link request is
// public once on a chain, and says nothing of the person):
//
//   - a revocation of a key the registry has never seen as the signer's
//     device is taken only when the signer's chain at the sig-server shows
//     that key revoked (else anyone could block any key here for good,
//     another's device or a person not registered yet);
//   - an add whose link request expired (LinkRequestSkew of grace) is
//     taken only for a device already the signer's here, or one the
//     signer's chain at the sig-server lists as current (else a request
//     copied off a chain would take the device for the copier).
//
// Clients register an add before appending it (the request is fresh
// then, and on no chain yet) and a revocation after appending it.
func (s *Server) checkDeviceLink(ctx context.Context, ch *sigchain.DeviceChange) error {
	if ch.Device == ch.Person {
		return nil // the person's own key as its primary device
	}
	if !ch.Revoke {
		now := s.cfg.Now()
		if !now.After(ch.Request.Expires().Add(sigchain.LinkRequestSkew)) && !ch.Request.Created().After(now.Add(sigchain.LinkRequestSkew)) {
			return nil
		}
	}
	if s.isDeviceOf(ctx, ch.Person, ch.Device) {
		return nil
	}
	st, err := s.chainOf(ctx, ch.Person)
	switch {
	case errors.Is(err, ErrChainMismatch):
		st = nil
	case err != nil:
		return err
	}
	var d sigchain.Device
	known := false
	if st != nil {
		d, known = st.DeviceOf(ch.Device)
	}
	switch {
	case ch.Revoke && (!known || !d.Revoked):
		return fmt.Errorf("%w: %s is no device of %s here, and its sigchain does not show it revoked", ErrNotFound, ch.Device, ch.Person)
	case !ch.Revoke && (!known || d.Revoked):
		return fmt.Errorf("%w: the link request of %s expired at %s, and the sigchain of %s does not list it as a current device", ErrBadDeviceLink, ch.Device, ch.Request.Expires().UTC().Format(time.RFC3339), ch.Person)
	}
	return nil
}

// isDeviceOf reports whether the registry holds device as person's
// device, current or revoked.
func (s *Server) isDeviceOf(ctx context.Context, person, device kez.PublicKey) bool {
	rec, err := s.cfg.Store.LookupKey(ctx, device)
	var re *DeviceRevokedError
	if errors.As(err, &re) {
		rec, err = re.Record, nil
	}
	return err == nil && rec.Key == person && rec.Device == device
}

// personEntry returns the entry of the handle person holds here (also
// when the person's own key was revoked as a device), or ErrNotFound;
// ErrSuspended for a suspended entry unless revoking, which only takes
// away (a person suspended because a stolen device misbehaved revokes it
// at once, not after being reinstated).
func (s *Server) personEntry(ctx context.Context, person kez.PublicKey, revoking bool) (Record, error) {
	rec, err := s.cfg.Store.LookupKey(ctx, person)
	var re *DeviceRevokedError
	if errors.As(err, &re) && re.Record.Key == person {
		rec, err = re.Record, nil
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return Record{}, fmt.Errorf("%w: %s holds no handle here", ErrNotFound, person)
	case err != nil:
		return Record{}, err
	case rec.Key != person || rec.Handle.IsZero():
		return Record{}, fmt.Errorf("%w: %s is a device, not a person holding a handle", ErrNotFound, person)
	case rec.Suspended && !revoking:
		return Record{}, fmt.Errorf("%w: %s", ErrSuspended, rec.Handle)
	}
	return rec, nil
}

func (s *Server) getDevice(w http.ResponseWriter, r *http.Request) {
	if s.readLimited(w, r) {
		return
	}
	key, err := kez.ParsePublicKey(r.PathValue("key"))
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "the path does not end in a key (U…)")
		return
	}
	rec, err := s.cfg.Store.LookupKey(r.Context(), key)
	revoked := false
	var re *DeviceRevokedError
	if errors.As(err, &re) {
		rec, err, revoked = re.Record, nil, true
	}
	switch {
	case errors.Is(err, ErrNotFound) || err == nil && rec.Handle.IsZero():
		httpjson.Write(w, http.StatusNotFound, errorBody{Error: fmt.Sprintf("%s: %s is no device here", ErrNotFound, key)})
		return
	case err != nil:
		s.cfg.Logger.Error("device lookup failed", "key", key.String(), "err", err)
		httpjson.Error(w, http.StatusInternalServerError, "the registry failed; try again later")
		return
	case rec.Suspended:
		httpjson.Write(w, http.StatusGone, errorBody{Error: fmt.Sprintf("%s: %s", ErrSuspended, rec.Handle)})
		return
	}
	info := DeviceInfo{Person: rec.Key.String(), Handle: rec.Handle.String(), Device: key.String(), Revoked: revoked}
	if rec.Device.IsZero() {
		info.Name = PrimaryName
	}
	httpjson.Write(w, http.StatusOK, info)
}

// RegisterDevice sends link, an add_device or revoke_device link of the
// person's chain (its exact bytes, [sigchain.Link.Bytes]), to the
// registry, which then lets the device log in (or never again). It
// returns the registry's answer and created=true when the device is new
// there. Sending a link again is harmless. Send an add before appending
// it to the chain (its link request expires in minutes), a revocation
// after (the registry checks the chain for a device it never saw).
// Errors: a *[ServerError] matching [ErrBadDeviceLink] (also for an
// expired request of a device the chain does not list), [ErrNotFound]
// (the person holds no handle here, or revokes another's device, or one
// its chain does not show revoked), [ErrDeviceRevoked] (adding a revoked
// device), [ErrDeviceTaken], [ErrTooManyDevices], [ErrSuspended],
// [ErrUnreachable], or a *[RateLimitedError].
func (c *Client) RegisterDevice(ctx context.Context, link []byte) (*DeviceInfo, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.BaseURL, "/")+DevicesPath, bytes.NewReader(link))
	if err != nil {
		return nil, false, fmt.Errorf("handles: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	var info DeviceInfo
	status, err := c.do(req, "", &info)
	if err != nil {
		return nil, false, err
	}
	return &info, status == http.StatusCreated, nil
}

// LookupDevice asks the registry whose device key is: the person, the
// handle it holds here, and whether the device was revoked (a person's
// own key answers as its primary device). The answer is not checked
// against the person's sigchain: a client does that before trusting it.
// Errors: [ErrNotFound], [ErrSuspended], [ErrUnreachable] (via
// *[ServerError]).
func (c *Client) LookupDevice(ctx context.Context, key kez.PublicKey) (*DeviceInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.BaseURL, "/")+DevicesPath+"/"+url.PathEscape(key.String()), nil)
	if err != nil {
		return nil, fmt.Errorf("handles: %w", err)
	}
	var info DeviceInfo
	if _, err := c.do(req, "", &info); err != nil {
		return nil, err
	}
	if info.Device != key.String() {
		return nil, fmt.Errorf("handles: the server answered the lookup of device %s with %s", key, info.Device)
	}
	return &info, nil
}
