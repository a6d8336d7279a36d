package files_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	libp2ppeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// A ticket fetch takes the path a handle's fetch takes: alice's machine
// cannot be dialled (it announces no address of its own) and holds a
// slot with a real relay, so her ticket's only addresses are circuit
// addresses; a stranger's fetch goes through the relay, verified, and
// says so (route, bytes per route, the relay), the caller's WithRoutes
// seeing the same bytes. A ticket whose circuit address names a relay
// alice holds no slot with (signed by her, so it parses) fails with the
// clear error, counting that relay, rather than hanging. The serving
// node records its circuit address in the Home as soon as it has one.
func TestTicketFetchThroughRelay(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	u := st.NewUser(t, "alice")
	alice, relay := behindRelay(t, st, u)
	const size = 3*format.ChunkSize + 99
	src := srcFile(t, "notes.txt", size)
	_, err := alice.Share(devCtx(t), src)
	must(t, err)
	must(t, alice.StartServing(devCtx(t)))
	circuit := waitReserved(t, alice)[0].String()
	// The serving node records its circuit address for the tickets other
	// processes of this Home make (kez ticket beside kez serve); it
	// writes the file as the reservation comes, so this looks until then.
	recorded := filepath.Join(u.Home, files.AddrsFile)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for b, _ := os.ReadFile(recorded); !strings.Contains(string(b), circuit); b, _ = os.ReadFile(recorded) {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s holds %q, not the circuit address %s", files.AddrsFile, b, circuit)
		}
	}

	_, tk := ticketFor(t, alice, "notes.txt")
	for _, a := range tk.Addrs {
		if !strings.HasSuffix(a.String(), "/p2p/"+relay.ID.String()+"/p2p-circuit") {
			t.Fatalf("the ticket names %v, not only circuit addresses through the relay", tk.Addrs)
		}
	}
	var mu sync.Mutex
	seen := map[files.Route]int64{}
	got, err := files.FetchTicket(devCtx(t), tk, t.TempDir(), loopback(), files.WithRoutes(func(_ libp2ppeer.ID, r files.Route, n int64) {
		mu.Lock()
		defer mu.Unlock()
		seen[r] += n
	}))
	must(t, err)
	sameFile(t, src, got.Path)
	if got.Route != files.RouteRelayed || got.Relay == nil || !strings.HasSuffix(got.Relay.String(), "/p2p/"+relay.ID.String()) {
		t.Fatalf("route %q through %v", got.Route, got.Relay)
	}
	if got.Routes[files.RouteRelayed] != size || len(got.Routes) != 1 || seen[files.RouteRelayed] != size {
		t.Errorf("bytes per route %v, seen by the caller %v", got.Routes, seen)
	}

	// Through a relay alice holds no slot with.
	other, _ := files.RelayForTest(t)
	forged := *tk
	forged.Addrs = []ma.Multiaddr{ma.StringCast(relayString(other) + "/p2p-circuit")}
	text, err := files.SignTicket(u.Identity, &forged)
	must(t, err)
	bad, err := files.ParseTicket(text, time.Now())
	must(t, err)
	dst := filepath.Join(t.TempDir(), "x")
	_, err = files.FetchTicket(devCtx(t), bad, dst, loopback())
	var ue *files.UnreachableError
	if !errors.As(err, &ue) || ue.Relays != 1 || ue.Addrs != 1 {
		t.Fatalf("through a relay without a slot: %v, want an UnreachableError through 1 relay", err)
	}
	mustNotExist(t, dst)
}
