package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/relay"
	ma "github.com/multiformats/go-multiaddr"
)

// loopbackRelay starts a kez relay on loopback TCP, stopped by t.Cleanup,
// and returns its address as --relay takes it.
func loopbackRelay(t *testing.T) string {
	t.Helper()
	r, err := relay.New(relay.Config{Listen: []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r.Addrs()[0].String()
}

// kez fetch TICKET reports as kez fetch HANDLE does: alice makes a ticket
// before she first serves, so it names only a circuit address through
// her relay (a real kez relay); she then serves with a slot there. The
// real kez binary, with no kez init, fetches with the ticket: --json
// carries the route, the bytes per route, the relay and the owner's key;
// the sentences end with the path the bytes took. A refused ticket with
// --json prints no JSON, only the refusal.
func TestTicketFetchRoute(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	relayAddr := loopbackRelay(t)

	au := st.NewUser(t, "alice")
	loopback := "/ip4/127.0.0.1/tcp/0"
	alice := with(st.Env(au), "KEZ_P2P_LISTEN", loopback, "KEZ_RELAYS", relayAddr)
	content := bytes.Repeat([]byte("route "), 100000)
	notes := filepath.Join(t.TempDir(), "notes.txt")
	os.WriteFile(notes, content, 0o600)
	mustRun(t, alice, "", "share", notes)
	ticket := ticketOf(t, mustRun(t, alice, "", "ticket", "notes.txt").stdout)
	tk, err := files.ParseTicket(ticket, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(tk.Addrs) != 1 || tk.Addrs[0].String() != relayAddr+"/p2p-circuit" {
		t.Fatalf("the ticket names %v, not only the relay's circuit address", tk.Addrs)
	}

	want := "Reachable through the relay " + relayAddr + "/p2p-circuit."
	aout, aerr := newWatchWriter("Online as", want), newWatchWriter()
	stop, served := background(t, alice, aout, aerr, "serve")
	aout.await(t, want)
	t.Cleanup(func() { stop(); served() })

	stranger := map[string]string{"KEZ_HOME": filepath.Join(t.TempDir(), "never-made"), "KEZ_P2P_LISTEN": loopback, "KEZ_TICKET_LOCAL": "1"}
	out := filepath.Join(t.TempDir(), "got.txt")
	res := kezBinRun(t, stranger, "", "fetch", ticket, "-o", out, "--json")
	var fj fetchedJSON
	if res.code != 0 || json.Unmarshal([]byte(res.stdout), &fj) != nil {
		t.Fatalf("kez fetch TICKET --json: exit %d\n%s\n%s", res.code, res.stdout, res.stderr)
	}
	size := int64(len(content))
	if fj.Route != files.RouteRelayed || fj.Relay != relayAddr || fj.Routes[files.RouteRelayed] != size || len(fj.Routes) != 1 ||
		fj.Owner != au.Key.String() || fj.Name != "notes.txt" || fj.Size != size || fj.Path != out || fj.CID != tk.CID.String() {
		t.Fatalf("kez fetch TICKET --json: %+v", fj)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, content) {
		t.Fatal("the fetched file differs")
	}

	out2 := filepath.Join(t.TempDir(), "again.txt")
	res = mustRun(t, stranger, "", "fetch", ticket, "-o", out2)
	if !strings.HasSuffix(res.stdout, `Fetched "notes.txt" (585.9 KiB) from its owner through the relay `+relayAddr+".\n") {
		t.Errorf("kez fetch TICKET:\n%s", res.stdout)
	}
	if _, err := os.Stat(stranger["KEZ_HOME"]); !os.IsNotExist(err) {
		t.Fatalf("KEZ_HOME was made by a ticket fetch: %v", err)
	}

	old := *tk
	old.Expires = time.Now().Add(-time.Hour)
	expired, err := files.SignTicket(au.Identity, &old)
	if err != nil {
		t.Fatal(err)
	}
	res = kezCmd(t, stranger, "", "fetch", expired, "--json", "-o", filepath.Join(t.TempDir(), "x"))
	if res.code != 1 || res.stdout != "" || !strings.Contains(res.stderr, "this ticket expired on") {
		t.Errorf("an expired ticket with --json: exit %d\nstdout: %s\nstderr: %s", res.code, res.stdout, res.stderr)
	}
}
