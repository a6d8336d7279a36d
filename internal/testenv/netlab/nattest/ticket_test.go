package nattest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// ticketPattern finds the ticket kez ticket prints.
var ticketPattern = regexp.MustCompile(`kez fetch (kezt1[a-z2-7]+)`)

// fetchTicketAsStranger is the ticket case of a topology where alice
// serves name behind one NAT, holding a slot with the relay: she makes a
// ticket (its addresses are those her kez serve recorded, her circuit
// address among them), and a stranger behind the other NAT — no kez
// init, no account, no NATS, a KEZ_HOME that does not exist — fetches
// with it. The file arrives verified, all of it over route (--json says
// so: hole-punched between endpoint-independent NATs, else relayed), and
// nothing is written in the stranger's KEZ_HOME.
func (p *people) fetchTicketAsStranger(t *testing.T, name, want, route string) {
	m := ticketPattern.FindStringSubmatch(p.alice.MustRun(t, "ticket", name).stdout)
	if m == nil {
		t.Fatal("kez ticket printed no ticket")
	}
	home := filepath.Join(t.TempDir(), "never-made")
	// KEZ_TICKET_LOCAL: the lab's public net (netlab.PubAddr's, which
	// libp2p takes for public) is an IETF special-purpose range that a
	// ticket fetch does not contact by default.
	stranger := &user{name: "stranger", ns: p.tp.Sites[1].Host, home: home, bin: p.bob.bin,
		env: append(os.Environ(), "KEZ_HOME="+home, "KEZ_TICKET_LOCAL=1")}
	out := filepath.Join(t.TempDir(), name)
	r := stranger.Run(t, 2*time.Minute, "fetch", m[1], "-o", out, "--json")
	if r.code != 0 {
		t.Fatalf("the stranger's kez fetch TICKET: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	sameFile(t, want, out)
	fi, err := os.Stat(want)
	if err != nil {
		t.Fatal(err)
	}
	size := fi.Size()
	var got struct {
		Route  string           `json:"route"`
		Routes map[string]int64 `json:"routes"`
		Relay  string           `json:"relay"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("kez fetch TICKET --json: %v\n%s", err, r.stdout)
	}
	t.Logf("kez fetch TICKET (%s): %+v", r.took, got)
	if got.Route != route || got.Routes[route] != size {
		t.Errorf("the ticket fetch went %+v, want all %d bytes %s", got, size, route)
	}
	if route == "relayed" && got.Relay == "" {
		t.Errorf("a relayed ticket fetch names no relay: %+v", got)
	}
	if _, err := os.Stat(home); !os.IsNotExist(err) {
		t.Errorf("the stranger's KEZ_HOME was made: %v", err)
	}
}
