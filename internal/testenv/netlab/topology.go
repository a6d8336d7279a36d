package netlab

import (
	"fmt"
	"testing"
)

// Addresses of a [Topology]. The "public" net is 192.0.0.128/25, part of
// the IETF protocol assignments block (RFC 6890): manet.IsPublicAddr
// takes it for public (libp2p's hole punching ignores private addresses)
// and it is routed nowhere on the internet, so nothing a test sends can
// reach anyone. 192.0.0.0/26 would not do: go-multiaddr counts it
// unroutable.
const (
	PublicNet  = "192.0.0.128/25"
	PubAddr    = "192.0.0.129" // the servers' address in Pub
	PubAddr2   = "192.0.0.130" // a second address of Pub (a second observer)
	OpenAddr   = "192.0.0.160" // the Open host's address
	publicMask = "/25"
)

// Topology is the network the NAT tests share: a public net with the
// servers' namespace (Pub) and a host with a public address and no NAT
// (Open), and sites, each a host behind its own router doing NAT:
//
//	Pub 192.0.0.129, .130 ── bridge ─┬─ Open 192.0.0.160
//	                                 ├─ site a router 192.0.0.140 ── 10.0.1.1 │ 10.0.1.2 host a
//	                                 └─ site b router 192.0.0.141 ── 10.0.2.1 │ 10.0.2.2 host b
//
// Nothing is routed outside it.
type Topology struct {
	Lab   *Lab
	Pub   *Namespace
	Open  *Namespace
	Sites []*Site
}

// Site is a host behind a NAT router.
type Site struct {
	Name     string     // "a", "b"…
	Router   *Namespace // doing NAT on its interface "wan"
	Host     *Namespace // its default route goes through Router
	PublicIP string     // the router's outside address
	HostIP   string     // the host's inside address
	RouterIP string     // the router's inside address

	pub  *Namespace
	link string // the router's link's name in Pub
	nat  NAT    // the router's NAT now
}

// NewTopology builds a topology with one site per entry of nats, named
// "a", "b"… in order, each router doing that NAT. It skips or fails the
// test as [New] does.
func NewTopology(t testing.TB, nats ...NAT) *Topology {
	t.Helper()
	if len(nats) > 20 {
		t.Fatalf("netlab: %d sites; at most 20", len(nats))
	}
	lab := New(t)
	tp := &Topology{Lab: lab, Pub: lab.Namespace("pub"), Open: lab.Namespace("open")}
	tp.Pub.Bridge("br0", PubAddr+publicMask)
	tp.Pub.AddAddr("br0", PubAddr2+publicMask)
	lab.Link(tp.Open, "eth0", OpenAddr+publicMask, tp.Pub, "to-open", "")
	tp.Pub.Enslave("to-open", "br0")
	for i, mode := range nats {
		name := string(rune('a' + i))
		s := &Site{
			Name:     name,
			Router:   lab.Namespace(name + "-router"),
			Host:     lab.Namespace(name + "-host"),
			PublicIP: fmt.Sprintf("192.0.0.%d", 140+i),
			RouterIP: fmt.Sprintf("10.0.%d.1", i+1),
			HostIP:   fmt.Sprintf("10.0.%d.2", i+1),
			pub:      tp.Pub,
			link:     "to-" + name,
		}
		lab.Link(s.Router, "wan", s.PublicIP+publicMask, tp.Pub, s.link, "")
		tp.Pub.Enslave(s.link, "br0")
		lab.Link(s.Router, "lan", s.RouterIP+"/24", s.Host, "eth0", s.HostIP+"/24")
		s.Host.DefaultRoute(s.RouterIP)
		s.SetNAT(mode)
		tp.Sites = append(tp.Sites, s)
	}
	return tp
}

// SetNAT changes the site's NAT (see [Namespace.SetNAT]).
func (s *Site) SetNAT(mode NAT) {
	s.Router.lab.t.Helper()
	s.Router.SetNAT("wan", mode)
	s.nat = mode
}

// NAT returns the site's NAT now.
func (s *Site) NAT() NAT { return s.nat }

// Limit shapes the site's link to the public net to bytesPerSec each way
// (tbf on both ends; 0 removes the limits), as a home connection.
func (s *Site) Limit(bytesPerSec int64) {
	s.Router.lab.t.Helper()
	s.Router.Limit("wan", bytesPerSec)
	s.pub.Limit(s.link, bytesPerSec)
}

// LimitOpen shapes the Open host's link each way as [Site.Limit] does.
func (tp *Topology) LimitOpen(bytesPerSec int64) {
	tp.Lab.t.Helper()
	tp.Open.Limit("eth0", bytesPerSec)
	tp.Pub.Limit("to-open", bytesPerSec)
}
