package nattest

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/netlab"
)

// Figures of files across NATs, over the lab's topology (root needed):
//
//	go test -run '^$' -bench NAT -benchtime 1x ./internal/testenv/netlab/nattest
//
// Each benchmark runs its measurement once whatever b.N is, and reports
// the figures with b.ReportMetric.

// punchAttempts is how many hole punches the p50 is taken over.
const punchAttempts = 7

// BenchmarkNATHolePunchTime: the time from a relayed connection to a
// working hole-punched one between two files' nodes (files.NewNode, the
// listener holding a reservation with the relay), each behind an
// endpoint-independent NAT; the median over punchAttempts dialers.
func BenchmarkNATHolePunchTime(b *testing.B) {
	tp := netlab.NewTopology(b, netlab.EndpointIndependent, netlab.EndpointIndependent)
	relayAddr := "/ip4/" + netlab.PubAddr + "/udp/" + p2pPort + "/quic-v1/p2p/" + hostID("relay").String()
	startChild(b, tp.Pub, "relay", "relay", envSeed+"=relay", envListen+"="+netlab.PubAddr)
	a, bs := tp.Sites[0], tp.Sites[1]
	startChild(b, a.Host, "listener", "listener", envSeed+"=listener", envListen+"="+a.HostIP, envRelay+"="+relayAddr)
	var ms []float64
	for i := range punchAttempts {
		d := startChild(b, bs.Host, fmt.Sprintf("dialer %d", i), "dialer", envSeed+"=dialer"+fmt.Sprint(i), envListen+"="+bs.HostIP,
			envRelay+"="+relayAddr, envTarget+"="+hostID("listener").String(), envWait+"=20s")
		res := waitResult(b, d)
		if !res.Direct || !res.DirectEcho {
			b.Fatalf("attempt %d: no hole-punched connection: %+v", i, res)
		}
		ms = append(ms, float64(res.Millis))
	}
	slices.Sort(ms)
	b.ReportMetric(ms[len(ms)/2], "p50-ms")
	b.ReportMetric(ms[len(ms)-1], "max-ms")
	b.Logf("time to a hole-punched connection over %d attempts (ms): %v", len(ms), ms)
}

// Link and relay rates of BenchmarkNATThroughput: every site and the Open
// host have a 100 Mbit/s link (tbf, each way), and the relay gives each
// circuit 4 MiB/s.
const (
	linkRate    = 100_000_000 / 8
	circuitRate = 4 << 20
)

// BenchmarkNATThroughput: kez fetch of the same file directly (from a
// public host), over a hole-punched connection and through the relay
// (bob's NAT made symmetric), each rate taken as the bytes of a large
// fetch less a small one over the time between them (which removes
// locating, connecting and punching).
func BenchmarkNATThroughput(b *testing.B) {
	p := startPeople(b, stackOptions{RelayArgs: []string{"--circuit-rate", fmt.Sprint(circuitRate)}}, netlab.EndpointIndependent, netlab.EndpointIndependent)
	carol := p.s.NewUser(b, "carol", p.tp.Open)
	for _, s := range p.tp.Sites {
		s.Limit(linkRate)
	}
	p.tp.LimitOpen(linkRate)
	const small, large = 1 << 20, 48 << 20
	for _, u := range []*user{p.alice, carol} {
		u.MustRun(b, "share", writeFile(b, "small.bin", small, 4), "--name", "small.bin")
		u.MustRun(b, "share", writeFile(b, "large.bin", large, 5), "--name", "large.bin")
	}
	carol.Serve(b)
	p.alice.ServeRelayed(b)
	direct := fetchRate(b, p.bob, "carol", "directly", "large.bin", large, small)
	punched := fetchRate(b, p.bob, "alice", "hole-punched", "large.bin", large, small)
	// Through the relay at 4 MiB/s a 48 MiB file takes 12 s: 16 MiB do.
	p.tp.Sites[1].SetNAT(netlab.Symmetric)
	p.tp.Sites[1].Router.FlushConntrack()
	p.alice.MustRun(b, "share", writeFile(b, "mid.bin", 16<<20, 6), "--name", "mid.bin")
	relayed := fetchRate(b, p.bob, "alice", "through the relay", "mid.bin", 16<<20, small)
	b.ReportMetric(direct/1e6, "direct-MB/s")
	b.ReportMetric(punched/1e6, "punched-MB/s")
	b.ReportMetric(relayed/1e6, "relayed-MB/s")
	b.ReportMetric(punched/direct, "punched/direct")
	b.ReportMetric(relayed/direct, "relayed/direct")
	b.ReportMetric(relayed/circuitRate, "relayed/circuit-rate")
}

// fetchRate has bob fetch owner's small.bin (small bytes) and name (size
// bytes), each saying route, and returns the rate of the difference:
// what locating, connecting and punching take is in both.
func fetchRate(t testing.TB, bob *user, owner, route, name string, size, small int) float64 {
	t.Helper()
	var took [2]time.Duration
	for i, n := range []string{"small.bin", name} {
		out := filepath.Join(t.TempDir(), n)
		r := bob.Run(t, 5*time.Minute, "fetch", owner, n, "-o", out)
		if r.code != 0 || !strings.Contains(r.stdout, route) {
			t.Fatalf("kez fetch %s %s: exit %d, want %q\n%s%s", owner, n, r.code, route, r.stdout, r.stderr)
		}
		took[i] = r.took
	}
	return float64(size-small) / (took[1] - took[0]).Seconds()
}
