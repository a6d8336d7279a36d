package handles

// Remote origins. Resolving a handle of another domain contacts
// https://DOMAIN and then the sig-server its answer names: servers chosen
// by whoever controls that domain, which may be a stranger who only wrote
// to the user so that the user's client would call them. The rules here
// keep those requests on the public internet and on https, so a stranger
// cannot make a client reach its own machine or network (an admin page on
// 127.0.0.1, a router on 192.168.1.1, a cloud metadata service on
// 169.254.169.254). The address is checked when the connection is made,
// after DNS, so a name that resolves to a public address when checked and
// to a private one when dialed (DNS rebinding) is refused all the same.

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/kez-lat/kez-chat/internal/netguard"
)

// ErrForbiddenOrigin reports a server the remote-origin rules refuse: not
// https, or at an address that is not public (loopback, private,
// link-local, …). See [Resolver] for when the rules apply.
var ErrForbiddenOrigin = errors.New("handles: refused to contact a server that is not public https")

// MaxRemoteRedirects is how many redirects a remote request follows; each
// must satisfy the same rules ([CheckRemoteURL], then the address at dial
// time).
const MaxRemoteRedirects = 3

// DefaultRemoteTimeout bounds one request of the client [NewRemoteClient]
// makes when given no timeout.
const DefaultRemoteTimeout = 10 * time.Second

// PublicAddr reports whether a is a public unicast address, the only kind
// a remote origin may be dialed at. Refused: loopback, private (RFC 1918,
// fc00::/7), link-local, multicast, unspecified, carrier-grade NAT,
// documentation, benchmarking and reserved ranges, addresses with a zone,
// and IPv4-mapped, NAT64 or 6to4 addresses of any of those.
func PublicAddr(a netip.Addr) bool { return netguard.PublicAddr(a) }

// CheckRemoteURL returns an error wrapping [ErrForbiddenOrigin] unless u
// may be requested as a remote origin: an absolute https URL with a host
// and no user information; a host that is an IP address must be
// [PublicAddr]. The address a name resolves to is checked when it is
// dialed ([RemoteDialControl]).
func CheckRemoteURL(u *url.URL) error {
	switch {
	case u == nil:
		return fmt.Errorf("%w: no URL", ErrForbiddenOrigin)
	case u.Scheme != "https":
		return fmt.Errorf("%w: %s is not https", ErrForbiddenOrigin, redact(u))
	case u.User != nil:
		return fmt.Errorf("%w: %s carries a user name or password", ErrForbiddenOrigin, redact(u))
	case u.Hostname() == "":
		return fmt.Errorf("%w: %s has no host", ErrForbiddenOrigin, redact(u))
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil && !PublicAddr(a) {
		return fmt.Errorf("%w: %s is at %s, which is not a public address", ErrForbiddenOrigin, redact(u), a)
	}
	return nil
}

// redact shows a URL without its user information.
func redact(u *url.URL) string {
	return fmt.Sprintf("%q", u.Redacted())
}

// RemoteDialControl is a [net.Dialer] Control function that refuses to
// connect to an address that is not [PublicAddr], with an error wrapping
// [ErrForbiddenOrigin]. It sees the address after DNS resolution, right
// before the connection is made.
func RemoteDialControl(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: cannot tell the address %q of a %s connection", ErrForbiddenOrigin, address, network)
	}
	if !PublicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s is not a public address", ErrForbiddenOrigin, ap.Addr())
	}
	return nil
}

// NewRemoteClient returns the HTTP client a [Resolver] uses for remote
// origins unless given one: it dials only public addresses (checked with
// [RemoteDialControl] at connect time), ignores proxy settings (a proxy
// would dial for it, unchecked), follows at most [MaxRemoteRedirects]
// redirects and only to URLs [CheckRemoteURL] accepts, and gives up on a
// request after timeout (0 means [DefaultRemoteTimeout]).
func NewRemoteClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = DefaultRemoteTimeout
	}
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: RemoteDialControl}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           32,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        30 * time.Second,
		TLSHandshakeTimeout:    timeout,
		ResponseHeaderTimeout:  timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{Transport: remoteTransport{tr}, Timeout: timeout, CheckRedirect: checkRemoteRedirect}
}

// remoteTransport checks every request's URL, the first one and each
// redirect, before its transport dials.
type remoteTransport struct{ base http.RoundTripper }

// RoundTrip sends req if [CheckRemoteURL] accepts its URL.
func (t remoteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := CheckRemoteURL(req.URL); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return t.base.RoundTrip(req)
}

