package sigchain

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/kez-lat/kez-chat/kez"
)

// maxLinkAnswer bounds an answer of the device routes: a link request
// and a key, with room for the JSON around them.
const maxLinkAnswer = MaxLinkRequestBody + 1024

func (c *Client) base() string { return strings.TrimRight(c.BaseURL, "/") }

// PostLinkRequest stores req, made and signed by a new device
// ([NewLinkRequest]), at the sig-server until it expires, so that an
// install holding the person's primary key can fetch it by its code
// ([Client.FetchLinkRequest]). It returns nil once the server holds it
// (also when it already did), or an error: [ErrDeviceKnown] (the device
// key is on a chain already, or was revoked), [ErrLinkExpired] or
// [ErrLinkNotYetValid] (by the server's clock), [ErrInvalid] (the server
// found the request invalid), [ErrRateLimited] (too many requests from
// this address; or the server holds as many as it allows, an error that
// also matches [ErrLinkRequestsFull]), [ServerError]
// (501: the server keeps no devices), [ErrUnreachable].
func (c *Client) PostLinkRequest(ctx context.Context, req *LinkRequest) error {
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base()+LinksPath, bytes.NewReader(req.Bytes()))
	if err != nil {
		return fmt.Errorf("sigchain: %w", err)
	}
	r.Header.Set("Content-Type", "application/octet-stream")
	_, _, err = c.do(r, 4096)
	return err
}

// FetchLinkRequest fetches the link request whose code is code and
// returns it with the person whose chain added its device, or the zero
// key while none did. The request's signature is verified and its code
// must be code, so a sig-server cannot answer with another device's
// request; the caller checks its freshness ([LinkRequest.CheckFresh]).
// The person is the server's word: a new device polling for it verifies
// that person's chain before trusting it. Errors: [ErrNoLinkRequest] (no
// such request, or it expired), [ErrBadLinkRequest] (the answer is not
// the request of code), [ErrRateLimited], [ServerError], [ErrUnreachable].
func (c *Client) FetchLinkRequest(ctx context.Context, code LinkCode) (*LinkRequest, kez.PublicKey, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base()+LinksPath+"/"+url.PathEscape(code.String()), nil)
	if err != nil {
		return nil, kez.PublicKey{}, fmt.Errorf("sigchain: %w", err)
	}
	body, _, err := c.do(r, maxLinkAnswer)
	if errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNoLinkRequest) {
		err = fmt.Errorf("%w: %w", ErrNoLinkRequest, err) // a server without the route
	}
	if err != nil {
		return nil, kez.PublicKey{}, err
	}
	var a struct {
		Person  string          `json:"person"`
		Request json.RawMessage `json:"request"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return nil, kez.PublicKey{}, fmt.Errorf("%w: the sig-server's answer is not a link request: %w", ErrBadLinkRequest, err)
	}
	req, err := ParseLinkRequest(a.Request)
	if err != nil {
		return nil, kez.PublicKey{}, fmt.Errorf("sigchain: the sig-server's link request for %s: %w", code, err)
	}
	if req.Code() != code {
		return nil, kez.PublicKey{}, fmt.Errorf("%w: the sig-server answered %s with the request of %s", ErrBadLinkRequest, code, req.Code())
	}
	var person kez.PublicKey
	if a.Person != "" {
		if person, err = kez.ParsePublicKey(a.Person); err != nil {
			return nil, kez.PublicKey{}, fmt.Errorf("sigchain: the sig-server's person for %s: %w", code, err)
		}
	}
	return req, person, nil
}

// DevicePerson asks the sig-server's device index which person's chain
// added device, and whether that chain revoked it since. The answer is
// the server's word: verify the person's chain ([Client.FetchVerified])
// and look the device up in it before trusting it. Errors: [ErrNoDevice]
// (no chain on the server lists the device), [ErrRateLimited],
// [ServerError] (501: the server keeps no devices), [ErrUnreachable].
func (c *Client) DevicePerson(ctx context.Context, device kez.PublicKey) (person kez.PublicKey, revoked bool, err error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base()+DevicesPath+url.PathEscape(device.String()), nil)
	if err != nil {
		return kez.PublicKey{}, false, fmt.Errorf("sigchain: %w", err)
	}
	body, _, err := c.do(r, 4096)
	if errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNoDevice) {
		err = fmt.Errorf("%w: %w", ErrNoDevice, err)
	}
	if err != nil {
		return kez.PublicKey{}, false, err
	}
	var a struct {
		Person  string `json:"person"`
		Revoked bool   `json:"revoked"`
	}
	if err := json.Unmarshal(body, &a); err != nil {
		return kez.PublicKey{}, false, fmt.Errorf("sigchain: the sig-server's answer for the device %s is not a device: %w", device, err)
	}
	if person, err = kez.ParsePublicKey(a.Person); err != nil {
		return kez.PublicKey{}, false, fmt.Errorf("sigchain: the sig-server's person for the device %s: %w", device, err)
	}
	return person, a.Revoked, nil
}
