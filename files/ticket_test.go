package files_test

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/files"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// The tests of docs/spec/ticket.md §5 and §6, with a real stack (NATS,
// chat-server, sig-server) for the owners, and fetchers that use none of
// it: a throw-away key, a libp2p host on loopback, the sig-server over
// HTTP when the ticket needs it.

// ticketFor makes a ticket for name on p and parses it.
func ticketFor(t testing.TB, p *peer, name string) (string, *files.Ticket) {
	t.Helper()
	text, err := p.Ticket(devCtx(t), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := files.ParseTicket(text, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return text, tk
}

// loopback is the fetcher's config of these tests: a throw-away key,
// listening on loopback, allowed to contact loopback.
func loopback() files.TicketFetchConfig {
	return files.TicketFetchConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DialTimeout: 5 * time.Second, AllowLocal: true}
}

// A stranger — no account, not registered, a key made for the fetch —
// fetches a public file with its ticket from an owner whose install
// serves with a device key of its own: the ticket names that device, the
// fetcher checks it on the owner's chain, and the owner's node serves a
// public entry to any key. The serving node recorded its addresses
// (mode 0600) in its Home.
func TestTicketPublicFetchedByStranger(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	u := st.NewUser(t, "alice")
	dev := st.AddDevice(t, u, "laptop")
	home := filepath.Join(t.TempDir(), "kez-home")
	alice := openWith(t, st, u, client.Config{Identity: u.Identity, Device: dev, Person: u.Key, Home: home})
	src := srcFile(t, "notes.txt", 3*format.ChunkSize+777)
	if _, err := alice.Share(devCtx(t), src); err != nil {
		t.Fatal(err)
	}
	must(t, alice.StartServing(devCtx(t)))
	_, tk := ticketFor(t, alice, "notes.txt")
	if tk.Private || tk.Owner != u.Key || tk.Device != dev.PublicKey() || tk.Name != "notes.txt" || tk.SigServer != st.SigServerURL {
		t.Fatalf("ticket %+v", tk)
	}
	info, err := os.Stat(filepath.Join(home, files.AddrsFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("the recorded addresses: %v, %v", info, err)
	}

	dst := filepath.Join(t.TempDir(), "got")
	got, err := files.FetchTicket(devCtx(t), tk, dst, loopback())
	if err != nil {
		t.Fatal(err)
	}
	sameFile(t, src, got.Path)
	if got.Name != "notes.txt" || alice.Stats().ChunksServed == 0 {
		t.Fatalf("fetched %+v, served %+v", got.Entry, alice.Stats())
	}
	// Again into a folder: it lands under the ticket's name.
	dir := t.TempDir()
	if got, err = files.FetchTicket(devCtx(t), tk, dir, loopback()); err != nil || got.Path != filepath.Join(dir, "notes.txt") {
		t.Fatalf("into a folder: %+v, %v", got, err)
	}
}

// A private file's ticket names no file. A stranger holding it is refused
// before anything is dialled (the owner's node counts no request at all);
// a stranger who skips that check and asks the owner's node directly is
// refused by the node, which sends no chunk. The recipient fetches and
// decrypts it, the name coming from the manifest.
func TestTicketPrivate(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, bob := newPeer(t, st, "alice"), newPeer(t, st, "bob")
	src := srcFile(t, "plans.txt", 2*format.ChunkSize+99)
	if _, err := alice.Share(devCtx(t), src, files.To(bob.handle())); err != nil {
		t.Fatal(err)
	}
	must(t, alice.StartServing(devCtx(t)))
	text, tk := ticketFor(t, alice, "plans.txt")
	if !tk.Private || tk.Name != "" || strings.Contains(text, "plans") {
		t.Fatalf("a private ticket names its file: %+v", tk)
	}

	dst := filepath.Join(t.TempDir(), "got")
	if _, err := files.FetchTicket(devCtx(t), tk, dst, loopback()); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("stranger: %v, want ErrForbidden", err)
	}
	if s := alice.Stats(); s != (files.Stats{}) {
		t.Fatalf("the owner's node was asked: %+v", s)
	}
	mallory, _, err := kez.NewIdentity()
	must(t, err)
	node, err := files.NewNode(files.NodeConfig{Identity: mallory, ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
	must(t, err)
	t.Cleanup(func() { node.Close() })
	if err := node.Fetch(devCtx(t), tk.AddrInfo(), tk.CID, dst); !errors.Is(err, files.ErrForbidden) {
		t.Fatalf("stranger asking the node: %v, want ErrForbidden", err)
	}
	if s := alice.Stats(); s.ChunksServed != 0 || s.BytesServed != 0 || s.Refused == 0 {
		t.Fatalf("the owner's node served a stranger: %+v", s)
	}
	mustNotExist(t, dst)

	cfg := loopback()
	cfg.Identity = bob.user.Identity
	got, err := files.FetchTicket(devCtx(t), tk, t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "plans.txt" || !got.Private {
		t.Fatalf("bob got %+v", got.Entry)
	}
	sameFile(t, src, got.Path)
}

// A ticket the owner signed naming a device that is not theirs (carol,
// who serves the same bytes) is refused before anything is dialled.
func TestTicketForeignDevice(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice, carol := newPeer(t, st, "alice"), newPeer(t, st, "carol")
	src := srcFile(t, "notes.txt", 1000)
	sf, err := carol.Share(devCtx(t), src)
	must(t, err)
	must(t, carol.StartServing(devCtx(t)))
	text, err := files.SignTicket(alice.user.Identity, &files.Ticket{Owner: alice.Key(), Device: carol.Key(), CID: sf.CID, Size: sf.Size,
		Expires: time.Now().Add(time.Hour), Name: "notes.txt", SigServer: st.SigServerURL, Addrs: carol.Addrs()})
	must(t, err)
	tk, err := files.ParseTicket(text, time.Now())
	must(t, err)
	_, err = files.FetchTicket(devCtx(t), tk, filepath.Join(t.TempDir(), "got"), loopback())
	var de *files.DeviceError
	if !errors.Is(err, files.ErrNotOwnersDevice) || !errors.As(err, &de) || de.Device != carol.Key() {
		t.Fatalf("got %v, want ErrNotOwnersDevice naming carol", err)
	}
	if s := carol.Stats(); s.Requests != 0 || s.Refused != 0 {
		t.Fatalf("carol's node was asked: %+v", s)
	}
}

// A ticket past its expiry is refused by FetchTicket too (it may have
// been parsed earlier), and Sharing.Ticket refuses a life out of range, a
// file it does not share, and a ticket with no address.
func TestTicketRefusals(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := newPeer(t, st, "alice")
	src := srcFile(t, "notes.txt", 1000)
	_, err := alice.Share(devCtx(t), src)
	must(t, err)
	if _, err := alice.Ticket(devCtx(t), "notes.txt", 0); !errors.Is(err, files.ErrNoAddresses) {
		t.Fatalf("before serving: %v, want ErrNoAddresses", err)
	}
	must(t, alice.StartServing(devCtx(t)))
	for _, ttl := range []time.Duration{-time.Second, files.MaxTicketTTL + time.Second} {
		if _, err := alice.Ticket(devCtx(t), "notes.txt", ttl); !errors.Is(err, files.ErrTicketMalformed) {
			t.Errorf("ttl %s: %v", ttl, err)
		}
	}
	if _, err := alice.Ticket(devCtx(t), "other.txt", 0); !errors.Is(err, files.ErrNotShared) {
		t.Fatalf("unshared: %v", err)
	}
	text, err := alice.Ticket(devCtx(t), "notes.txt", time.Hour)
	must(t, err)
	tk, err := files.ParseTicket(text, time.Now())
	must(t, err)
	if d := time.Until(tk.Expires); d > time.Hour || d < 50*time.Minute {
		t.Fatalf("expires in %s", d)
	}
	cfg := loopback()
	cfg.Clock = func() time.Time { return tk.Expires }
	var ee *files.TicketExpiredError
	if _, err := files.FetchTicket(devCtx(t), tk, t.TempDir(), cfg); !errors.As(err, &ee) || !ee.Expires.Equal(tk.Expires) {
		t.Fatalf("expired: %v", err)
	}
	if _, err := files.ParseTicket(text, tk.Expires.Add(time.Second)); !errors.Is(err, files.ErrTicketExpired) {
		t.Fatalf("parsing expired: %v", err)
	}
	if s := alice.Stats(); s.Requests != 0 {
		t.Fatalf("an expired ticket reached the node: %+v", s)
	}
}

// A linked device holds no primary key, so it makes no ticket.
func TestTicketNeedsPrimary(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	u := st.NewUser(t, "alice")
	laptop := openInstall(t, st, u, st.AddDevice(t, u, "laptop"), false)
	if _, err := laptop.Ticket(devCtx(t), "notes.txt", 0); !errors.Is(err, files.ErrNotPrimary) {
		t.Fatalf("got %v, want ErrNotPrimary", err)
	}
}

// With no serving address, a ticket names circuit addresses through the
// client's relays.
func TestTicketRelayAddresses(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	u := st.NewUser(t, "alice")
	relay, _, err := kez.NewIdentity()
	must(t, err)
	r := "/ip4/198.51.100.7/udp/4002/quic-v1/p2p/" + relay.PublicKey().PeerID().String()
	alice := openWith(t, st, u, client.Config{Identity: u.Identity, Home: u.Home, Relays: []string{r}})
	_, err = alice.Share(devCtx(t), srcFile(t, "notes.txt", 1000))
	must(t, err)
	_, tk := ticketFor(t, alice, "notes.txt")
	if len(tk.Addrs) != 1 || tk.Addrs[0].String() != r+"/p2p-circuit" {
		t.Fatalf("addresses %v", tk.Addrs)
	}
}

// A ticket survives a restart of the owner's serving: the node listens
// on the ports it recorded. A recorded port another program took is
// replaced by a new one, and the log says so; the old ticket then finds
// no one, a new one works.
func TestTicketStablePorts(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	u := st.NewUser(t, "alice")
	alice := openPeer(t, st, u)
	src := srcFile(t, "notes.txt", format.ChunkSize+1)
	_, err := alice.Share(devCtx(t), src)
	must(t, err)
	must(t, alice.StartServing(devCtx(t)))
	_, tk := ticketFor(t, alice, "notes.txt")
	first := alice.Addrs()
	must(t, alice.Close())

	alice = openPeer(t, st, u)
	must(t, alice.StartServing(devCtx(t)))
	if !sameAddrs(first, alice.Addrs()) {
		t.Fatalf("listening on %v after a restart, not %v", alice.Addrs(), first)
	}
	got, err := files.FetchTicket(devCtx(t), tk, t.TempDir(), loopback())
	must(t, err)
	sameFile(t, src, got.Path)
	must(t, alice.Close())

	// Another program takes the port.
	na, err := manet.ToNetAddr(first[0])
	must(t, err)
	l, err := net.Listen("tcp", na.String())
	must(t, err)
	t.Cleanup(func() { l.Close() })
	alice = openPeer(t, st, u)
	must(t, alice.StartServing(devCtx(t)))
	if sameAddrs(first, alice.Addrs()) || len(alice.Addrs()) == 0 {
		t.Fatalf("still on %v", alice.Addrs())
	}
	if !strings.Contains(alice.log.String(), "a listen port used last time is taken") {
		t.Fatalf("the log does not say the port moved:\n%s", alice.log.String())
	}
	cfg := loopback()
	cfg.DialTimeout = time.Second
	if _, err := files.FetchTicket(devCtx(t), tk, t.TempDir(), cfg); !errors.Is(err, files.ErrUnreachable) {
		t.Fatalf("old ticket: %v, want ErrUnreachable", err)
	}
	_, tk2 := ticketFor(t, alice, "notes.txt")
	got, err = files.FetchTicket(devCtx(t), tk2, t.TempDir(), loopback())
	must(t, err)
	sameFile(t, src, got.Path)
}

func sameAddrs(a, b []ma.Multiaddr) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].Equal(b[i]) {
			return false
		}
	}
	return true
}

// A waiting fetch keeps trying while the owner is away and completes
// once they serve again (on the recorded port).
func TestTicketWait(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	u := st.NewUser(t, "alice")
	alice := openPeer(t, st, u)
	src := srcFile(t, "notes.txt", format.ChunkSize+1)
	_, err := alice.Share(devCtx(t), src)
	must(t, err)
	must(t, alice.StartServing(devCtx(t)))
	_, tk := ticketFor(t, alice, "notes.txt")
	must(t, alice.Close())

	waiting := make(chan struct{}, 1)
	done := make(chan error, 1)
	var got *files.Fetched
	cfg := loopback()
	cfg.DialTimeout = time.Second
	go func() {
		var err error
		got, err = files.FetchTicket(devCtx(t), tk, t.TempDir(), cfg, files.WithWait(0, func(int) {
			select {
			case waiting <- struct{}{}:
			default:
			}
		}))
		done <- err
	}()
	<-waiting
	alice = openPeer(t, st, u)
	must(t, alice.StartServing(devCtx(t)))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	sameFile(t, src, got.Path)
}

// srcFile writes size pseudo-random bytes to a fresh file called name.
func srcFile(t testing.TB, name string, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	writeRandom(t, p, size, uint64(size))
	return p
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
