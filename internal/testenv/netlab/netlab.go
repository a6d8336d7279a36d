package netlab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Errors of [Available].
var (
	// ErrRefused: the kernel refuses to make a network namespace for this
	// process (not Linux, not root, or no CAP_SYS_ADMIN in a sandbox).
	ErrRefused = errors.New("netlab: the kernel refuses network namespaces")
	// ErrMissingProgram: ip, tc or nft is not installed (and apt-get
	// could not install it).
	ErrMissingProgram = errors.New("netlab: a required program is missing")
)

// prefix starts the name of every namespace a lab makes.
const prefix = "kezlab-"

// programs are the programs a lab runs, with the Debian package of each.
var programs = [][2]string{{"ip", "iproute2"}, {"tc", "iproute2"}, {"nft", "nftables"}}

var (
	availOnce sync.Once
	availErr  error
)

// Available reports whether labs can be built here: nil, or an error
// matching [ErrRefused] (the kernel refuses network namespaces to this
// process: say so and skip) or [ErrMissingProgram] (install the program:
// a failure).
func Available() error {
	availOnce.Do(func() { availErr = available() })
	return availErr
}

func available() error {
	if runtime.GOOS != "linux" {
		return fmt.Errorf("%w: network namespaces are Linux's", ErrRefused)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: making one needs root (or CAP_SYS_ADMIN)", ErrRefused)
	}
	if err := probeUnshare(); err != nil {
		return fmt.Errorf("%w: unshare(CLONE_NEWNET): %w", ErrRefused, err)
	}
	if missing := missingPackages(); len(missing) > 0 {
		// As root on Debian, the lab installs what it needs, as .ci/run
		// does, so that "go test ./..." works on a fresh machine.
		installPackages(missing)
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p[0]); err != nil {
			return fmt.Errorf("%w: %s (Debian package %s)", ErrMissingProgram, p[0], p[1])
		}
	}
	return nil
}

// missingPackages lists the Debian packages of the programs not found.
func missingPackages() []string {
	var pkgs []string
	for _, p := range programs {
		if _, err := exec.LookPath(p[0]); err != nil && !slices.Contains(pkgs, p[1]) {
			pkgs = append(pkgs, p[1])
		}
	}
	return pkgs
}

// installPackages installs pkgs with apt-get where there is one (the
// caller is root), waiting for another install's lock: the lab's test
// packages run at once. A failure shows as the missing program.
func installPackages(pkgs []string) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		return
	}
	lock := "DPkg::Lock::Timeout=300"
	install := append([]string{"-o", lock, "install", "-y", "-qq"}, pkgs...)
	if exec.Command("apt-get", install...).Run() == nil {
		return
	}
	if exec.Command("apt-get", "-o", lock, "update", "-qq").Run() == nil {
		exec.Command("apt-get", install...).Run()
	}
}

// probeUnshare asks the kernel for a new network namespace on a thread of
// its own, which then ends with the goroutine (it stays locked).
func probeUnshare() error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes away with its namespace
		errc <- unix.Unshare(unix.CLONE_NEWNET)
	}()
	return <-errc
}

// Require skips the test when the kernel refuses network namespaces,
// saying why, and fails it when ip, tc or nft is missing (see
// [Available]).
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); errors.Is(err, ErrRefused) {
		t.Skipf("no network namespaces here: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
}

// Lab is a set of network namespaces that one test builds and t.Cleanup
// removes. Its methods fail the test (t.Fatal) when a command fails: call
// them from the test's goroutine.
type Lab struct {
	t   testing.TB
	tag string

	mu   sync.Mutex
	nss  []*Namespace
	cmds []*exec.Cmd // made by Namespace.Command
}

// New returns an empty lab whose namespaces are deleted in t.Cleanup. It
// skips the test when the kernel refuses network namespaces and fails it
// when a program is missing (see [Available]). It first deletes the
// namespaces of earlier labs whose test binary has died.
func New(t testing.TB) *Lab {
	t.Helper()
	Require(t)
	sweepStale(t)
	b := make([]byte, 4)
	rand.Read(b)
	l := &Lab{t: t, tag: hex.EncodeToString(b)}
	t.Cleanup(l.cleanup)
	return l
}

// Tag is the lab's random tag, a part of every namespace name.
func (l *Lab) Tag() string { return l.tag }

// Namespace is a network namespace of a lab.
type Namespace struct {
	lab  *Lab
	Name string // the name "ip netns" knows it by: kezlab-PID-TAG-ROLE
	Role string // the role the test gave it ("pub", "a-router"…)
}

// Namespace makes a namespace for role (letters, digits and '-'), with
// its loopback up, IPv6 off and nothing else.
func (l *Lab) Namespace(role string) *Namespace {
	l.t.Helper()
	for _, c := range role {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			l.t.Fatalf("netlab: bad namespace role %q", role)
		}
	}
	n := &Namespace{lab: l, Name: fmt.Sprintf("%s%d-%s-%s", prefix, os.Getpid(), l.tag, role), Role: role}
	run(l.t, "ip", "netns", "add", n.Name)
	l.mu.Lock()
	l.nss = append(l.nss, n)
	l.mu.Unlock()
	n.IP("link", "set", "lo", "up")
	// IPv6 would add link-local addresses every libp2p host announces; the
	// lab's networks are IPv4.
	n.Sysctl("net.ipv6.conf.all.disable_ipv6", "1")
	n.Sysctl("net.ipv6.conf.default.disable_ipv6", "1")
	return n
}

