package relay

import (
	"crypto/ed25519"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// A stranger with an IPv6 /64 (what one subscriber usually gets) took a
// new address for every unknown key and so made the relay ask the
// registry without bound: the lookup limit was per whole address. It is
// now per /64, as the chat-server's own limits.
func TestRegistryLookupsPerIPv6Prefix(t *testing.T) {
	var lookups atomic.Int64
	registry := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lookups.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":"not found"}`))
	}))
	t.Cleanup(registry.Close)
	cfg := Config{Registry: registry.URL, RegistryLookupsPerIP: ratelimit.Limit{N: 3, Per: time.Hour}}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	acl := newRegistryACL(cfg, newMetrics(prometheus.NewRegistry()))
	for i := range 10 {
		a := ma.StringCast(fmt.Sprintf("/ip6/2001:db8:0:1::%x/tcp/4001", i+1))
		acl.AllowReserve(strangerID(t), a)
	}
	if n := lookups.Load(); n != 3 {
		t.Fatalf("ten addresses of one /64 made %d lookups, want 3", n)
	}
	acl.AllowReserve(strangerID(t), ma.StringCast("/ip6/2001:db8:0:2::1/tcp/4001"))
	if n := lookups.Load(); n != 4 {
		t.Fatalf("another /64 made %d lookups in all, want 4", n)
	}
}

func strangerID(t *testing.T) peer.ID {
	_, k, _ := ed25519.GenerateKey(nil)
	priv, err := crypto.UnmarshalEd25519PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
