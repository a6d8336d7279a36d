package netlab

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoTCP serves on ln, answering each connection with the address it
// came from, then echoing what it reads.
func echoTCP(t *testing.T, ln net.Listener) {
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.WriteString(c, c.RemoteAddr().String()+"\n")
				io.Copy(c, c)
			}()
		}
	}()
}

// observer answers each UDP datagram with the address it came from (as a
// STUN server does), until t ends.
func observer(t *testing.T, ns *Namespace, addr string) {
	t.Helper()
	pc, err := ns.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(from.String()), from)
		}
	}()
}

// observed sends a datagram from pc to each server and returns the
// addresses they saw it come from.
func observed(t *testing.T, pc net.PacketConn, servers ...string) []string {
	t.Helper()
	var seen []string
	buf := make([]byte, 1500)
	for _, s := range servers {
		to, err := net.ResolveUDPAddr("udp4", s)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteTo([]byte("who am I"), to); err != nil {
			t.Fatal(err)
		}
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no answer from %s: %v", s, err)
		}
		seen = append(seen, string(buf[:n]))
	}
	return seen
}

func TestTopologyTranslatesAndRoutes(t *testing.T) {
	tp := NewTopology(t, EndpointIndependent, Symmetric)
	ln, err := tp.Pub.Listen("tcp4", PubAddr+":7000")
	if err != nil {
		t.Fatal(err)
	}
	echoTCP(t, ln)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, from := range []struct {
		ns   *Namespace
		want string
	}{{tp.Sites[0].Host, tp.Sites[0].PublicIP}, {tp.Sites[1].Host, tp.Sites[1].PublicIP}, {tp.Open, OpenAddr}} {
		c, err := from.ns.Dial(ctx, "tcp4", PubAddr+":7000")
		if err != nil {
			t.Fatalf("%s cannot reach the public net: %v", from.ns.Role, err)
		}
		line := make([]byte, 64)
		n, _ := c.Read(line)
		host, _, _ := net.SplitHostPort(strings.TrimSpace(string(line[:n])))
		if host != from.want {
			t.Errorf("a connection from %s arrives from %s, want %s", from.ns.Role, host, from.want)
		}
		io.WriteString(c, "ping")
		got := make([]byte, 4)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "ping" {
			t.Errorf("echo from %s: %q, %v", from.ns.Role, got, err)
		}
		c.Close()
	}
}

