package claims

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/kez-lat/kez-chat/internal/netguard"
)

// isLocal reports whether the https identity (host, or host:port) is one
// of LocalDomains.
func (c *Checker) isLocal(identity, host string) bool {
	for _, d := range c.LocalDomains {
		d = strings.TrimSpace(d)
		if strings.EqualFold(d, identity) || strings.EqualFold(d, host) {
			return true
		}
	}
	return false
}

// checkHTTPS looks for text as a line of https://<identity>/.well-known/kez-claim.
func (c *Checker) checkHTTPS(ctx context.Context, identity, text string) error {
	host, port, ok := splitHTTPSIdentity(identity)
	if !ok {
		return fmt.Errorf("%w: https %q", ErrBadIdentity, truncate(identity, 64))
	}
	local := c.isLocal(identity, host)
	if _, err := netip.ParseAddr(host); !local && (err == nil || port != "") {
		return fmt.Errorf("%w: https %s: an IP address or a port is accepted only for a local domain", ErrForbidden, identity)
	}
	ctx, cancel := context.WithTimeout(ctx, HTTPSTimeout)
	defer cancel()
	u := "https://" + identity + WellKnownPath
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadIdentity, identity, err)
	}
	resp, err := c.httpClient(local).Do(req)
	if err != nil {
		if errors.Is(err, ErrForbidden) {
			return fmt.Errorf("%w: %s", ErrForbidden, u)
		}
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, u, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return fmt.Errorf("%w: %s answered %d", ErrNotFound, u, resp.StatusCode)
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		return fmt.Errorf("%w: %s redirects, and redirects are not followed", ErrUnavailable, u)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("%w: %s answered %d", ErrUnavailable, u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxHTTPSBody+1))
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, u, err)
	}
	if len(body) > MaxHTTPSBody {
		return fmt.Errorf("%w: %s is larger than %d bytes", ErrUnavailable, u, MaxHTTPSBody)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if strings.TrimSpace(line) == text {
			return nil
		}
	}
	return fmt.Errorf("%w: no line of %s is the statement", ErrNotFound, u)
}

// httpClient returns the client for an https check: HTTPClient if set,
// else the default for a local or a remote host; redirects are refused.
func (c *Checker) httpClient(local bool) *http.Client {
	c.httpOnce.Do(func() {
		if c.HTTPClient != nil {
			cl := *c.HTTPClient
			cl.CheckRedirect = refuseRedirect
			c.local, c.remote = &cl, &cl
			return
		}
		c.local = newHTTPClient(nil)
		c.remote = newHTTPClient(publicOnly)
	})
	if local {
		return c.local
	}
	return c.remote
}

func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// newHTTPClient returns a client that ignores proxy settings (a proxy
// would dial for it, unchecked), refuses redirects and dials through
// control.
func newHTTPClient(control func(network, address string, c syscall.RawConn) error) *http.Client {
	d := &net.Dialer{Timeout: HTTPSTimeout, Control: control}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           16,
		IdleConnTimeout:        30 * time.Second,
		TLSHandshakeTimeout:    HTTPSTimeout,
		ResponseHeaderTimeout:  HTTPSTimeout,
		MaxResponseHeaderBytes: 16 << 10,
	}
	return &http.Client{Transport: tr, Timeout: HTTPSTimeout, CheckRedirect: refuseRedirect}
}

// publicOnly is a dialer's Control refusing addresses that are not public.
func publicOnly(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !netguard.PublicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbidden, address)
	}
	return nil
}
