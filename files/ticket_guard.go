package files

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"

	"github.com/kez-lat/kez-chat/internal/netguard"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// ErrLocalAddress reports a ticket's sig-server or address on the
// fetcher's own machine or network (loopback, private, link-local and
// the other ranges of internal/netguard), which [FetchTicket] does not
// contact unless [TicketFetchConfig.AllowLocal] is set.
var ErrLocalAddress = errors.New("files: the ticket names a loopback or private address")

// TicketHTTPTimeout bounds each request [FetchTicket] sends to a ticket's
// sig-server with its own HTTP client.
const TicketHTTPTimeout = 15 * time.Second

// ticketHTTPClient is the client that reads a ticket's sig-server: cfg's,
// else one that ignores proxy settings, follows no redirect, gives up
// after TicketHTTPTimeout and, unless cfg.AllowLocal, dials public
// addresses only (checked on the address dialled, so a name that
// resolves to 127.0.0.1 is refused too).
func ticketHTTPClient(cfg *TicketFetchConfig) *http.Client {
	if cfg.HTTPClient != nil {
		return cfg.HTTPClient
	}
	d := &net.Dialer{Timeout: TicketHTTPTimeout}
	if !cfg.AllowLocal {
		d.Control = publicDialOnly
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    TicketHTTPTimeout,
		ResponseHeaderTimeout:  TicketHTTPTimeout,
		MaxResponseHeaderBytes: 16 << 10,
	}
	return &http.Client{Transport: tr, Timeout: TicketHTTPTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// publicDialOnly is a net.Dialer's Control refusing non-public addresses.
func publicDialOnly(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil || !netguard.PublicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrLocalAddress, address)
	}
	return nil
}

// localMultiaddr reports whether a has an IP component that is not
// public (for a circuit address: the relay's). DNS names are judged once
// resolved, by [ticketGater].
func localMultiaddr(a ma.Multiaddr) bool {
	for _, c := range a {
		switch c.Protocol().Code {
		case ma.P_IP4, ma.P_IP6:
			ip, ok := netip.AddrFromSlice(c.RawValue())
			if !ok || !netguard.PublicAddr(ip) {
				return true
			}
		}
	}
	return false
}

// publicTicket returns t with only its public addresses, unless
// cfg.AllowLocal; ErrLocalAddress if none is left.
func publicTicket(t *Ticket, cfg *TicketFetchConfig) (*Ticket, error) {
	if cfg.AllowLocal {
		return t, nil
	}
	out := *t
	out.Addrs = nil
	for _, a := range t.Addrs {
		if !localMultiaddr(a) {
			out.Addrs = append(out.Addrs, a)
		}
	}
	if len(out.Addrs) == 0 {
		return nil, fmt.Errorf("%w: all %d of its addresses are", ErrLocalAddress, len(t.Addrs))
	}
	return &out, nil
}

// ticketGater keeps the fetcher's node from dialling non-public addresses
// (ticket addresses once DNS names are resolved, a circuit's relay,
// addresses the device announces), except the fetcher's own relays at
// the addresses it configured.
type ticketGater struct {
	own map[peer.ID][]ma.Multiaddr
}

func newTicketGater(relays []peer.AddrInfo) *ticketGater {
	g := &ticketGater{own: map[peer.ID][]ma.Multiaddr{}}
	for _, r := range relays {
		g.own[r.ID] = append(g.own[r.ID], r.Addrs...)
	}
	return g
}

func (g *ticketGater) InterceptPeerDial(peer.ID) bool { return true }

func (g *ticketGater) InterceptAddrDial(p peer.ID, a ma.Multiaddr) bool {
	if !localMultiaddr(a) {
		return true
	}
	for _, o := range g.own[p] {
		if o.Equal(a) {
			return true
		}
	}
	return false
}

func (g *ticketGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

func (g *ticketGater) InterceptSecured(network.Direction, peer.ID, network.ConnMultiaddrs) bool {
	return true
}

func (g *ticketGater) InterceptUpgraded(network.Conn) (bool, control.DisconnectReason) {
	return true, 0
}
