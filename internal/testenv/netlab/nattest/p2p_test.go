package nattest

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/netlab"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// startChild runs this test binary as a libp2p host with role in
// ns, and waits for it to say READY.
func startChild(t testing.TB, ns *netlab.Namespace, name, role string, env ...string) *netlab.Proc {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{envChild + "=" + role}, env...)...)
	p := netlab.StartCmd(t, name, cmd)
	if role != "dialer" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := p.WaitLine(ctx, "READY"); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// dial runs a dialer in site b connecting to a listener in site a through
// a relay in Pub and returns what it saw.
func dial(t testing.TB, tp *netlab.Topology, wait time.Duration) dialResult {
	t.Helper()
	relayAddr := "/ip4/" + netlab.PubAddr + "/udp/" + p2pPort + "/quic-v1/p2p/" + hostID("relay").String()
	startChild(t, tp.Pub, "relay", "relay", envSeed+"=relay", envListen+"="+netlab.PubAddr)
	a, b := tp.Sites[0], tp.Sites[1]
	startChild(t, a.Host, "listener", "listener", envSeed+"=listener", envListen+"="+a.HostIP, envRelay+"="+relayAddr)
	d := startChild(t, b.Host, "dialer", "dialer", envSeed+"=dialer", envListen+"="+b.HostIP, envRelay+"="+relayAddr,
		envTarget+"="+hostID("listener").String(), envWait+"="+wait.String())
	res := waitResult(t, d)
	t.Logf("dialer: %+v", res)
	return res
}

// waitResult waits for a dialer's result.
func waitResult(t testing.TB, d *netlab.Proc) dialResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	line, err := d.WaitLine(ctx, "RESULT ")
	if err != nil {
		t.Fatal(err)
	}
	_, js, _ := strings.Cut(line, "RESULT ")
	var res dialResult
	if err := json.Unmarshal([]byte(js), &res); err != nil {
		t.Fatalf("the dialer's result %q: %v", line, err)
	}
	return res
}

// Two files' nodes behind endpoint-independent NATs, without the rest of
// kez, meet through the relay and DCUtR gives them a direct connection to
// the other site's public address: the topology and its addresses let
// hole punching work.
func TestLibp2pHolePunchThroughEndpointIndependentNATs(t *testing.T) {
	tp := netlab.NewTopology(t, netlab.EndpointIndependent, netlab.EndpointIndependent)
	res := dial(t, tp, 20*time.Second)
	if !res.RelayedEcho {
		t.Error("no stream through the relay")
	}
	if !res.Direct || !res.DirectEcho {
		t.Fatalf("no working direct connection: %+v", res)
	}
	remote, err := ma.NewMultiaddr(res.Remote)
	if err != nil {
		t.Fatal(err)
	}
	ip, err := manet.ToIP(remote)
	if err != nil || ip.String() != tp.Sites[0].PublicIP || !manet.IsPublicAddr(remote) {
		t.Errorf("the direct connection goes to %s, want site a's public address %s", res.Remote, tp.Sites[0].PublicIP)
	}
}

// Behind a symmetric NAT the punch cannot meet the mapping the relay
// observed: the hosts stay on the relay, which keeps working.
func TestLibp2pSymmetricNATStaysRelayed(t *testing.T) {
	tp := netlab.NewTopology(t, netlab.EndpointIndependent, netlab.Symmetric)
	res := dial(t, tp, 8*time.Second)
	if !res.RelayedEcho {
		t.Error("no stream through the relay")
	}
	if res.Direct {
		t.Errorf("a direct connection through a symmetric NAT: %+v", res)
	}
}
