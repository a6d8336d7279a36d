package files

import (
	"github.com/libp2p/go-libp2p/core/network"
	ma "github.com/multiformats/go-multiaddr"
)

// Route is the kind of path a connection to a peer takes.
type Route string

// The routes, from best to worst.
const (
	RouteDirect      Route = "direct"
	RouteHolePunched Route = "hole-punched"
	RouteRelayed     Route = "relayed"
)

// RouteOf reports the route of connection c: relayed for a connection
// through a circuit relay, else direct.
func (n *Node) RouteOf(c network.Conn) Route {
	if c == nil {
		return RouteDirect
	}
	if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err == nil {
		return RouteRelayed
	}
	return RouteDirect
}
