// Package addrs checks and orders the libp2p addresses KEZ messages carry
// (signalling answers, have records, tickets): every parser of untrusted
// address bytes goes through [Check], so they all accept the same set.
//
// An address is a multiaddr in canonical binary form without a /p2p
// component — the peer is always named by a key elsewhere in the message —
// except for a circuit address, which reaches a peer through a relay:
// <relay's transport address>/p2p/<relay's PeerID>/p2p-circuit. The relay's
// PeerID is part of the address (libp2p authenticates the relay with it);
// the peer behind the relay is still the key the message names, so a
// circuit address through the wrong relay can only make a dial fail.
package addrs

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

const (
	// MaxLen bounds the binary form of one address (a circuit address over
	// QUIC with an ed25519 relay id is about 80 bytes; lengths stay one
	// byte on the wire).
	MaxLen = 255
	// MaxAddrs bounds the addresses of one message.
	MaxAddrs = 16
)

// ErrBad reports bytes that are not an acceptable address.
var ErrBad = errors.New("files: bad address")

// Check parses b as a multiaddr in canonical binary form and returns it:
// 1 to [MaxLen] bytes, re-encoding gives the same bytes, and no /p2p
// component except a circuit address's relay part,
// <transport addr>/p2p/<relay id>/p2p-circuit, exactly once, at the end.
// Errors wrap [ErrBad].
func Check(b []byte) (ma.Multiaddr, error) {
	if len(b) == 0 || len(b) > MaxLen {
		return nil, fmt.Errorf("%w: an address is 1 to %d bytes, got %d", ErrBad, MaxLen, len(b))
	}
	a, err := ma.NewMultiaddrBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%w: not a multiaddr: %w", ErrBad, err)
	}
	if !bytes.Equal(a.Bytes(), b) {
		return nil, fmt.Errorf("%w: a multiaddr not in its canonical form", ErrBad)
	}
	if err := checkComponents(a); err != nil {
		return nil, err
	}
	return a, nil
}

// checkComponents enforces the /p2p and /p2p-circuit rules on a parsed
// address.
func checkComponents(a ma.Multiaddr) error {
	n := len(a)
	circuit := n >= 3 && a[n-1].Code() == ma.P_CIRCUIT && a[n-2].Code() == ma.P_P2P
	for i, c := range a {
		switch c.Code() {
		case ma.P_P2P:
			if !circuit || i != n-2 {
				return fmt.Errorf("%w: an address names a peer (%s); only a circuit address names its relay", ErrBad, a)
			}
		case ma.P_CIRCUIT:
			if !circuit || i != n-1 {
				return fmt.Errorf("%w: a circuit address is <relay address>/p2p/<relay>/p2p-circuit, once, at the end (%s)", ErrBad, a)
			}
		}
	}
	return nil
}

// IsCircuit reports whether a is a circuit (relayed) address: it ends in
// /p2p-circuit.
func IsCircuit(a ma.Multiaddr) bool {
	return len(a) > 0 && a[len(a)-1].Code() == ma.P_CIRCUIT
}

// rank orders addresses: public direct, private direct, loopback, circuit.
func rank(a ma.Multiaddr) int {
	switch {
	case IsCircuit(a):
		return 3
	case manet.IsIPLoopback(a):
		return 2
	case manet.IsPublicAddr(a):
		return 0
	}
	return 1
}

// Order returns the addresses a node announces, from its own: those [Check]
// accepts and that are not unspecified (0.0.0.0, ::), without duplicates,
// public direct ones first, then private direct, then loopback, then
// circuit addresses, at most [MaxAddrs]. The input is not modified.
func Order(as []ma.Multiaddr) []ma.Multiaddr {
	out := make([]ma.Multiaddr, 0, len(as))
	for _, a := range as {
		if len(a) == 0 || manet.IsIPUnspecified(a) || ma.Contains(out, a) {
			continue
		}
		if _, err := Check(a.Bytes()); err != nil {
			continue
		}
		out = append(out, a)
	}
	slices.SortStableFunc(out, func(a, b ma.Multiaddr) int { return rank(a) - rank(b) })
	if len(out) > MaxAddrs {
		// Keep room for circuit addresses: a node behind NAT is reachable
		// only through them, however many direct ones it lists.
		var circuits []ma.Multiaddr
		for _, a := range out {
			if IsCircuit(a) {
				circuits = append(circuits, a)
			}
		}
		direct := out[:len(out)-len(circuits)]
		keep := min(len(circuits), max(MaxAddrs/2, MaxAddrs-len(direct)))
		out = append(slices.Clone(direct[:min(len(direct), MaxAddrs-keep)]), circuits[:keep]...)
	}
	return out
}
