package netlab

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// NAT is how a router maps its inside hosts' flows to its outside
// address (RFC 4787's terms).
type NAT int

const (
	// NoNAT routes without translating: the inside addresses must be
	// routable outside.
	NoNAT NAT = iota
	// EndpointIndependent keeps an inside host's source port for every
	// destination (nftables' plain masquerade: Linux keeps the port when
	// the outside tuple is free), so the address the relay observes is
	// the one a peer can punch to: a home router. Filtering is
	// address-and-port dependent: only packets of a flow the inside host
	// opened come back, which hole punching's simultaneous sends get
	// through.
	EndpointIndependent
	// Symmetric gives every new flow a random outside port
	// (masquerade fully-random), so a peer's punch goes to a port the NAT
	// did not map for it: carrier-grade or enterprise NAT, where only a
	// relay gets through.
	Symmetric
)

// String names the NAT for people ("symmetric NAT").
func (m NAT) String() string {
	switch m {
	case NoNAT:
		return "no NAT"
	case EndpointIndependent:
		return "endpoint-independent NAT"
	case Symmetric:
		return "symmetric NAT"
	}
	return "NAT(" + strconv.Itoa(int(m)) + ")"
}

// natTable is the nftables table a router's rules live in.
const natTable = "kezlab"

// ruleset returns the router's nftables rules for mode, the outside
// interface being wan: the table is replaced whole in one transaction.
// Behind a NAT, flows from outside reach the router and inside hosts only
// as replies (conntrack), as a home router's firewall does; NoNAT
// forwards all.
func ruleset(wan string, mode NAT) string {
	var b strings.Builder
	// Declaring the table first makes the delete valid when it is absent.
	fmt.Fprintf(&b, "table ip %s\ndelete table ip %s\ntable ip %s {\n", natTable, natTable, natTable)
	switch mode {
	case EndpointIndependent:
		fmt.Fprintf(&b, "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname %q masquerade\n  }\n", wan)
	case Symmetric:
		fmt.Fprintf(&b, "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n    oifname %q masquerade fully-random\n  }\n", wan)
	}
	if mode != NoNAT {
		// Dropping the new flows from outside also keeps conntrack from
		// recording them: a peer's punch that arrives before the host's
		// own would otherwise hold the tuple the host's mapping needs,
		// and Linux would map the host's flow to another port.
		for _, hook := range []string{"forward", "input"} {
			fmt.Fprintf(&b, "  chain %s {\n    type filter hook %s priority filter; policy accept;\n    ct state established,related accept\n    iifname %q drop\n  }\n", hook, hook, wan)
		}
	}
	b.WriteString("}\n")
	return b.String()
}

// SetNAT makes the namespace a router (IP forwarding on) whose flows out
// of interface wan are translated as mode says, replacing its earlier
// rules. Flows already translated keep their mapping (conntrack's
// entries stay); new flows get the new one.
func (n *Namespace) SetNAT(wan string, mode NAT) {
	n.lab.t.Helper()
	n.Forward()
	cmd := exec.Command("ip", "netns", "exec", n.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset(wan, mode))
	if out, err := cmd.CombinedOutput(); err != nil {
		n.lab.t.Fatalf("netlab: nft in %s: %v\n%s\nrules:\n%s", n.Name, err, out, ruleset(wan, mode))
	}
}

// Limit shapes what leaves interface ifc to bytesPerSec with a token
// bucket filter (tc tbf), replacing an earlier limit; 0 removes it. The
// bucket holds 1/50 s of traffic (at least 32 KiB) and packets queue at
// most 50 ms beyond it, as a home link's buffer would.
func (n *Namespace) Limit(ifc string, bytesPerSec int64) {
	n.lab.t.Helper()
	if bytesPerSec <= 0 {
		// Deleting a qdisc that is not there fails: that is no error here.
		exec.Command("tc", "-n", n.Name, "qdisc", "del", "dev", ifc, "root").Run()
		return
	}
	burst := max(bytesPerSec/50, 32<<10)
	run(n.lab.t, "tc", "-n", n.Name, "qdisc", "replace", "dev", ifc, "root", "tbf",
		"rate", strconv.FormatInt(bytesPerSec*8, 10)+"bit",
		"burst", strconv.FormatInt(burst, 10), "latency", "50ms")
}
