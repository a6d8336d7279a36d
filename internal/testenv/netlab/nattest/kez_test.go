package nattest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/netlab"
)

// The NAT cases of kez fetch: alice shares and serves from site a's
// host, bob fetches from site b's, and the chat-server offers kez-relay
// in Pub (/v1/info), which both installs find by themselves.

// people is a topology with the servers, alice serving a file and bob.
type people struct {
	tp         *netlab.Topology
	s          *stack
	alice, bob *user
	serve      *netlab.Proc
}

func startPeople(t testing.TB, o stackOptions, a, b netlab.NAT) *people {
	t.Helper()
	tp := netlab.NewTopology(t, a, b)
	s := startStack(t, tp, o)
	p := &people{tp: tp, s: s, alice: s.NewUser(t, "alice", tp.Sites[0].Host), bob: s.NewUser(t, "bob", tp.Sites[1].Host)}
	return p
}

// share shares a new file of size bytes as alice and returns its path.
func (p *people) share(t testing.TB, name string, size int, seed byte) string {
	t.Helper()
	f := writeFile(t, name, size, seed)
	p.alice.MustRun(t, "share", f)
	return f
}

// fetch runs bob's kez fetch of alice's name into a new path.
func (p *people) fetch(t testing.TB, timeout time.Duration, name string, args ...string) (result, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), name)
	return p.bob.Run(t, timeout, append([]string{"fetch", "alice", name, "-o", out}, args...)...), out
}

