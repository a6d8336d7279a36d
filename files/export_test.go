package files

import (
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// RelayForTest starts a real circuit relay v2 on loopback for the
// external tests and returns it with its addresses (closed by t.Cleanup);
// close stops it early.
func RelayForTest(t testing.TB) (info peer.AddrInfo, close func()) {
	r := startRelay(t, nil)
	return r.info(), r.close
}

// NoDirectAddrsForTest makes a node announce none of its own addresses.
var NoDirectAddrsForTest = noDirectAddrs

// AnnounceForTest makes a node announce addrs instead of its own.
func AnnounceForTest(addrs ...string) libp2p.Option {
	return libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr {
		var out []ma.Multiaddr
		for _, a := range addrs {
			out = append(out, ma.StringCast(a))
		}
		return out
	})
}

// ReservedForTest waits until n holds a relay reservation and returns its
// circuit addresses.
func ReservedForTest(t testing.TB, n *Node) []ma.Multiaddr { return reserved(t, n) }
