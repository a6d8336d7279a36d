package nattest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/libp2p/go-libp2p/p2p/protocol/holepunch"
	ma "github.com/multiformats/go-multiaddr"
)

// The test binary runs as a libp2p host inside a namespace when
// envChild names a role: "relay" (circuit relay v2 service), "listener"
// (behind NAT, reserving a slot at the relay, hole punching) or "dialer"
// (behind NAT, connecting to the listener through the relay and waiting
// for DCUtR to give a direct connection). The listener and the dialer are
// files' own node (files.NewNode, whose libp2p host they use): relay
// client, DCUtR hole punching, AutoNAT v2, and for the listener the
// node's own reservation with the relay (go-libp2p's circuit v2 client,
// not AutoRelay), as kez serve keeps it; the dialer reserves nothing, as
// kez fetch does not.
const (
	envChild  = "KEZ_NATTEST_CHILD"
	envSeed   = "KEZ_NATTEST_SEED"   // the host key's seed
	envRelay  = "KEZ_NATTEST_RELAY"  // the relay's address, ending /p2p/ID
	envTarget = "KEZ_NATTEST_TARGET" // the listener's peer ID (dialer)
	envListen = "KEZ_NATTEST_LISTEN" // the IP address to listen on
	envWait   = "KEZ_NATTEST_WAIT"   // how long the dialer waits for a direct connection
)

// p2pPort is the TCP and UDP port every child host listens on.
const p2pPort = "4001"

// echoProto echoes a stream back.
const echoProto = "/kezlab/echo/1"

// dialResult is what the dialer prints, after "RESULT ".
type dialResult struct {
	RelayedEcho bool   `json:"relayed_echo"` // a stream through the relay echoed
	Direct      bool   `json:"direct"`       // a direct connection appeared
	Remote      string `json:"remote"`       // its remote address
	Millis      int64  `json:"ms"`           // from the relayed connection to the direct one
	DirectEcho  bool   `json:"direct_echo"`  // 1 MiB echoed over it
	Err         string `json:"err,omitempty"`
}

// hostIdentity derives a host's KEZ identity from a seed, so the parent
// knows the peer IDs in advance.
func hostIdentity(seed string) *kez.Identity {
	a, b := sha256.Sum256([]byte("kezlab host "+seed)), sha256.Sum256([]byte("kezlab host 2 "+seed))
	id, err := kez.FromSeed(append(a[:], b[:]...))
	if err != nil {
		panic(err)
	}
	return id
}

// hostKey is the host key of seed in libp2p's form.
func hostKey(seed string) crypto.PrivKey {
	k, err := crypto.UnmarshalEd25519PrivateKey(hostIdentity(seed).Ed25519PrivateKey())
	if err != nil {
		panic(err)
	}
	return k
}

func hostID(seed string) peer.ID { return hostIdentity(seed).PublicKey().PeerID() }

func listenAddrs(ip string) libp2p.Option {
	return libp2p.ListenAddrStrings("/ip4/"+ip+"/tcp/"+p2pPort, "/ip4/"+ip+"/udp/"+p2pPort+"/quic-v1")
}