// Link joins a and b with a veth pair, aIf inside a and bIf inside b
// (names of at most 15 bytes), sets each end's address (CIDR form, or ""
// for none) and brings both up. The pair is made inside the namespaces,
// so its names never meet the machine's own interfaces.
func (l *Lab) Link(a *Namespace, aIf, aCIDR string, b *Namespace, bIf, bCIDR string) {
	l.t.Helper()
	run(l.t, "ip", "link", "add", "name", aIf, "netns", a.Name, "type", "veth", "peer", "name", bIf, "netns", b.Name)
	for _, e := range []struct {
		ns        *Namespace
		ifc, cidr string
	}{{a, aIf, aCIDR}, {b, bIf, bCIDR}} {
		if e.cidr != "" {
			e.ns.IP("addr", "add", e.cidr, "dev", e.ifc)
		}
		e.ns.IP("link", "set", e.ifc, "up")
	}
}

// IP runs "ip -n NAME args…" and fails the test if it fails.
func (n *Namespace) IP(args ...string) string {
	n.lab.t.Helper()
	return run(n.lab.t, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Exec runs a program inside the namespace ("ip netns exec"), waits for it
// and returns its output; it fails the test if the program fails.
func (n *Namespace) Exec(name string, args ...string) string {
	n.lab.t.Helper()
	return run(n.lab.t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Sysctl sets a sysctl of the namespace (net.* ones are per namespace).
func (n *Namespace) Sysctl(key, value string) {
	n.lab.t.Helper()
	n.Exec("sysctl", "-q", "-w", key+"="+value)
}

// AddAddr adds an address (CIDR form) to an interface of the namespace.
func (n *Namespace) AddAddr(ifc, cidr string) {
	n.lab.t.Helper()
	n.IP("addr", "add", cidr, "dev", ifc)
}

// Bridge makes a bridge with an address (CIDR form, or "") and brings it
// up; [Namespace.Enslave] attaches interfaces to it.
func (n *Namespace) Bridge(name, cidr string) {
	n.lab.t.Helper()
	n.IP("link", "add", name, "type", "bridge")
	if cidr != "" {
		n.AddAddr(name, cidr)
	}
	n.IP("link", "set", name, "up")
}

// Enslave attaches interface ifc to bridge br.
func (n *Namespace) Enslave(ifc, br string) {
	n.lab.t.Helper()
	n.IP("link", "set", ifc, "master", br)
}

// DefaultRoute routes everything the namespace has no closer route for
// through gateway.
func (n *Namespace) DefaultRoute(gateway string) {
	n.lab.t.Helper()
	n.IP("route", "replace", "default", "via", gateway)
}

// Forward makes the namespace a router (net.ipv4.ip_forward=1).
func (n *Namespace) Forward() {
	n.lab.t.Helper()
	n.Sysctl("net.ipv4.ip_forward", "1")
}

// cleanup stops what still runs in the lab's namespaces and deletes them.
// Processes a test started with Start are stopped by their own cleanups,
// which run first.
func (l *Lab) cleanup() {
	l.mu.Lock()
	nss, cmds := l.nss, l.cmds
	l.nss, l.cmds = nil, nil
	l.mu.Unlock()
	for _, cmd := range cmds {
		if cmd.Process != nil {
			// Signal, not kill(2) by number: os.Process knows when the
			// process has been waited for, so a reused ID is never hit.
			cmd.Process.Signal(syscall.SIGKILL)
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		if err := deleteNamespace(nss[i].Name); err != nil {
			l.t.Errorf("netlab: %v", err)
		}
	}
}

// deleteNamespace kills every process still inside the namespace, then
// deletes it (its interfaces go with it).
func deleteNamespace(name string) error {
	killAll(name)
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("deleting namespace %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// killAll sends SIGKILL to every process inside namespace name.
func killAll(name string) {
	out, _ := exec.Command("ip", "netns", "pids", name).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// sweepStale deletes the namespaces of labs whose test binary is gone (a
// binary killed by go test's -timeout runs no cleanup).
func sweepStale(t testing.TB) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], prefix) {
			continue
		}
		pidText, _, _ := strings.Cut(strings.TrimPrefix(f[0], prefix), "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			continue // its test binary still runs (or cannot be told)
		}
		if err := deleteNamespace(f[0]); err == nil {
			t.Logf("netlab: deleted %s, left by a test binary that died", f[0])
		}
	}
}

// run runs a command and fails the test if it fails, with its output.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("netlab: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
