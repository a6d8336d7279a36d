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
	"slices"
	"strings"
	"time"

	ma "github.com/multiformats/go-multiaddr"

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
	// Relays are libp2p relays (circuit relay v2) the server's operator
	// offers its users for file sharing between peers behind NAT: each a
	// multiaddr text ending in /p2p/<the relay's peer id> (see
	// [ParseRelay]), at most [MaxRelays]. Empty: none offered.
	Relays []string `json:"relays,omitempty"`
}

// MaxRelays bounds how many relays an [Info] may name, and MaxRelayLen
// the length of each in bytes.
const (
	MaxRelays   = 8
	MaxRelayLen = 255
)

// ErrBadRelay reports a relay address that [ParseRelay] refuses.
var ErrBadRelay = errors.New("handles: not a relay address")

// ParseRelay checks addr as a relay's address and returns it in the
// multiaddr's canonical text form: at most [MaxRelayLen] bytes of visible
// ASCII, a multiaddr that parses, with a transport part and one /p2p
// component naming the relay's peer id, at the end, and no /p2p-circuit.
// Errors wrap [ErrBadRelay].
func ParseRelay(addr string) (string, error) {
	if len(addr) == 0 || len(addr) > MaxRelayLen {
		return "", fmt.Errorf("%w: %d bytes, want 1 to %d", ErrBadRelay, len(addr), MaxRelayLen)
	}
	for i := 0; i < len(addr); i++ {
		if addr[i] <= ' ' || addr[i] >= 0x7f {
			return "", fmt.Errorf("%w: %q has a byte that is not visible ASCII", ErrBadRelay, addr)
		}
	}
	a, err := ma.NewMultiaddr(addr)
	if err != nil {
		return "", fmt.Errorf("%w: %q: %w", ErrBadRelay, addr, err)
	}
	n := len(a)
	if n < 2 || a[n-1].Protocol().Code != ma.P_P2P {
		return "", fmt.Errorf("%w: %q does not end in /p2p/<peer id> after a transport address", ErrBadRelay, addr)
	}
	for _, c := range a[:n-1] {
		if code := c.Protocol().Code; code == ma.P_P2P || code == ma.P_CIRCUIT {
			return "", fmt.Errorf("%w: %q names more than the relay", ErrBadRelay, addr)
		}
	}
	s := a.String()
	if len(s) > MaxRelayLen {
		return "", fmt.Errorf("%w: %q is over %d bytes in canonical form", ErrBadRelay, addr, MaxRelayLen)
	}
	return s, nil
}

// ErrBadInfo reports an [InfoPath] answer that is not an [Info] a client
// can use.
var ErrBadInfo = errors.New("handles: the chat-server's info answer is not usable")

// ParseInfo decodes and checks an [InfoPath] answer: a JSON object of at
// most [MaxInfoSize] bytes whose domain passes the handle domain rules
// (development domains included: the caller chose the server) and whose
// sig_server, if present, is an http or https URL without user
// information, query or fragment, and whose relays, if present, are at
// most [MaxRelays] addresses [ParseRelay] accepts, none twice. Unknown
// fields are ignored. The domain and the relays come back in canonical
// form, the sig-server without a trailing slash.
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
	if len(in.Relays) > MaxRelays {
		return nil, fmt.Errorf("%w: %d relays, at most %d", ErrBadInfo, len(in.Relays), MaxRelays)
	}
	for i, r := range in.Relays {
		c, err := ParseRelay(r)
		if err != nil {
			return nil, fmt.Errorf("%w: its relays: %w", ErrBadInfo, err)
		}
		if slices.Contains(in.Relays[:i], c) {
			return nil, fmt.Errorf("%w: the relay %q twice", ErrBadInfo, c)
		}
		in.Relays[i] = c
	}
	if len(in.Relays) == 0 {
		in.Relays = nil
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
