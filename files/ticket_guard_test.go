package files

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// guardTicket signs a public ticket of testID(1) for a 1-byte blob named
// n.txt, served by device at addrs, with sigServer.
func guardTicket(t *testing.T, device byte, sigServer string, addrs ...string) *Ticket {
	t.Helper()
	owner := testID(t, 1)
	tk := &Ticket{Owner: owner.PublicKey(), Device: testID(t, device).PublicKey(), CID: blobCID(t, 7), Size: 1,
		Expires: time.Now().Add(time.Hour).Truncate(time.Second), Name: "n.txt", SigServer: sigServer, Addrs: mustMultiaddrs(t, addrs...)}
	text, err := SignTicket(owner, tk)
	if err != nil {
		t.Fatal(err)
	}
	if tk, err = ParseTicket(text, time.Now()); err != nil {
		t.Fatal(err)
	}
	return tk
}

// countingListener counts the TCP connections made to a loopback port,
// closing each once counted.
func countingListener(t *testing.T) (port int, n *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	n = new(atomic.Int64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			c.Close()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port, n
}

// A ticket whose sig-server is the fetcher's own machine (loopback, by
// address or by a name resolving to it) makes no request there unless
// the fetcher allows local addresses; and the sig-server's redirects are
// not followed even then.
func TestTicketSigServerLocalRefused(t *testing.T) {
	var hits, redirected atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { redirected.Add(1) }))
	defer target.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, target.URL+r.URL.Path, http.StatusFound)
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, url := range []string{srv.URL, fmt.Sprintf("http://localhost:%d", port)} {
		// Device 4 is not the owner's key: the fetcher needs the chain.
		tk := guardTicket(t, 4, url, "/ip4/1.1.1.1/tcp/9")
		_, err := FetchTicket(ctx, tk, t.TempDir(), TicketFetchConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}})
		if !errors.Is(err, ErrLocalAddress) || hits.Load() != 0 {
			t.Fatalf("%s: %v, %d requests", url, err, hits.Load())
		}
	}
	tk := guardTicket(t, 4, srv.URL, "/ip4/1.1.1.1/tcp/9")
	_, err := FetchTicket(ctx, tk, t.TempDir(), TicketFetchConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, AllowLocal: true})
	if err == nil || hits.Load() != 1 || redirected.Load() != 0 {
		t.Fatalf("allowed: %v, %d requests, %d redirected", err, hits.Load(), redirected.Load())
	}
}

// A ticket's addresses on the fetcher's machine — loopback, a name that
// resolves to it, a circuit through a relay there — are not dialled
// unless the fetcher allows local addresses.
func TestTicketLocalAddrsNotDialled(t *testing.T) {
	port, n := countingListener(t)
	relay := testID(t, 6).PublicKey().PeerID()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := TicketFetchConfig{ListenAddrs: []string{"/ip4/127.0.0.1/tcp/0"}, DialTimeout: 20 * time.Second}
	for _, c := range []struct {
		addr string
		want error
	}{
		{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port), ErrLocalAddress},
		{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s/p2p-circuit", port, relay), ErrLocalAddress},
		{fmt.Sprintf("/dns4/localhost/tcp/%d", port), ErrUnreachable},
	} {
		_, err := FetchTicket(ctx, guardTicket(t, 1, "", c.addr), t.TempDir(), cfg)
		if !errors.Is(err, c.want) || n.Load() != 0 {
			t.Fatalf("%s: %v, %d connections", c.addr, err, n.Load())
		}
	}
	// Allowed, the address is dialled (and the listener, not a libp2p
	// node, ends the attempt).
	cfg.AllowLocal = true
	_, err := FetchTicket(ctx, guardTicket(t, 1, "", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", port)), t.TempDir(), cfg)
	if !errors.Is(err, ErrUnreachable) || n.Load() == 0 {
		t.Fatalf("allowed: %v, %d connections", err, n.Load())
	}
}
