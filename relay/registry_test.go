package relay_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/relay"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	pbv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/pb"
)

// With a registry, only keys a real chat-server knows may reserve: a
// registered person's key may, a stranger's may not; answers are cached;
// anyone may connect through a reservation.
func TestRegistry(t *testing.T) {
	ctx := testCtx(t)
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.NewUser(t, "alice")
	// A real proxy in front of the chat-server counts the device lookups.
	var lookups atomic.Int64
	target, err := url.Parse(st.ServerURL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, handles.DevicesPath+"/") {
			lookups.Add(1)
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(registry.Close)

	clk := &limittest.Clock{}
	r, base := startRelay(t, relay.Config{Registry: registry.URL, Clock: clk.Now, RegistryLookupsPerIP: ratelimit.Limit{N: 5, Per: time.Hour}})

	a := newPeer(t, alice.Identity.Ed25519PrivateKey())
	if _, err := reserve(ctx, a, r); err != nil {
		t.Fatalf("alice's reservation: %v", err)
	}
	if _, err := reserve(ctx, a, r); err != nil || lookups.Load() != 1 {
		t.Fatalf("alice's renewal: %v, %d lookups", err, lookups.Load())
	}
	clk.Add(relay.DefaultRegistryCacheTTL + time.Second)
	if _, err := reserve(ctx, a, r); err != nil || lookups.Load() != 2 {
		t.Fatalf("alice's renewal after the cache expired: %v, %d lookups", err, lookups.Load())
	}

	stranger := newPeer(t, nil)
	var re client.ReservationError
	if _, err := reserve(ctx, stranger, r); !errors.As(err, &re) || re.Status != pbv2.Status_PERMISSION_DENIED {
		t.Fatalf("a stranger's reservation: %v", err)
	}
	if _, err := reserve(ctx, stranger, r); !errors.As(err, &re) || lookups.Load() != 3 {
		t.Fatalf("a stranger again: %v, %d lookups (the refusal is cached)", err, lookups.Load())
	}
	if n := metric(t, base, `kez_relay_refused_total{reason="not_registered"}`); n != 2 {
		t.Errorf("refused not_registered = %v", n)
	}

	// alice's linked device may reserve; once revoked, it may not.
	laptop := st.AddDevice(t, alice, "laptop")
	oldPhone := st.AddDevice(t, alice, "old phone")
	st.RevokeDevice(t, alice, oldPhone.PublicKey())
	if _, err := reserve(ctx, newPeer(t, laptop.Ed25519PrivateKey()), r); err != nil {
		t.Fatalf("alice's device: %v", err)
	}
	if _, err := reserve(ctx, newPeer(t, oldPhone.Ed25519PrivateKey()), r); !errors.As(err, &re) || re.Status != pbv2.Status_PERMISSION_DENIED {
		t.Fatalf("alice's revoked device: %v", err)
	}
	if n := metric(t, base, `kez_relay_refused_total{reason="not_registered"}`); n != 3 {
		t.Errorf("refused not_registered = %v", n)
	}

	// The stranger may still reach alice through her reservation.
	a.SetStreamHandler(testProto, func(s network.Stream) { s.Close() })
	if _, err := through(ctx, t, stranger, r, a.ID()); err != nil {
		t.Fatalf("a stranger connecting to alice: %v", err)
	}

	// One address asking about many unknown keys is held back before the
	// registry is asked: 3 per hour here, and three were asked.
	if _, err := reserve(ctx, newPeer(t, nil), r); !errors.As(err, &re) || re.Status != pbv2.Status_PERMISSION_DENIED || lookups.Load() != 5 {
		t.Fatalf("a fourth lookup from 127.0.0.1: %v, %d lookups", err, lookups.Load())
	}
	if n := metric(t, base, `kez_relay_refused_total{reason="registry_rate"}`); n != 1 {
		t.Errorf("refused registry_rate = %v", n)
	}
}

// A registry that cannot answer refuses (fail closed), and counts it.
func TestRegistryUnreachable(t *testing.T) {
	ctx := testCtx(t)
	for name, h := range map[string]http.Handler{
		"down": nil,
		"5xx": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, `{"error":"later"}`, http.StatusServiceUnavailable)
		}),
		"garbage": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }),
	} {
		t.Run(name, func(t *testing.T) {
			srv := httptest.NewServer(h)
			if h == nil {
				srv.Close()
			} else {
				t.Cleanup(srv.Close)
			}
			r, base := startRelay(t, relay.Config{Registry: srv.URL})
			var re client.ReservationError
			if _, err := reserve(ctx, newPeer(t, nil), r); !errors.As(err, &re) || re.Status != pbv2.Status_PERMISSION_DENIED {
				t.Fatalf("a reservation with the registry %s: %v", name, err)
			}
			if n := metric(t, base, `kez_relay_refused_total{reason="registry_unreachable"}`); n != 1 {
				t.Errorf("refused registry_unreachable = %v", n)
			}
		})
	}
}
