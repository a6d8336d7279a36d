// Package netlab builds small networks out of Linux network namespaces
// for tests: namespaces joined by veth pairs, addresses and routes,
// routers doing NAT with nftables (endpoint-independent or symmetric), tbf
// rate limits on links, and programs running inside a namespace as
// processes. The files tests use it to show hole punching, relays and
// their failures over real NATs (internal/testenv/netlab/nattest).
//
//	lab := netlab.New(t) // skips when the kernel refuses namespaces
//	a, b := lab.Namespace("a"), lab.Namespace("b")
//	lab.Link(a, "eth0", "10.9.0.1/24", b, "eth0", "10.9.0.2/24")
//	p := b.Start(t, "echo-server", "/path/to/server", "--listen", "10.9.0.2:7")
//	conn, err := a.Dial(ctx, "tcp", "10.9.0.2:7") // a socket inside a
//
// [NewTopology] builds the network the NAT tests share: a "public"
// namespace and sites, each a router doing NAT and a host behind it.
//
// # Requirements
//
// The package needs root (or CAP_SYS_ADMIN and CAP_NET_ADMIN), the ip and
// tc programs (iproute2) and nft (nftables); as root on a machine with
// apt-get, [Available] installs the missing packages itself (so that "go
// test ./..." works on a fresh Debian machine), and says which is still
// missing. [New] skips the test when the kernel refuses to make a network
// namespace (not root, or a sandbox without the capability) and says so;
// a missing program fails the test instead, so that a CI machine without
// them does not pass quietly (.ci/run installs iproute2 and nftables).
//
// # Isolation
//
// Every namespace is named "kezlab-PID-TAG-ROLE", TAG random per [Lab],
// and every interface is made directly inside its namespace, so two test
// binaries (or two tests of one binary) building labs at the same time
// never share a name, and nothing in the machine's own namespace changes:
// no interface, route, sysctl or nftables rule. Namespaces have no route
// to the machine's network.
//
// # Cleanup
//
// t.Cleanup stops the processes a test started (SIGTERM, then SIGKILL
// after a few seconds), kills whatever else still runs inside the lab's
// namespaces, and deletes them, after a failure as after a success.
// Processes get SIGKILL when the test binary dies (Linux's parent-death
// signal), and [New] deletes the namespaces of labs whose test binary is
// gone (a test killed by -timeout runs no cleanup).
//
// # Sockets of the test process
//
// [Namespace.Do] runs a function on an OS thread moved into the
// namespace (setns(2)), so sockets it creates belong there:
// [Namespace.Dial], [Namespace.Listen], [Namespace.ListenPacket] and
// [Namespace.HTTPClient] build on it. A socket keeps its namespace for
// its whole life, whichever goroutine uses it later.
package netlab
