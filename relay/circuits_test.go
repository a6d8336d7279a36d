package relay_test

import (
	"crypto/ed25519"
	"io"
	"testing"

	"github.com/kez-lat/kez-chat/relay"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// newPeerAt is newPeer listening (and so dialling, TCP ports being
// reused) on the loopback address ip: 127.0.0.2 is another IP address
// than 127.0.0.1 to the relay.
func newPeerAt(t *testing.T, ip string) host.Host {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	priv, err := crypto.UnmarshalEd25519PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings("/ip4/"+ip+"/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.EnableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// A stranger at one IP address, with as many peer ids as it likes, opened
// MaxCircuits circuits to a peer behind NAT and held them: nobody else
// could reach that peer through the relay (the limit was per peer id,
// source or target). One address now holds at most MaxCircuitsPerIPToPeer
// circuits to one peer and MaxCircuitsPerIP in all, so the slots left are
// for others; a closed circuit gives its slot back.
func TestCircuitSlotsHeldByOneAddress(t *testing.T) {
	ctx := testCtx(t)
	r, base := startRelay(t, relay.Config{MaxCircuits: 3, MaxCircuitsPerIPToPeer: 2, MaxCircuitsPerIP: 3})
	victim, other := newPeer(t, nil), newPeer(t, nil)
	for _, h := range []host.Host{victim, other} {
		if _, err := reserve(ctx, h, r); err != nil {
			t.Fatal(err)
		}
		h.SetStreamHandler(testProto, func(s network.Stream) { io.Copy(io.Discard, s); s.Close() })
	}
	// Mallory, at 127.0.0.1, with a fresh peer id for each circuit.
	var held []host.Host
	for i := range 2 {
		m := newPeer(t, nil)
		if _, err := through(ctx, t, m, r, victim.ID()); err != nil {
			t.Fatalf("mallory's circuit %d: %v", i, err)
		}
		held = append(held, m)
	}
	if _, err := through(ctx, t, newPeer(t, nil), r, victim.ID()); err == nil {
		t.Fatal("a third circuit from 127.0.0.1 to the victim")
	}
	waitMetric(t, base, `kez_relay_refused_total{reason="circuit_ip_limit"}`, 1)
	// Someone else, at 127.0.0.2, still reaches the victim.
	if _, err := through(ctx, t, newPeerAt(t, "127.0.0.2"), r, victim.ID()); err != nil {
		t.Fatalf("another address's circuit to the victim: %v", err)
	}
	// 127.0.0.1 holds 2 of its 3; one more to another peer, then none.
	if _, err := through(ctx, t, newPeer(t, nil), r, other.ID()); err != nil {
		t.Fatalf("a circuit from 127.0.0.1 to another peer: %v", err)
	}
	if _, err := through(ctx, t, newPeer(t, nil), r, other.ID()); err == nil {
		t.Fatal("a fourth circuit from 127.0.0.1")
	}
	waitMetric(t, base, `kez_relay_refused_total{reason="circuit_ip_limit"}`, 2)
	// A closed circuit gives its slot back (its hop stream is closed
	// before go-libp2p counts the circuit closed).
	held[0].Close()
	waitMetric(t, base, `libp2p_relaysvc_connections_total{type="closed"}`, 1)
	if _, err := through(ctx, t, newPeer(t, nil), r, victim.ID()); err != nil {
		t.Fatalf("a circuit in the slot of a closed one: %v", err)
	}
}
