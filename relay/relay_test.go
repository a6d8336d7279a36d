package relay_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/relay"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
	ma "github.com/multiformats/go-multiaddr"
)

// A peer reserves a slot; a second connects to it through the relay and
// they move bytes both ways; the relay counts them.
func TestCircuit(t *testing.T) {
	ctx := testCtx(t)
	r, base := startRelay(t, relay.Config{})
	for _, a := range r.Addrs() {
		if !strings.HasSuffix(a.String(), "/p2p/"+r.ID().String()) {
			t.Fatalf("address %s does not end in the relay's peer id", a)
		}
	}
	alice, bob := newPeer(t, nil), newPeer(t, nil)
	rsvp, err := reserve(ctx, alice, r)
	if err != nil {
		t.Fatal(err)
	}
	if rsvp.LimitData != relay.DefaultCircuitData || rsvp.LimitDuration != relay.DefaultCircuitDuration {
		t.Errorf("the reservation's limits: %d bytes, %v", rsvp.LimitData, rsvp.LimitDuration)
	}
	if d := time.Until(rsvp.Expiration); d < 59*time.Minute || d > relay.DefaultReservationTTL {
		t.Errorf("the reservation expires in %v", d)
	}
	// alice echoes.
	alice.SetStreamHandler(testProto, func(s network.Stream) {
		defer s.Close()
		io.Copy(s, s)
	})
	s, err := through(ctx, t, bob, r, alice.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Conn().Stat().Limited || !strings.Contains(s.Conn().RemoteMultiaddr().String(), "/p2p-circuit") {
		t.Fatalf("the connection is not a circuit: %s", s.Conn().RemoteMultiaddr())
	}
	want := pattern(1 << 20)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Write(want)
		if err == nil {
			err = s.CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(s)
	if err != nil || <-errc != nil || !bytes.Equal(got, want) {
		t.Fatalf("echo through the relay: %d bytes, %v", len(got), err)
	}
	for _, dir := range []string{"to_target", "from_target"} {
		if n := metric(t, base, `kez_relay_bytes_total{direction="`+dir+`"}`); n < 1<<20 {
			t.Errorf("kez_relay_bytes_total %s = %v, want at least 1 MiB", dir, n)
		}
	}
	if n := metric(t, base, "libp2p_relaysvc_data_transferred_bytes_total"); n < 2<<20 {
		t.Errorf("go-libp2p's relay metrics: %v bytes", n)
	}
}

// More reservations from one IP than allowed, or in all, are refused;
// so are circuits over the per-peer limit and circuits to a peer without
// a reservation.
func TestReservationAndCircuitLimits(t *testing.T) {
	ctx := testCtx(t)
	r, base := startRelay(t, relay.Config{MaxReservationsPerIP: 2, MaxCircuits: 1})
	a, b, c := newPeer(t, nil), newPeer(t, nil), newPeer(t, nil)
	if _, err := reserve(ctx, a, r); err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(ctx, b, r); err != nil {
		t.Fatal(err)
	}
	var re client.ReservationError
	if _, err := reserve(ctx, c, r); !errors.As(err, &re) || re.Status != pbv2.Status_RESERVATION_REFUSED {
		t.Fatalf("a third reservation from 127.0.0.1: %v", err)
	}
	waitMetric(t, base, `kez_relay_refused_total{reason="reservation_limit"}`, 1)
	// Renewing one's own reservation is no new one.
	if _, err := reserve(ctx, a, r); err != nil {
		t.Fatalf("a renewal: %v", err)
	}

	a.SetStreamHandler(testProto, func(s network.Stream) { io.Copy(io.Discard, s); s.Close() })
	if _, err := through(ctx, t, b, r, a.ID()); err != nil {
		t.Fatal(err)
	}
	// a already has its one circuit.
	if _, err := through(ctx, t, c, r, a.ID()); err == nil {
		t.Fatal("a second circuit to a peer with MaxCircuits 1")
	}
	waitMetric(t, base, `kez_relay_refused_total{reason="circuit_limit"}`, 1)
	// c holds no reservation.
	if _, err := through(ctx, t, b, r, c.ID()); err == nil {
		t.Fatal("a circuit to a peer without a reservation")
	}
	waitMetric(t, base, `kez_relay_refused_total{reason="no_reservation"}`, 1)

	// The total: one slot, held by a.
	r2, base2 := startRelay(t, relay.Config{MaxReservations: 1})
	if _, err := reserve(ctx, a, r2); err != nil {
		t.Fatal(err)
	}
	if _, err := reserve(ctx, b, r2); !errors.As(err, &re) || re.Status != pbv2.Status_RESERVATION_REFUSED {
		t.Fatalf("a reservation over MaxReservations: %v", err)
	}
	waitMetric(t, base2, `kez_relay_refused_total{reason="reservation_limit"}`, 1)
}

// A circuit is cut once it carried its data limit one way, and once its
// duration is over.
func TestCircuitCut(t *testing.T) {
	ctx := testCtx(t)
	const limit = 64 << 10
	r, _ := startRelay(t, relay.Config{CircuitData: limit})
	alice, bob := newPeer(t, nil), newPeer(t, nil)
	if _, err := reserve(ctx, alice, r); err != nil {
		t.Fatal(err)
	}
	alice.SetStreamHandler(testProto, func(s network.Stream) {
		s.Write(pattern(1 << 20)) // fails once the relay cut it
		s.Close()
	})
	s, err := through(ctx, t, bob, r, alice.ID())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := sink(s); n > limit {
		t.Fatalf("%d bytes came through a circuit limited to %d", n, limit)
	}

	r2, _ := startRelay(t, relay.Config{CircuitDuration: time.Second, CircuitData: relay.Unlimited})
	carol, dave := newPeer(t, nil), newPeer(t, nil)
	if _, err := reserve(ctx, carol, r2); err != nil {
		t.Fatal(err)
	}
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	carol.SetStreamHandler(testProto, func(s network.Stream) {
		s.Write([]byte("hello"))
		<-hold // keeps the stream open: only the relay ends it
		s.Reset()
	})
	s, err = through(ctx, t, dave, r2, carol.ID())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	n, err := sink(s)
	if n != 5 {
		t.Fatalf("%d bytes before the cut, %v", n, err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the circuit lasted %v", d)
	}
}

// The per-circuit and total rates hold: moving n bytes at rate R takes
// at least (n - burst)/R, and the relay counts the waiting.
func TestRates(t *testing.T) {
	const rate = 512 << 10
	const size = 1 << 20
	for name, cfg := range map[string]relay.Config{
		"circuit": {CircuitRate: rate},
		"total":   {TotalRate: rate},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			r, base := startRelay(t, cfg)
			alice, bob := newPeer(t, nil), newPeer(t, nil)
			if _, err := reserve(ctx, alice, r); err != nil {
				t.Fatal(err)
			}
			alice.SetStreamHandler(testProto, func(s network.Stream) {
				s.Write(pattern(size))
				s.Close()
			})
			s, err := through(ctx, t, bob, r, alice.ID())
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if n, err := sink(s); n != size || err != nil {
				t.Fatalf("%d bytes, %v", n, err)
			}
			// The bucket holds a tenth of a second: at most that much comes
			// early.
			if d, min := time.Since(start), time.Duration(size-rate/10)*time.Second/rate; d < min {
				t.Errorf("%d bytes at %d B/s took %v, under %v", size, rate, d, min)
			}
			if w := metric(t, base, "kez_relay_rate_limited_seconds_total"); w < 1 {
				t.Errorf("kez_relay_rate_limited_seconds_total = %v", w)
			}
		})
	}
}

// The metrics endpoint and the probes.
func TestHandler(t *testing.T) {
	r, base := startRelay(t, relay.Config{})
	for path, want := range map[string]string{
		"/metrics": `kez_relay_refused_total{reason="registry_unreachable"} 0`,
		"/healthz": "ok",
		"/readyz":  "ready",
	} {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("%s: %d, lacks %q", path, resp.StatusCode, want)
		}
	}
	for _, want := range []string{"kez_relay_bytes_total", "kez_relay_rate_limited_seconds_total", "libp2p_relaysvc_status"} {
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	r.Close()
	resp, err := http.Get(base + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz after Close: %d", resp.StatusCode)
	}
	if err := r.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]relay.Config{
		"short key":          {Key: make([]byte, 10)},
		"negative count":     {MaxCircuits: -1},
		"negative duration":  {CircuitDuration: -2},
		"negative data":      {CircuitData: -5},
		"negative rate":      {CircuitRate: -1},
		"short TTL":          {ReservationTTL: time.Millisecond},
		"registry not http":  {Registry: "ftp://registry"},
		"registry password":  {Registry: "https://u:p@registry"},
		"registry query":     {Registry: "https://registry/?x=1"},
		"huge duration":      {CircuitDuration: 200 * 365 * 24 * time.Hour},
		"announce with /p2p": {Announce: []ma.Multiaddr{ma.StringCast("/ip4/192.0.2.1/tcp/4002/p2p/12D3KooWGRUVh7J9thJ9ik9tEBE1pEpZeLD1W5z4GxqzPMxB5Nh8")}},
	} {
		if _, err := relay.New(cfg); !errors.Is(err, relay.ErrConfig) {
			t.Errorf("%s: %v, want ErrConfig", name, err)
		}
	}
}
