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

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/ratelimit"
)

// InfoPath is where a chat-server describes itself: GET answers an [Info].
const InfoPath = wire.InfoPath

// MaxInfoSize bounds the [InfoPath] answer a client reads.
const MaxInfoSize = 16 << 10

// Info is a chat-server's answer at [InfoPath]: what a client needs
// besides the server's URL. Fields may be added.
type Info struct {
	// Domain is the handle domain the server registers: a claim for
	// alice at this server is for "alice@" + Domain.
	Domain string `json:"domain"`
	// SigServer is the base URL of the sig-server the server checks
	// claims against, as clients reach it; clients append their links
	// there.
	SigServer string `json:"sig_server"`
}

// ErrBadInfo reports an [InfoPath] answer that is not an [Info] a client
// can use.
var ErrBadInfo = errors.New("handles: the chat-server's info answer is not usable")

// ParseInfo decodes and checks an [InfoPath] answer: a JSON object of at
// most [MaxInfoSize] bytes whose domain passes the handle domain rules
// (development domains included: the caller chose the server) and whose
// sig_server, if present, is an http or https URL without user
// information, query or fragment. Unknown fields are ignored. The domain
// comes back in canonical form, the sig-server without a trailing slash.
// Errors wrap [ErrBadInfo].
func ParseInfo(b []byte) (*Info, error) {
	if len(b) > MaxInfoSize {
		return nil, fmt.Errorf("%w: it is over %d bytes", ErrBadInfo, MaxInfoSize)
	}
	var in Info
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInfo, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrBadInfo)
	}
	d, err := ParseDomain(in.Domain, true)
	if err != nil {
		return nil, fmt.Errorf("%w: its domain: %w", ErrBadInfo, err)
	}
	in.Domain = d
	if in.SigServer != "" {
		u, err := url.Parse(in.SigServer)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%w: its sig_server %q is not an http(s) base URL", ErrBadInfo, in.SigServer)
		}
		in.SigServer = strings.TrimRight(in.SigServer, "/")
	}
	return &in, nil
}

// Info asks the chat-server for its [Info]. Errors: one wrapping
// [ErrNotFound] when the server answers 404 (it has no [InfoPath]: not a
// KEZ chat-server, or an old one), [ErrUnreachable] when it cannot be
// reached or answers 5xx, [ErrRateLimited] on a 429, [ErrBadInfo] for any
// other answer that is not a usable Info.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	u := strings.TrimRight(c.BaseURL, "/") + InfoPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("handles: the server URL %q: %w", c.BaseURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrUnreachable, req.URL.Host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxInfoSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: reading the answer: %w", ErrUnreachable, req.URL.Host, err)
	}
	if e := ratelimit.FromResponse(resp, b, time.Now()); e != nil {
		return nil, fmt.Errorf("handles: %s refused: %w", req.URL.Host, e)
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s has no %s", ErrNotFound, req.URL.Host, InfoPath)
	case resp.StatusCode >= 500:
		return nil, fmt.Errorf("%w: %s answered %s", ErrUnreachable, req.URL.Host, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: %s answered %s", ErrBadInfo, req.URL.Host, resp.Status)
	}
	return ParseInfo(b)
}