func TestNATMappings(t *testing.T) {
	tp := NewTopology(t, EndpointIndependent, Symmetric)
	observer(t, tp.Pub, PubAddr+":3478")
	observer(t, tp.Pub, PubAddr2+":3478")
	servers := []string{PubAddr + ":3478", PubAddr2 + ":3478", PubAddr + ":3478"}
	ports := func(s *Site) []string {
		pc, err := s.Host.ListenPacket("udp4", s.HostIP+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		_, local, _ := net.SplitHostPort(pc.LocalAddr().String())
		var ps []string
		if s.nat == EndpointIndependent {
			defer func() {
				if ps[0] != local {
					t.Errorf("site %s behind an endpoint-independent NAT: local port %s is seen as %s", s.Name, local, ps[0])
				}
			}()
		}
		for _, a := range observed(t, pc, servers...) {
			host, port, _ := net.SplitHostPort(a)
			if host != s.PublicIP {
				t.Errorf("site %s is seen from %s, want its router's %s", s.Name, host, s.PublicIP)
			}
			ps = append(ps, port)
		}
		return ps
	}
	a, b := tp.Sites[0], tp.Sites[1]
	if p := ports(a); p[0] != p[1] || p[0] != p[2] {
		t.Errorf("behind an endpoint-independent NAT one socket is seen at ports %v, want one port for all destinations", p)
	}
	if p := ports(b); p[0] == p[1] || p[0] != p[2] {
		t.Errorf("behind a symmetric NAT one socket is seen at ports %v, want a new port per destination (and the same for the same one)", p)
	}
	// Swapping the rules changes new flows.
	a.SetNAT(Symmetric)
	b.SetNAT(EndpointIndependent)
	if p := ports(a); p[0] == p[1] {
		t.Errorf("after SetNAT(Symmetric) one socket is seen at ports %v", p)
	}
	if p := ports(b); p[0] != p[1] {
		t.Errorf("after SetNAT(EndpointIndependent) one socket is seen at ports %v", p)
	}

	// A flow tracked under the old rules keeps its mapping until the
	// router forgets it.
	pc, err := a.Host.ListenPacket("udp4", a.HostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	_, local, _ := net.SplitHostPort(pc.LocalAddr().String())
	first := observed(t, pc, servers[0])[0]
	a.SetNAT(EndpointIndependent)
	if again := observed(t, pc, servers[0])[0]; again != first {
		t.Errorf("a tracked flow changed its mapping from %s to %s with the rules", first, again)
	}
	if !strings.Contains(a.Router.Conntrack(), "sport="+local+" ") {
		t.Errorf("the router's flows do not list the host's port %s:\n%s", local, a.Router.Conntrack())
	}
	a.Router.FlushConntrack()
	if _, port, _ := net.SplitHostPort(observed(t, pc, servers[0])[0]); port != local {
		t.Errorf("after a flush the flow is seen at port %s, want the host's %s (endpoint-independent)", port, local)
	}
}

// An outsider cannot open a flow into a site: neither through the
// router's public address nor by routing the inside address through it;
// and a mapping made for one destination lets no other sender in
// (filtering), which is why hole punching sends from both sides.
func TestNATRefusesOutsiders(t *testing.T) {
	tp := NewTopology(t, EndpointIndependent)
	s := tp.Sites[0]
	ln, err := s.Host.Listen("tcp4", s.HostIP+":7000")
	if err != nil {
		t.Fatal(err)
	}
	echoTCP(t, ln)
	tp.Open.IP("route", "add", "10.0.1.0/24", "via", s.PublicIP)
	for _, target := range []string{s.HostIP + ":7000", s.PublicIP + ":7000"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := tp.Open.Dial(ctx, "tcp4", target)
		cancel()
		if err == nil {
			c.Close()
			t.Errorf("an outsider connected to %s, inside a NAT", target)
		}
	}

	// UDP: the host talks to Pub's first address; Open sends to the mapped
	// port and must not get through.
	observer(t, tp.Pub, PubAddr+":3478")
	pc, err := s.Host.ListenPacket("udp4", s.HostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	mapped := observed(t, pc, PubAddr+":3478")[0]
	out, err := tp.Open.ListenPacket("udp4", OpenAddr+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	to, _ := net.ResolveUDPAddr("udp4", mapped)
	for range 3 {
		out.WriteTo([]byte("let me in"), to)
	}
	// A datagram the host then sends to Pub comes back; the outsider's
	// three, sent before it, must not be there.
	got := observed(t, pc, PubAddr+":3478")[0]
	if got != mapped {
		t.Errorf("the mapping changed from %s to %s", mapped, got)
	}
	pc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 64)
	if n, from, err := pc.ReadFrom(buf); err == nil {
		t.Errorf("an outsider's datagram %q from %s got through the NAT", buf[:n], from)
	}
}

func TestLimitShapesALink(t *testing.T) {
	tp := NewTopology(t)
	const rate = 1 << 20 // 1 MiB/s
	tp.LimitOpen(rate)
	ln, err := tp.Pub.Listen("tcp4", PubAddr+":7001")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan int64, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- -1
			return
		}
		n, _ := io.Copy(io.Discard, c)
		c.Close()
		got <- n
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := tp.Open.Dial(ctx, "tcp4", PubAddr+":7001")
	if err != nil {
		t.Fatal(err)
	}
	const size = 3 << 19 // 1.5 MiB: at least ~1.4 s through the bucket
	start := time.Now()
	if _, err := c.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if n := <-got; n != size {
		t.Fatalf("received %d bytes, want %d", n, size)
	}
	// Only the bound the filter guarantees: never faster than the rate
	// (less the bucket and the socket buffers filled at once).
	if el := time.Since(start); el < 1200*time.Millisecond {
		t.Errorf("1.5 MiB crossed a 1 MiB/s link in %s", el)
	}
	// Removing the limit.
	tp.LimitOpen(0)
	if out := tp.Open.Exec("tc", "qdisc", "show", "dev", "eth0"); strings.Contains(out, "tbf") {
		t.Errorf("the limit stayed: %s", out)
	}
}

// A lab's processes are stopped and its namespaces deleted when its test
// ends, even a failed one; two labs at once share no name.
func TestCleanupAndIsolation(t *testing.T) {
	Require(t)
	var (
		mu    sync.Mutex
		names []string
		ended []<-chan struct{} // closed when each process has exited
	)
	t.Run("labs", func(t *testing.T) {
		for _, name := range []string{"one", "two"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				lab := New(t)
				a, b := lab.Namespace("a"), lab.Namespace("b")
				lab.Link(a, "eth0", "10.9.0.1/24", b, "eth0", "10.9.0.2/24")
				p := a.Start(t, "sleeper", "sleep", "1000")
				// A process started without Start is killed too.
				orphan := b.Command("sleep", "1000")
				if err := orphan.Start(); err != nil {
					t.Fatal(err)
				}
				orphanDone := make(chan struct{})
				go func() {
					orphan.Wait()
					close(orphanDone)
				}()
				mu.Lock()
				names = append(names, a.Name, b.Name)
				ended = append(ended, p.Done(), orphanDone)
				mu.Unlock()
			})
		}
	})
	if len(names) != 4 || names[0] == names[2] {
		t.Fatalf("namespace names %v: want 4, distinct", names)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, n := range names {
		if strings.Contains(string(out), n) {
			t.Errorf("namespace %s is still there", n)
		}
	}
	// The orphan's Wait returns once killAll's SIGKILL has reached it.
	for i, done := range ended {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("process %d still runs after its lab was removed", i)
		}
	}
}

