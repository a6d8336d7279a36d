package relay_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/relay"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
)

var quiet = slog.New(slog.DiscardHandler)

// testProto is the protocol the test peers speak through the relay.
const testProto = protocol.ID("/kez-relay-test/1")

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// startRelay runs a relay on loopback TCP, closed in t.Cleanup, and
// serves its Handler on a real HTTP server.
func startRelay(t *testing.T, cfg relay.Config) (*relay.Relay, string) {
	t.Helper()
	if len(cfg.Listen) == 0 {
		cfg.Listen = []ma.Multiaddr{ma.StringCast("/ip4/127.0.0.1/tcp/0")}
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	r, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	srv := httptest.NewServer(r.Handler())
	t.Cleanup(srv.Close)
	return r, srv.URL
}

// newPeer is a libp2p host on loopback TCP with the relay transport (a
// circuit v2 client), closed in t.Cleanup. key nil: a fresh one.
func newPeer(t *testing.T, key ed25519.PrivateKey) host.Host {
	t.Helper()
	if key == nil {
		_, key, _ = ed25519.GenerateKey(nil)
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	h, err := libp2p.New(
		libp2p.Identity(priv),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.EnableRelay(),
		libp2p.DisableMetrics(),
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// reserve makes h reserve a slot at r.
func reserve(ctx context.Context, h host.Host, r *relay.Relay) (*client.Reservation, error) {
	return client.Reserve(ctx, h, r.AddrInfo())
}

// through opens a stream from h to target through the relay: the
// connection is a circuit (limited, as the relay has limits).
func through(ctx context.Context, t *testing.T, h host.Host, r *relay.Relay, target peer.ID) (network.Stream, error) {
	t.Helper()
	circuit, err := ma.NewMultiaddr(r.Addrs()[0].String() + "/p2p-circuit")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Connect(ctx, peer.AddrInfo{ID: target, Addrs: []ma.Multiaddr{circuit}}); err != nil {
		return nil, err
	}
	return h.NewStream(network.WithAllowLimitedConn(ctx, "relay test"), target, testProto)
}

// metric reads one sample of the relay's /metrics, e.g.
// `kez_relay_refused_total{reason="not_registered"}`; absent is 0.
func metric(t *testing.T, base, sample string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if ok && name == sample {
			v, err := strconv.ParseFloat(value, 64)
			if err != nil {
				t.Fatalf("%s: %v", sc.Text(), err)
			}
			return v
		}
	}
	return 0
}

// waitMetric waits until sample reads want: go-libp2p's relay reports a
// request to the tracer only after it answered the peer, so a test that
// saw the answer polls for the count (up to 10 s).
func waitMetric(t *testing.T, base, sample string, want float64) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for {
		got := metric(t, base, sample)
		if got == want {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s = %v, want %v", sample, got, want)
		}
	}
}

// sink reads s to its end and reports how many bytes came and the error
// that ended it (nil for EOF).
func sink(s io.Reader) (int64, error) { return io.Copy(io.Discard, s) }

// pattern is n bytes of a fixed pattern.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}