// childMain runs the role and returns the exit code.
func childMain(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var err error
	switch role {
	case "relay":
		err = runRelay(ctx)
	case "listener":
		err = runListener(ctx)
	case "dialer":
		err = runDialer(ctx)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	return 0
}

func runRelay(ctx context.Context) error {
	h, err := libp2p.New(libp2p.Identity(hostKey(os.Getenv(envSeed))), listenAddrs(os.Getenv(envListen)),
		libp2p.ForceReachabilityPublic(), libp2p.DisableRelay())
	if err != nil {
		return err
	}
	defer h.Close()
	// The default limits (2 min, 128 KiB a circuit) make relayed
	// connections limited, as kez-relay's are.
	r, err := relay.New(h)
	if err != nil {
		return err
	}
	defer r.Close()
	fmt.Println("READY", h.ID())
	<-ctx.Done()
	return nil
}

// natNode starts files' node behind a NAT, keeping a reservation with
// the relay if reserve.
func natNode(reserve bool) (*files.Node, peer.AddrInfo, error) {
	ri, err := peer.AddrInfoFromString(os.Getenv(envRelay))
	if err != nil {
		return nil, peer.AddrInfo{}, err
	}
	ip := os.Getenv(envListen)
	cfg := files.NodeConfig{Identity: hostIdentity(os.Getenv(envSeed)),
		ListenAddrs: []string{"/ip4/" + ip + "/tcp/" + p2pPort, "/ip4/" + ip + "/udp/" + p2pPort + "/quic-v1"}}
	if reserve {
		cfg.Relays = []peer.AddrInfo{*ri}
	}
	n, err := files.NewNode(cfg)
	return n, *ri, err
}

func runListener(ctx context.Context) error {
	n, _, err := natNode(true)
	if err != nil {
		return err
	}
	defer n.Close()
	n.Host().SetStreamHandler(echoProto, func(s network.Stream) {
		io.Copy(s, s)
		s.Close()
	})
	// Ready once the node holds its reservation: a circuit address.
	for {
		as, changed := n.RelayAddrs()
		if len(as) > 0 {
			fmt.Println("READY", as[0])
			<-ctx.Done()
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("stopped before a reservation")
		case <-changed:
		}
	}
}

func runDialer(ctx context.Context) error {
	n, ri, err := natNode(false)
	if err != nil {
		return err
	}
	defer n.Close()
	h := n.Host()
	target, err := peer.Decode(os.Getenv(envTarget))
	if err != nil {
		return err
	}
	wait, err := time.ParseDuration(os.Getenv(envWait))
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+wait)
	defer cancel()
	// DCUtR answers only once the host knows a public address of its own,
	// which identify with the relay gives it.
	if err := h.Connect(ctx, ri); err != nil {
		return fmt.Errorf("connecting to the relay: %w", err)
	}
	for !hasProtocol(h, string(holepunch.Protocol)) {
		select {
		case <-ctx.Done():
			return errors.New("DCUtR never started: no public address observed")
		case <-time.After(50 * time.Millisecond):
		}
	}
	sub, err := h.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return err
	}
	defer sub.Close()
	circuit, err := ma.NewMultiaddr(os.Getenv(envRelay) + "/p2p-circuit")
	if err != nil {
		return err
	}
	var res dialResult
	start := time.Now()
	if err := h.Connect(ctx, peer.AddrInfo{ID: target, Addrs: []ma.Multiaddr{circuit}}); err != nil {
		return fmt.Errorf("connecting through the relay: %w", err)
	}
	res.RelayedEcho = echo(network.WithAllowLimitedConn(ctx, "test"), h, target, 1<<10) == nil
	timer := time.NewTimer(wait)
	defer timer.Stop()
wait:
	for directConn(h, target) == nil {
		select {
		case <-sub.Out():
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	if c := directConn(h, target); c != nil {
		res.Direct, res.Millis = true, time.Since(start).Milliseconds()
		res.Remote = c.RemoteMultiaddr().String()
		if err := echo(ctx, h, target, 1<<20); err != nil {
			res.Err = err.Error()
		} else {
			res.DirectEcho = true
		}
	}
	b, _ := json.Marshal(res)
	fmt.Println("RESULT", string(b))
	return nil
}

// directConn returns a connection to p that is not through a relay.
func directConn(h host.Host, p peer.ID) network.Conn {
	for _, c := range h.Network().ConnsToPeer(p) {
		if _, err := c.RemoteMultiaddr().ValueForProtocol(ma.P_CIRCUIT); err != nil && !c.Stat().Limited {
			return c
		}
	}
	return nil
}

func hasProtocol(h host.Host, p string) bool {
	for _, q := range h.Mux().Protocols() {
		if string(q) == p {
			return true
		}
	}
	return false
}

// echo sends n bytes to p's echo handler and checks what comes back.
func echo(ctx context.Context, h host.Host, p peer.ID, n int) error {
	s, err := h.NewStream(ctx, p, echoProto)
	if err != nil {
		return err
	}
	defer s.Close()
	sent := bytes.Repeat([]byte("kezlab"), n/6+1)[:n]
	go func() {
		s.Write(sent)
		s.CloseWrite()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		return err
	}
	if !bytes.Equal(got, sent) {
		return fmt.Errorf("echoed %d bytes, not the %d sent", len(got), n)
	}
	return nil
}