// A namespace left by a test binary that died is deleted by the next
// lab; one of a running binary is kept.
func TestNewSweepsStaleNamespaces(t *testing.T) {
	Require(t)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	stale := prefix + strconv.Itoa(dead.Process.Pid) + "-0000-x"
	live := prefix + strconv.Itoa(os.Getppid()) + "-0000-x" // go test's own process
	for _, n := range []string{stale, live} {
		if out, err := exec.Command("ip", "netns", "add", n).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	t.Cleanup(func() { deleteNamespace(stale); deleteNamespace(live) })
	New(t)
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), stale) {
		t.Errorf("%s, of a dead binary, survived", stale)
	}
	if !strings.Contains(string(out), live) {
		t.Errorf("%s, of a live binary, was deleted", live)
	}
}

func TestAvailableNamesItsCause(t *testing.T) {
	err := Available()
	if err == nil {
		return
	}
	if !errors.Is(err, ErrRefused) && !errors.Is(err, ErrMissingProgram) {
		t.Errorf("Available() = %v, matching neither ErrRefused nor ErrMissingProgram", err)
	}
}

func TestRoleIsChecked(t *testing.T) {
	Require(t)
	// A role with a path separator or a space would make a name ip
	// refuses or a file outside /run/netns.
	ft := &fatalRecorder{TB: t}
	lab := &Lab{t: ft, tag: "0000"}
	func() {
		defer func() { recover() }()
		lab.Namespace("../x")
	}()
	if !ft.failed {
		t.Error(`Namespace("../x") was accepted`)
	}
}

// fatalRecorder records a Fatalf and stops the calling function by
// panicking, as testing's Goexit would stop the test.
type fatalRecorder struct {
	testing.TB
	failed bool
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.failed = true
	panic("fatal")
}

func (f *fatalRecorder) Helper() {}

// envChild makes TestChildNew build a lab (run by TestNotRootSkips).
const envChild = "KEZ_NETLAB_CHILD"

func TestChildNew(t *testing.T) {
	if os.Getenv(envChild) == "" {
		t.Skip("run by TestNotRootSkips")
	}
	New(t)
	t.Error("New did not skip")
}

// A user who is not root gets a skip that says why, not a failure: this
// test binary, copied where anyone may run it, runs New as nobody.
func TestNotRootSkips(t *testing.T) {
	Require(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux, which every Debian machine has) is needed to drop root: %v", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "netlab-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := dir + "/netlab.test"
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", bin, "-test.run=^TestChildNew$", "-test.v")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), envChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- SKIP: TestChildNew") || !strings.Contains(string(out), "making one needs root") {
		t.Errorf("New as nobody: %v\n%s", err, out)
	}
}
