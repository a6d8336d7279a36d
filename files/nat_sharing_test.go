package files_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/libp2p/go-libp2p"
	libp2ppeer "github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
)

// relayString is the relay's first address as client.Config.Relays takes
// it.
func relayString(ai libp2ppeer.AddrInfo) string {
	return ai.Addrs[0].Encapsulate(ma.StringCast("/p2p/" + ai.ID.String())).String()
}

// behindRelay opens u's sharing on a machine that cannot be dialled (it
// announces no address of its own) with a real relay of its own, which
// it returns.
func behindRelay(t *testing.T, st *stacktest.Stack, u *stacktest.User) (*peer, libp2ppeer.AddrInfo) {
	t.Helper()
	relay, _ := files.RelayForTest(t)
	p := openWith(t, st, u, client.Config{Identity: u.Identity, Home: u.Home, Relays: []string{relayString(relay)}},
		func(c *files.Config) { c.Libp2pOptions = []libp2p.Option{files.NoDirectAddrsForTest} })
	return p, relay
}

// waitReserved waits until the serving sharing holds a relay reservation
// and returns its circuit addresses.
func waitReserved(t *testing.T, p *peer) []ma.Multiaddr {
	t.Helper()
	node, err := p.Node()
	if err != nil {
		t.Fatal(err)
	}
	return files.ReservedForTest(t, node)
}

// Alice's machine cannot be dialled (it announces no address of its own)
// but holds a slot with a relay: Bob's fetch goes through it, verified,
// and says so.
func TestSharingFetchThroughRelay(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, relay := behindRelay(t, st, st.NewUser(t, "alice"))
	bob := newPeer(t, st, "bob")
	ctx := context.Background()

	src := filepath.Join(t.TempDir(), "notes.bin")
	writeRandom(t, src, 2<<20+3, 7)
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	// A fetch-only sharing makes no reservation; a serving one does.
	if n, err := alice.Node(); err != nil {
		t.Fatal(err)
	} else if as, _ := n.RelayAddrs(); len(as) != 0 {
		t.Fatalf("reserved before serving: %v", as)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	circuits := waitReserved(t, alice)
	if got := alice.Addrs(); len(got) != len(circuits) {
		t.Fatalf("alice announces %v", got)
	}

	dst := filepath.Join(t.TempDir(), "notes.bin")
	got, err := bob.Fetch(ctx, alice.handle(), "notes.bin", dst)
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, src, dst)
	if got.Route != files.RouteRelayed || got.Relay == nil || !strings.HasSuffix(got.Relay.String(), "/p2p/"+relay.ID.String()) {
		t.Fatalf("route %q through %v", got.Route, got.Relay)
	}
	if n := got.Routes[files.RouteRelayed]; len(got.Routes) > 0 && n != 2<<20+3 {
		t.Errorf("bytes per route %v", got.Routes)
	}
}

// Alice answers with an address no one can dial and no relay: Bob gets the
// clear error (after asking once more), and a waiting fetch keeps trying
// until its time is up, then says the same.
func TestSharingFetchUnreachable(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	u := st.NewUser(t, "alice")
	alice := openWith(t, st, u, client.Config{Identity: u.Identity, Home: u.Home, Relays: []string{client.NoRelays}},
		func(c *files.Config) {
			c.Libp2pOptions = []libp2p.Option{files.AnnounceForTest("/ip4/127.0.0.1/tcp/1")}
		})
	bob := newPeer(t, st, "bob")
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "x")
	os.WriteFile(src, []byte("x"), 0o600)
	if _, err := alice.Share(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := alice.StartServing(ctx); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "x")
	_, err := bob.Fetch(ctx, alice.handle(), "x", dst)
	var ue *files.UnreachableError
	if !errors.As(err, &ue) || !errors.Is(err, files.ErrUnreachable) {
		t.Fatalf("fetch: %v", err)
	}
	if want := "files: cannot reach alice@kez.test's device: no address answered (tried 1)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	mustNotExist(t, dst)

	waits := 0
	_, err = bob.Fetch(ctx, alice.handle(), "x", dst, files.WithWait(time.Second, func(int) { waits++ }))
	if !errors.As(err, &ue) || waits < 1 {
		t.Fatalf("waiting fetch: %v after %d waits", err, waits)
	}
	mustNotExist(t, dst)
}
