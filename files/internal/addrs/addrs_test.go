package addrs

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"testing"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// testPeer is a fixed PeerID made from a seed byte.
func testPeer(t testing.TB, seed byte) peer.ID {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
	k, err := crypto.UnmarshalEd25519PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func mustAddr(t testing.TB, s string) ma.Multiaddr {
	t.Helper()
	a, err := ma.NewMultiaddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestCheck(t *testing.T) {
	relay, other := testPeer(t, 1).String(), testPeer(t, 2).String()
	ok := []string{
		"/ip4/192.0.2.1/tcp/4001",
		"/ip4/192.0.2.1/udp/4001/quic-v1",
		"/ip6/2001:db8::1/tcp/4001",
		"/dns4/relay.example/tcp/4002",
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay + "/p2p-circuit",
		"/ip6/2001:db8::1/udp/4002/quic-v1/p2p/" + relay + "/p2p-circuit",
	}
	for _, s := range ok {
		a := mustAddr(t, s)
		got, err := Check(a.Bytes())
		if err != nil {
			t.Errorf("Check(%s): %v", s, err)
			continue
		}
		if !got.Equal(a) {
			t.Errorf("Check(%s) = %s", s, got)
		}
	}
	bad := []string{
		"/ip4/192.0.2.1/tcp/4001/p2p/" + other,                                                  // names a peer
		"/p2p/" + relay + "/p2p-circuit",                                                        // no transport address for the relay
		"/ip4/192.0.2.1/tcp/4002/p2p-circuit",                                                   // circuit without the relay's id
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay + "/p2p-circuit/p2p/" + other,                    // the far peer named
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay + "/p2p-circuit/ip4/192.0.2.2/tcp/1",             // circuit not last
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay + "/p2p-circuit/p2p/" + other + "/p2p-circuit",   // two circuits
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay + "/p2p/" + other + "/p2p-circuit",               // two peers
		"/ip4/192.0.2.1/tcp/4002/p2p-circuit/p2p/" + relay,                                      // swapped
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay + "/p2p-circuit/ip4/192.0.2.2/tcp/1/p2p-circuit", // two circuits
	}
	for _, s := range bad {
		if _, err := Check(mustAddr(t, s).Bytes()); !errors.Is(err, ErrBad) {
			t.Errorf("Check(%s) = %v, want ErrBad", s, err)
		}
	}
	one := mustAddr(t, ok[0]).Bytes()
	raw := map[string][]byte{
		"empty":         nil,
		"garbage":       {0xff, 0xff, 0xff},
		"non-minimal":   append([]byte{0x84, 0x00}, one[1:]...), // /ip4 as a two-byte varint
		"truncated":     one[:len(one)-1],
		"trailing byte": append(bytes.Clone(one), 0),
		"too long":      bytes.Repeat([]byte{0x04, 1, 2, 3, 4}, MaxLen/5+1),
	}
	for name, b := range raw {
		if _, err := Check(b); !errors.Is(err, ErrBad) {
			t.Errorf("Check(%s) = %v, want ErrBad", name, err)
		}
	}
}

// The longest realistic address, a circuit over QUIC through an IPv6 relay
// with an ed25519 id, fits well within MaxLen; one byte past it does not.
func TestCheckLengths(t *testing.T) {
	a := mustAddr(t, "/ip6/2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/udp/65535/quic-v1/p2p/"+testPeer(t, 1).String()+"/p2p-circuit")
	if n := len(a.Bytes()); n > 100 {
		t.Fatalf("a circuit address is %d bytes", n)
	}
	// /dns4/<name> grows to exactly MaxLen and one past it.
	for _, n := range []int{MaxLen, MaxLen + 1} {
		name := bytes.Repeat([]byte{'a'}, n-6) // code 54 (1 byte) + length varint (2 bytes) + /tcp/1 (3 bytes)
		a := mustAddr(t, "/dns4/"+string(name)+"/tcp/1")
		l := len(a.Bytes())
		_, err := Check(a.Bytes())
		if l != n || (l <= MaxLen) != (err == nil) {
			t.Errorf("%d bytes: %v", l, err)
		}
	}
}

func TestIsCircuit(t *testing.T) {
	if IsCircuit(mustAddr(t, "/ip4/192.0.2.1/tcp/1")) {
		t.Error("a direct address is a circuit")
	}
	if !IsCircuit(mustAddr(t, "/ip4/192.0.2.1/tcp/1/p2p/"+testPeer(t, 1).String()+"/p2p-circuit")) {
		t.Error("a circuit address is not")
	}
	if IsCircuit(nil) {
		t.Error("an empty address is a circuit")
	}
}

func TestOrder(t *testing.T) {
	relay := testPeer(t, 1).String()
	circ := "/ip4/203.0.113.9/tcp/4002/p2p/" + relay + "/p2p-circuit"
	in := []ma.Multiaddr{
		mustAddr(t, circ),
		mustAddr(t, "/ip4/127.0.0.1/tcp/1"),
		mustAddr(t, "/ip4/0.0.0.0/tcp/2"),
		mustAddr(t, "/ip4/192.168.1.2/tcp/3"),
		mustAddr(t, "/ip4/8.8.8.8/tcp/4"),
		mustAddr(t, "/ip4/127.0.0.1/tcp/1"),
		mustAddr(t, "/ip4/127.0.0.1/tcp/5/p2p/"+testPeer(t, 2).String()),
		mustAddr(t, "/ip4/0.0.0.0/tcp/4002/p2p/"+relay+"/p2p-circuit"),
		mustAddr(t, circ),
	}
	var got []string
	for _, a := range Order(in) {
		got = append(got, a.String())
	}
	want := []string{"/ip4/8.8.8.8/tcp/4", "/ip4/192.168.1.2/tcp/3", "/ip4/127.0.0.1/tcp/1", circ}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if in[0].String() != circ || len(in) != 9 {
		t.Error("Order changed its input")
	}
}

// A node with many direct addresses still announces its circuit ones, and
// a node with only circuit addresses announces MaxAddrs of them.
func TestOrderKeepsCircuits(t *testing.T) {
	relay := testPeer(t, 1).String()
	var direct, circuits []ma.Multiaddr
	for i := range 40 {
		direct = append(direct, mustAddr(t, fmt.Sprintf("/ip4/10.0.0.1/tcp/%d", 1000+i)))
		circuits = append(circuits, mustAddr(t, fmt.Sprintf("/ip4/203.0.113.9/tcp/%d/p2p/%s/p2p-circuit", 1000+i, relay)))
	}
	count := func(as []ma.Multiaddr) (d, c int) {
		for _, a := range as {
			if IsCircuit(a) {
				c++
			} else {
				d++
			}
		}
		return
	}
	cases := []struct {
		in         []ma.Multiaddr
		wantD, wtC int
	}{
		{direct, MaxAddrs, 0},
		{circuits, 0, MaxAddrs},
		{append(clone(direct), circuits[:2]...), MaxAddrs - 2, 2},
		{append(clone(direct), circuits...), MaxAddrs / 2, MaxAddrs / 2},
		{append(clone(direct[:3]), circuits...), 3, MaxAddrs - 3},
	}
	for i, c := range cases {
		out := Order(c.in)
		d, n := count(out)
		if d != c.wantD || n != c.wtC || len(out) > MaxAddrs {
			t.Errorf("case %d: %d direct and %d circuit, want %d and %d", i, d, n, c.wantD, c.wtC)
		}
		if d > 0 && n > 0 && IsCircuit(out[0]) {
			t.Errorf("case %d: a circuit address first", i)
		}
	}
}

func clone(as []ma.Multiaddr) []ma.Multiaddr { return append([]ma.Multiaddr(nil), as...) }

// FuzzCheck: Check never panics, every error wraps ErrBad, and what it
// accepts is within MaxLen, re-encodes to the same bytes and names a peer
// only as a circuit's relay.
func FuzzCheck(f *testing.F) {
	relay := testPeer(f, 1).String()
	for _, s := range []string{
		"/ip4/192.0.2.1/tcp/4001",
		"/ip4/192.0.2.1/udp/4001/quic-v1",
		"/ip6/2001:db8::1/tcp/4001",
		"/dns4/relay.example/tcp/4002",
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay + "/p2p-circuit",
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay,
		"/ip4/192.0.2.1/tcp/4002/p2p-circuit",
		"/ip4/192.0.2.1/tcp/4002/p2p/" + relay + "/p2p-circuit/p2p/" + relay + "/p2p-circuit",
	} {
		f.Add(mustAddr(f, s).Bytes())
	}
	f.Add([]byte{})
	f.Add([]byte{0x84, 0x00, 192, 0, 2, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := Check(b)
		if err != nil {
			if !errors.Is(err, ErrBad) {
				t.Fatalf("error %v does not wrap ErrBad", err)
			}
			return
		}
		if len(b) > MaxLen || !bytes.Equal(a.Bytes(), b) {
			t.Fatalf("accepted %x (%d bytes) as %s", b, len(b), a)
		}
		peers := 0
		for _, c := range a {
			if c.Code() == ma.P_P2P {
				peers++
			}
		}
		if peers > 1 || (peers == 1) != IsCircuit(a) {
			t.Fatalf("accepted %s", a)
		}
		Order([]ma.Multiaddr{a, a})
	})
}