// checkRemoteRedirect is the CheckRedirect of [NewRemoteClient].
func checkRemoteRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > MaxRemoteRedirects {
		return fmt.Errorf("%w: more than %d redirects", ErrForbiddenOrigin, MaxRemoteRedirects)
	}
	return CheckRemoteURL(req.URL)
}

// IsLocal reports whether the servers of domain are exempt from the
// remote-origin rules: domain is in LocalDomains or BaseURLs, or it is
// DefaultDomain and HomeServer is set (the home server is the user's own,
// and so is the sig-server it names).
func (r *Resolver) IsLocal(domain string) bool {
	if _, ok := r.BaseURLs[domain]; ok {
		return true
	}
	if domain == r.DefaultDomain && r.HomeServer != "" {
		return true
	}
	for _, d := range r.LocalDomains {
		if strings.EqualFold(strings.TrimSpace(d), domain) {
			return true
		}
	}
	return false
}

// ClientFor returns the HTTP client for a server that an answer about a
// handle of domain named (base is its base URL): HTTPClient for a local
// domain ([Resolver.IsLocal]), otherwise the remote client, once
// [CheckRemoteURL] accepted base. Its error wraps [ErrForbiddenOrigin].
func (r *Resolver) ClientFor(domain, base string) (*http.Client, error) {
	if r.IsLocal(domain) {
		return r.httpClient(), nil
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a URL", ErrForbiddenOrigin, base)
	}
	if err := CheckRemoteURL(u); err != nil {
		return nil, err
	}
	return r.RemoteClient(), nil
}

// httpClient is the client for configured servers and local domains: a
// copy of HTTPClient whose redirects must stay on https ([localRedirects]).
func (r *Resolver) httpClient() *http.Client {
	r.localOnce.Do(func() {
		base := r.HTTPClient
		if base == nil {
			base = http.DefaultClient
		}
		c := *base
		local := c.Transport
		if local == nil {
			local = http.DefaultTransport
		}
		remote := r.RemoteClient().Transport
		if remote == nil {
			remote = http.DefaultTransport
		}
		c.Transport = localRedirects{local: local, remote: remote}
		c.CheckRedirect = checkLocalRedirect
		r.local = &c
	})
	return r.local
}

// localRedirects sends a request to a configured server, or a redirect
// that stays on its host, with the configured transport, and a redirect
// to another host with the remote client's, which dials public addresses
// only: a server the user chose does not make the client reach one the
// user did not.
type localRedirects struct{ local, remote http.RoundTripper }

// RoundTrip sends req with the transport its host calls for.
func (t localRedirects) RoundTrip(req *http.Request) (*http.Response, error) {
	if first := firstRequest(req); first != req && !sameHost(first.URL, req.URL) {
		return t.remote.RoundTrip(req)
	}
	return t.local.RoundTrip(req)
}

// firstRequest returns the request a chain of redirects started with.
func firstRequest(req *http.Request) *http.Request {
	for req.Response != nil && req.Response.Request != nil {
		req = req.Response.Request
	}
	return req
}

func sameHost(a, b *url.URL) bool { return strings.EqualFold(a.Hostname(), b.Hostname()) }

// checkLocalRedirect is the CheckRedirect of a Resolver's client for
// configured servers: at most [MaxRemoteRedirects] redirects, each to
// https without user information; one to another host also by
// [CheckRemoteURL] (and its address is checked when it is dialed).
func checkLocalRedirect(req *http.Request, via []*http.Request) error {
	switch {
	case len(via) > MaxRemoteRedirects:
		return fmt.Errorf("%w: more than %d redirects", ErrForbiddenOrigin, MaxRemoteRedirects)
	case req.URL.Scheme != "https":
		return fmt.Errorf("%w: a redirect to %s, which is not https", ErrForbiddenOrigin, redact(req.URL))
	case req.URL.User != nil:
		return fmt.Errorf("%w: a redirect to %s, which carries a user name or password", ErrForbiddenOrigin, redact(req.URL))
	case !sameHost(via[0].URL, req.URL):
		return CheckRemoteURL(req.URL)
	}
	return nil
}

// RemoteClient returns the client for remote origins: RemoteHTTPClient,
// or one made by [NewRemoteClient] (made once). Check a URL a stranger
// chose with [CheckRemoteURL] before asking it.
func (r *Resolver) RemoteClient() *http.Client {
	if r.RemoteHTTPClient != nil {
		return r.RemoteHTTPClient
	}
	r.remoteOnce.Do(func() { r.remote = NewRemoteClient(0) })
	return r.remote
}