// Both sites behind endpoint-independent NATs: kez fetch meets alice
// through the relay, DCUtR punches a hole, and the file's bytes flow over
// the hole-punched connection: the relay carries a few kilobytes of the
// 32 MiB, and its byte counter stays still once the fetch is done. A
// stranger behind bob's NAT fetches it with alice's ticket.
func TestFetchHolePunched(t *testing.T) {
	p := startPeople(t, stackOptions{}, netlab.EndpointIndependent, netlab.EndpointIndependent)
	file := p.share(t, "big.bin", 32<<20, 1)
	p.alice.ServeRelayed(t)
	before := p.s.RelayBytes(t)
	r, out := p.fetch(t, 2*time.Minute, "big.bin")
	if r.code != 0 {
		t.Fatalf("kez fetch: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	t.Logf("kez fetch (%s): %s%s", r.took, r.stdout, r.stderr)
	sameFile(t, file, out)
	if !strings.Contains(r.stdout, "over a hole-punched connection") {
		t.Errorf("kez fetch does not say the connection was hole-punched:\n%s", r.stdout)
	}
	after := p.s.RelayBytes(t)
	if carried := after - before; carried > 1<<20 {
		t.Errorf("the relay carried %s of a 32 MiB hole-punched fetch", fmtBytes(carried))
	}
	// A second fetch punches again (a new process), and the counter moves
	// by no more than the meeting takes.
	r, out = p.fetch(t, 2*time.Minute, "big.bin")
	if r.code != 0 || !strings.Contains(r.stdout, "hole-punched") {
		t.Fatalf("the second fetch: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	sameFile(t, file, out)
	if carried := p.s.RelayBytes(t) - after; carried > 1<<20 {
		t.Errorf("the relay carried %s of the second fetch", fmtBytes(carried))
	}
	t.Run("a stranger's ticket", func(t *testing.T) { p.fetchTicketAsStranger(t, "big.bin", file, "hole-punched") })
}

// Bob behind a symmetric NAT: the punch cannot work, the relay carries the
// file (the path says so; a stranger's ticket fetch from there too), the
// relay down makes the fetch fail with a sentence after the dial timeout,
// --wait waits for the relay to come back, and a fetch interrupted over
// the relay resumes over a hole-punched connection once bob's NAT turns
// endpoint-independent.
func TestFetchThroughRelay(t *testing.T) {
	p := startPeople(t, stackOptions{RelayArgs: []string{"--circuit-rate", "1M"}}, netlab.EndpointIndependent, netlab.Symmetric)
	small := p.share(t, "small.bin", 2<<20, 2)
	big := p.share(t, "big.bin", 32<<20, 3)
	p.serve = p.alice.ServeRelayed(t)

	t.Run("symmetric NAT: relayed", func(t *testing.T) {
		before := p.s.RelayBytes(t)
		r, out := p.fetch(t, 2*time.Minute, "small.bin")
		if r.code != 0 {
			t.Fatalf("kez fetch: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		sameFile(t, small, out)
		if !strings.Contains(r.stdout, "through the relay /ip4/"+netlab.PubAddr) {
			t.Errorf("kez fetch does not say the relay carried it:\n%s", r.stdout)
		}
		if carried := p.s.RelayBytes(t) - before; carried < 2<<20 {
			t.Errorf("the relay carried %s of a 2 MiB relayed fetch", fmtBytes(carried))
		}
	})

	t.Run("symmetric NAT: a stranger's ticket, relayed", func(t *testing.T) { p.fetchTicketAsStranger(t, "small.bin", small, "relayed") })

	t.Run("relay down: a clear error, and --wait waits for it", func(t *testing.T) {
		p.s.StopRelay(t)
		r, _ := p.fetch(t, 2*time.Minute, "small.bin")
		if r.code != 1 || !strings.Contains(r.stderr, "alice@kez.test's device is online but cannot be reached") || strings.Contains(r.stderr, "\n\n") {
			t.Errorf("kez fetch with the relay down: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if r.took > time.Minute {
			t.Errorf("it took %s to give up", r.took)
		}
		out := filepath.Join(t.TempDir(), "small.bin")
		w := p.bob.Start(t, "fetch", "alice", "small.bin", "-o", out, "--wait", "--timeout", "3m")
		// It tries, fails and waits: then the relay comes back.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := w.WaitLine(ctx, "waiting"); err != nil {
			t.Fatal(err)
		}
		p.s.StartRelay(t)
		select {
		case <-w.Done():
		case <-time.After(3 * time.Minute):
			t.Fatalf("kez fetch --wait did not end after the relay came back:\n%s", w.Output())
		}
		if err := w.Err(); err != nil {
			t.Fatalf("kez fetch --wait: %v\n%s", err, w.Output())
		}
		sameFile(t, small, out)
	})

	t.Run("interrupted over the relay, resumed hole-punched", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "big.bin")
		f := p.bob.Start(t, "fetch", "alice", "big.bin", "-o", out)
		// At 1 MiB/s through the relay the 32 MiB take 32 s: stop it once
		// 24 MiB are verified. By then alice's DCUtR has given up on bob's
		// symmetric NAT (3 attempts of 5 s): go-libp2p refuses a new hole
		// punch with a peer while one is under way.
		partial := out + ".kez-partial"
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for size := int64(0); size < 24<<20; {
			select {
			case <-f.Done():
				t.Fatalf("the fetch ended before it was interrupted: %v\n%s", f.Err(), f.Output())
			case <-tick.C:
			}
			if fi, err := os.Stat(partial); err == nil {
				size = fi.Size()
			}
		}
		syscall.Kill(f.PID(), syscall.SIGINT)
		<-f.Done()
		if !strings.Contains(f.Output(), "verified") {
			t.Errorf("the interrupted fetch does not say how much it verified:\n%s", f.Output())
		}
		// Bob's router changes its NAT and forgets the flows it mapped
		// randomly, as a restarted router would.
		p.tp.Sites[1].SetNAT(netlab.EndpointIndependent)
		p.tp.Sites[1].Router.FlushConntrack()
		r := p.bob.Run(t, 2*time.Minute, "fetch", "alice", "big.bin", "-o", out, "--json")
		if r.code != 0 {
			t.Fatalf("the resumed fetch: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		sameFile(t, big, out)
		var got struct {
			Route  string           `json:"route"`
			Routes map[string]int64 `json:"routes"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("kez fetch --json: %v\n%s", err, r.stdout)
		}
		// The route is the one that carried the most bytes; the bytes per
		// route are there once the fetch engine reports them (WithRoutes).
		if got.Route != "hole-punched" || len(got.Routes) > 0 && got.Routes["hole-punched"] < 4<<20 {
			t.Errorf("the resumed fetch went %+v, want the remaining 8 MiB (or most) hole-punched\nbob's router's flows:\n%s", got, p.tp.Sites[1].Router.Conntrack())
		}
	})
}

// A public host fetching from one behind NAT needs neither relay nor
// punch: alice at Open serves, bob behind NAT dials her directly.
func TestFetchDirect(t *testing.T) {
	tp := netlab.NewTopology(t, netlab.EndpointIndependent)
	s := startStack(t, tp, stackOptions{})
	alice := s.NewUser(t, "alice", tp.Open)
	bob := s.NewUser(t, "bob", tp.Sites[0].Host)
	file := writeFile(t, "data.bin", 8<<20, 1)
	alice.MustRun(t, "share", file)
	alice.Serve(t)
	out := filepath.Join(t.TempDir(), "got.bin")
	r := bob.MustRun(t, "fetch", "alice", "data.bin", "-o", out)
	sameFile(t, file, out)
	if !strings.Contains(r.stdout, "directly") {
		t.Errorf("kez fetch does not say it went directly:\n%s", r.stdout)
	}
}
