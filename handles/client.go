package handles

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/ratelimit"
)

// Client talks to one chat-server's registry: it claims handles and looks
// them up. Set BaseURL (KEZ_SERVER). A Client is safe for concurrent use.
// To turn a handle into a verified key use [Resolver], which checks the
// answer against the key's sigchain.
type Client struct {
	// BaseURL is the chat-server's base URL, e.g. "https://kez.lat".
	BaseURL string
	// HTTPClient is used for requests; nil means http.DefaultClient.
	HTTPClient *http.Client
	// Now dates claims; nil means time.Now.
	Now func() time.Time
}

// ServerError is an error answer of a chat-server. It matches the
// package's sentinel errors with errors.Is by status: 400 [ErrBadClaim],
// 401 [ErrBadSignature], 403 and 410 [ErrSuspended], 404 [ErrNotFound],
// 409 [ErrTaken], 422 [ErrChainMismatch], 5xx [ErrUnreachable].
// A 400 about the handle itself is returned as a *[HandleError] instead,
// and a 409 that names the handle held as a *[TakenError],
// and a 429 as a *[RateLimitedError] matching [ErrRateLimited].
//
// A refusal of a device registration carries a reason and matches its
// error instead: [ErrDeviceRevoked], [ErrDeviceTaken], [ErrTooManyDevices]
// or [ErrBadDeviceLink].
type ServerError struct {
	StatusCode int
	Message    string // the server's "error" text
	Reason     Reason // the server's "reason", if any
}

// Error gives the status and the server's message.
func (e *ServerError) Error() string {
	return fmt.Sprintf("handles: the server answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Message)
}

// Is maps the status to the package's sentinel errors.
func (e *ServerError) Is(target error) bool {
	switch e.Reason {
	case ReasonDeviceRevoked:
		return target == ErrDeviceRevoked
	case ReasonDeviceTaken:
		return target == ErrDeviceTaken
	case ReasonTooManyDevices:
		return target == ErrTooManyDevices
	case ReasonBadDeviceLink:
		return target == ErrBadDeviceLink
	}
	switch e.StatusCode {
	case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
		return target == ErrBadClaim
	case http.StatusUnauthorized:
		return target == ErrBadSignature
	case http.StatusForbidden, http.StatusGone:
		return target == ErrSuspended
	case http.StatusNotFound:
		return target == ErrNotFound
	case http.StatusConflict:
		return target == ErrTaken
	case http.StatusUnprocessableEntity:
		return target == ErrChainMismatch
	}
	return e.StatusCode >= 500 && target == ErrUnreachable
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

// Claim signs a claim of h with signer and sends it. It returns the
// registry's record and created=true for a new entry (false: the key
// already held h). The key's sigchain must already claim h (append the
// eldest or a set_handle link first). Errors: *[HandleError] (invalid or
// reserved name), or a *[ServerError] matching [ErrTaken],
// [ErrChainMismatch], [ErrBadSignature], [ErrUnreachable], …
func (c *Client) Claim(ctx context.Context, signer kez.Signer, h Handle) (*LookupRecord, bool, error) {
	if err := CheckClaimable(h); err != nil {
		return nil, false, err
	}
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	claim, err := NewClaim(signer, h, now())
	if err != nil {
		return nil, false, err
	}
	body, err := json.Marshal(claim)
	if err != nil {
		return nil, false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.BaseURL, "/")+"/v1/handles", bytes.NewReader(body))
	if err != nil {
		return nil, false, fmt.Errorf("handles: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	var rec LookupRecord
	status, err := c.do(req, h.String(), &rec)
	if err != nil {
		return nil, false, err
	}
	if rec.Handle != h.String() || rec.Key != signer.PublicKey().String() {
		return nil, false, fmt.Errorf("handles: the server answered the claim of %s with the record of %s (%s)", h, rec.Handle, rec.Key)
	}
	return &rec, status == http.StatusCreated, nil
}

// Lookup asks the server for a handle of its own domain; name is the local
// name or the full handle. The answer is not checked against the key's
// sigchain: use [Resolver] for that. Errors: [ErrNotFound],
// [ErrSuspended], [ErrUnreachable] (all via *[ServerError]).
func (c *Client) Lookup(ctx context.Context, name string) (*LookupRecord, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(c.BaseURL, "/")+"/v1/handles/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, fmt.Errorf("handles: %w", err)
	}
	var rec LookupRecord
	if _, err := c.do(req, name, &rec); err != nil {
		return nil, err
	}
	return &rec, nil
}

// WebFinger asks the server for the JRD of h (RFC 7033). The answer is not
// checked: use [Resolver].
func (c *Client) WebFinger(ctx context.Context, h Handle) (*JRD, error) {
	u := strings.TrimRight(c.BaseURL, "/") + "/.well-known/webfinger?resource=" + url.QueryEscape(h.Acct())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("handles: %w", err)
	}
	req.Header.Set("Accept", JRDContentType)
	var jrd JRD
	if _, err := c.do(req, h.String(), &jrd); err != nil {
		return nil, err
	}
	return &jrd, nil
}

// do sends req and decodes a 2xx answer into out. input names the handle
// for a *HandleError rebuilt from a 400 with a reason.
func (c *Client) do(req *http.Request, input string, out any) (int, error) {
	resp, err := c.httpClient().Do(req)
	if errors.Is(err, ErrForbiddenOrigin) {
		return 0, fmt.Errorf("handles: %s: %w", req.URL.Host, err)
	}
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %w", ErrUnreachable, req.URL.Host, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return 0, fmt.Errorf("%w: %s: reading the answer: %w", ErrUnreachable, req.URL.Host, err)
	}
	if len(body) > maxAnswer {
		return 0, fmt.Errorf("handles: %s answered with more than %d bytes", req.URL.Host, maxAnswer)
	}
	if e := ratelimit.FromResponse(resp, body, time.Now()); e != nil {
		return 0, fmt.Errorf("handles: %s refused: %w", req.URL.Host, e)
	}
	if resp.StatusCode/100 != 2 {
		var e errorBody
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body[:min(len(body), 200)]))
		}
		if resp.StatusCode == http.StatusBadRequest && e.Reason != "" {
			detail := e.Error
			if _, d, ok := strings.Cut(detail, "is not a valid handle: "); ok {
				detail = d // the server's HandleError sentence, without its prefix
			}
			return 0, &HandleError{Input: input, Reason: e.Reason, Detail: detail}
		}
		if te := takenAnswer(resp.StatusCode, e, input); te != nil {
			return 0, te
		}
		return 0, &ServerError{StatusCode: resp.StatusCode, Message: e.Error, Reason: e.Reason}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return 0, fmt.Errorf("handles: %s answered with something that is not the expected JSON: %w", req.URL.Host, err)
	}
	return resp.StatusCode, nil
}

// takenAnswer rebuilds the *TakenError of a 409 answer that says which
// handle is held (reason "taken" or "look_alike" and "existing"), or
// returns nil.
func takenAnswer(status int, e errorBody, input string) *TakenError {
	if status != http.StatusConflict || (e.Reason != ReasonTaken && e.Reason != ReasonLookAlike) {
		return nil
	}
	rules := Rules{AllowLocal: true}
	claimed, err := rules.Parse(input)
	if err != nil {
		return nil
	}
	holder, err := rules.Parse(e.Existing)
	if err != nil || holder.Domain != claimed.Domain || (holder == claimed) != (e.Reason == ReasonTaken) {
		return nil
	}
	return &TakenError{Claimed: claimed, Holder: holder}
}
