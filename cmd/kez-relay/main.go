// Command kez-relay runs a KEZ relay: a libp2p circuit relay v2 (with
// the AutoNAT v2 server and identify) that lets KEZ users behind NAT share
// files when no direct or hole-punched path works. It is optional and
// separate from the chat-server; the chat-server's --relay offers its
// addresses to users. It is a thin wrapper around package relay.
//
//	kez-relay [--listen /ip4/0.0.0.0/tcp/4002,/ip4/0.0.0.0/udp/4002/quic-v1] [--announce MULTIADDR,…]
//	          [--key kez-relay.key] [--http 127.0.0.1:9102]
//	          [--max-reservations 128] [--max-reservations-per-ip 8] [--max-circuits 16]
//	          [--max-circuits-per-ip 64] [--max-circuits-per-ip-to-peer 4]
//	          [--circuit-duration 1h] [--circuit-data 4G] [--circuit-rate 0] [--total-rate 0]
//	          [--reservation-ttl 1h] [--registry URL] [--registry-lookups-per-ip 30/1m]
//	          [--log-format text|json] [--log-level info]
//
// Every flag has an environment twin (KEZ_RELAY_LISTEN, KEZ_RELAY_ANNOUNCE,
// KEZ_RELAY_KEY, KEZ_RELAY_HTTP, KEZ_RELAY_MAX_RESERVATIONS,
// KEZ_RELAY_MAX_RESERVATIONS_PER_IP, KEZ_RELAY_MAX_CIRCUITS,
// KEZ_RELAY_MAX_CIRCUITS_PER_IP, KEZ_RELAY_MAX_CIRCUITS_PER_IP_TO_PEER,
// KEZ_RELAY_CIRCUIT_DURATION, KEZ_RELAY_CIRCUIT_DATA,
// KEZ_RELAY_CIRCUIT_RATE, KEZ_RELAY_TOTAL_RATE, KEZ_RELAY_RESERVATION_TTL,
// KEZ_RELAY_REGISTRY, KEZ_RELAY_REGISTRY_LOOKUPS_PER_IP,
// KEZ_RELAY_LOG_FORMAT, KEZ_RELAY_LOG_LEVEL); flags win. The key file
// (the relay's identity, its peer id) is made with mode 0600 on first
// start. At start the relay prints its addresses, each ending in
// /p2p/<peer id>, as --relay flags for the chat-server. It serves
// /healthz, /readyz and Prometheus /metrics on --http, and shuts down
// gracefully on SIGTERM or SIGINT (docs/operators.md, "Relay").
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/relay"
	ma "github.com/multiformats/go-multiaddr"
)

func main() {
	servercmd.Main("kez-relay", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
	})
}

// run is the whole program; onListen (may be nil) receives the bound
// HTTP address, after the relay's addresses were printed, for tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, onListen func(net.Addr)) error {
	env := servercmd.Env(getenv)
	fs := servercmd.NewFlagSet("kez-relay", "usage: kez-relay [flags]\n\n"+
		"Runs a libp2p circuit relay for KEZ file sharing behind NAT. It prints its\n"+
		"addresses at start: give them to the chat-server (--relay), which offers them\n"+
		"to its users.", stderr)
	listen := fs.String("listen", env.Or("KEZ_RELAY_LISTEN", strings.Join(relay.DefaultListen, ",")), "comma-separated multiaddrs to listen on (env KEZ_RELAY_LISTEN)")
	announce := fs.String("announce", env.Or("KEZ_RELAY_ANNOUNCE", ""), "comma-separated multiaddrs to tell peers instead of the listening ones: the public addresses behind a port forward or a container (env KEZ_RELAY_ANNOUNCE)")
	keyFile := fs.String("key", env.Or("KEZ_RELAY_KEY", "kez-relay.key"), "file of the relay's key, its identity: made (mode 0600) on first start; keep it (env KEZ_RELAY_KEY)")
	httpAddr := fs.String("http", env.Or("KEZ_RELAY_HTTP", "127.0.0.1:9102"), "address of /metrics, /healthz and /readyz (env KEZ_RELAY_HTTP)")
	maxRes := fs.Int("max-reservations", relay.DefaultMaxReservations, "slots peers may reserve at once (env KEZ_RELAY_MAX_RESERVATIONS)")
	maxResIP := fs.Int("max-reservations-per-ip", relay.DefaultMaxReservationsPerIP, "slots one IP address may hold (env KEZ_RELAY_MAX_RESERVATIONS_PER_IP)")
	maxCircuits := fs.Int("max-circuits", relay.DefaultMaxCircuits, "circuits open at once to or from one peer (env KEZ_RELAY_MAX_CIRCUITS)")
	maxCircuitsIP := fs.Int("max-circuits-per-ip", relay.DefaultMaxCircuitsPerIP, "circuits peers at one IP address (an IPv6 /64) may hold open at once (env KEZ_RELAY_MAX_CIRCUITS_PER_IP)")
	maxCircuitsIPPeer := fs.Int("max-circuits-per-ip-to-peer", relay.DefaultMaxCircuitsPerIPToPeer, "circuits peers at one IP address may hold open at once to one peer (env KEZ_RELAY_MAX_CIRCUITS_PER_IP_TO_PEER)")
	duration := fs.Duration("circuit-duration", relay.DefaultCircuitDuration, "how long a circuit may stay open; 0: no limit (env KEZ_RELAY_CIRCUIT_DURATION)")
	ttl := fs.Duration("reservation-ttl", relay.DefaultReservationTTL, "how long a reservation lasts before the peer renews it (env KEZ_RELAY_RESERVATION_TTL)")
	var data, circuitRate, totalRate int64
	servercmd.BytesVar(fs, &data, "circuit-data", relay.DefaultCircuitData, "bytes a circuit may carry each way before it is cut, with k/M/G/T suffixes; 0: no limit (env KEZ_RELAY_CIRCUIT_DATA)")
	servercmd.BytesVar(fs, &circuitRate, "circuit-rate", 0, "bytes per second a circuit may carry each way, with k/M/G suffixes; 0: no limit (env KEZ_RELAY_CIRCUIT_RATE)")
	servercmd.BytesVar(fs, &totalRate, "total-rate", 0, "bytes per second all circuits may carry together, with k/M/G suffixes; 0: no limit (env KEZ_RELAY_TOTAL_RATE)")
	registry := fs.String("registry", env.Or("KEZ_RELAY_REGISTRY", ""), "base URL of a KEZ chat-server: only keys registered there may reserve a slot; connecting through one stays open to anyone (env KEZ_RELAY_REGISTRY)")
	var lookups ratelimit.Limit
	limitFlags := []servercmd.LimitFlag{{Name: "registry-lookups-per-ip", Env: "KEZ_RELAY_REGISTRY_LOOKUPS_PER_IP", Limit: &lookups, Default: relay.DefaultRegistryLookupsPerIP,
		Usage: "questions to the --registry about keys not yet known that one IP address may cause"}}
	servercmd.DeclareLimits(fs, limitFlags)
	var lf servercmd.LogFlags
	lf.Declare(fs, env, "KEZ_RELAY")
	if ok, err := servercmd.Parse(fs, args, "kez-relay takes flags only; see --help"); !ok {
		return err
	}
	for _, f := range []struct {
		flag, env string
		v         *int
	}{{"max-reservations", "KEZ_RELAY_MAX_RESERVATIONS", maxRes}, {"max-reservations-per-ip", "KEZ_RELAY_MAX_RESERVATIONS_PER_IP", maxResIP}, {"max-circuits", "KEZ_RELAY_MAX_CIRCUITS", maxCircuits}, {"max-circuits-per-ip", "KEZ_RELAY_MAX_CIRCUITS_PER_IP", maxCircuitsIP}, {"max-circuits-per-ip-to-peer", "KEZ_RELAY_MAX_CIRCUITS_PER_IP_TO_PEER", maxCircuitsIPPeer}} {
		if err := env.Int(fs, f.flag, f.env, f.v); err != nil {
			return err
		}
		if *f.v < 1 {
			return servercmd.Usagef("--%s %d: want at least 1", f.flag, *f.v)
		}
	}
	for _, f := range []struct {
		flag, env string
		v         *int64
	}{{"circuit-data", "KEZ_RELAY_CIRCUIT_DATA", &data}, {"circuit-rate", "KEZ_RELAY_CIRCUIT_RATE", &circuitRate}, {"total-rate", "KEZ_RELAY_TOTAL_RATE", &totalRate}} {
		if err := env.Bytes(fs, f.flag, f.env, f.v); err != nil {
			return err
		}
	}
	if err := env.Duration(fs, "circuit-duration", "KEZ_RELAY_CIRCUIT_DURATION", duration); err != nil {
		return err
	}
	if err := env.Duration(fs, "reservation-ttl", "KEZ_RELAY_RESERVATION_TTL", ttl); err != nil {
		return err
	}
	if err := env.Limits(fs, limitFlags); err != nil {
		return err
	}
	if *duration < 0 {
		return servercmd.Usagef("--circuit-duration %v: want a positive duration, or 0 for no limit", *duration)
	}
	if *ttl < relay.MinReservationTTL {
		return servercmd.Usagef("--reservation-ttl %v: want at least %v", *ttl, relay.MinReservationTTL)
	}
	if lookups.Off() {
		return servercmd.Usagef("--registry-lookups-per-ip off: the relay would ask the registry about every key anyone makes up; give a limit")
	}
	listenAddrs, err := multiaddrs("--listen", *listen)
	if err != nil {
		return err
	}
	if len(listenAddrs) == 0 {
		return servercmd.Usagef("--listen is empty: give at least one multiaddr, e.g. /ip4/0.0.0.0/tcp/4002")
	}
	announceAddrs, err := multiaddrs("--announce", *announce)
	if err != nil {
		return err
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		return err
	}
	key, err := relay.LoadKey(*keyFile)
	if err != nil {
		return err
	}
	cfg := relay.Config{
		Key: key, Listen: listenAddrs, Announce: announceAddrs,
		MaxReservations: *maxRes, MaxReservationsPerIP: *maxResIP, MaxCircuits: *maxCircuits,
		MaxCircuitsPerIP: *maxCircuitsIP, MaxCircuitsPerIPToPeer: *maxCircuitsIPPeer,
		CircuitDuration: unlimited(*duration), CircuitData: unlimited(data),
		CircuitRate: circuitRate, TotalRate: totalRate, ReservationTTL: *ttl,
		Registry: *registry, RegistryLookupsPerIP: lookups,
		Metrics: servercmd.NewRegistry(), Logger: log,
	}
	r, err := relay.New(cfg)
	if err != nil {
		return usageIfConfig(err)
	}
	defer r.Close()
	fmt.Fprintf(stdout, "kez-relay %s is running. Give the chat-server its addresses that peers can reach:\n", r.ID())
	for _, a := range r.Addrs() {
		fmt.Fprintf(stdout, "  --relay %s\n", a)
	}
	log.Info("limits", "max_reservations", *maxRes, "max_reservations_per_ip", *maxResIP, "max_circuits", *maxCircuits,
		"circuit_duration", *duration, "circuit_data", data, "circuit_rate", circuitRate, "total_rate", totalRate,
		"reservation_ttl", *ttl, "registry", *registry)
	return httpserve.ListenAndServe(ctx, *httpAddr, r.Handler(), log, onListen)
}

// multiaddrs parses a comma-separated list of multiaddrs.
func multiaddrs(flag, s string) ([]ma.Multiaddr, error) {
	var out []ma.Multiaddr
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		a, err := ma.NewMultiaddr(f)
		if err != nil {
			return nil, servercmd.Usagef("%s %q: not a multiaddr (e.g. /ip4/203.0.113.7/tcp/4002): %w", flag, f, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// unlimited maps the flags' 0 (no limit) to the library's.
func unlimited[T ~int64](v T) T {
	if v == 0 {
		return relay.Unlimited
	}
	return v
}

// usageIfConfig marks a configuration the relay refused as a usage error.
func usageIfConfig(err error) error {
	if errors.Is(err, relay.ErrConfig) {
		return servercmd.UsageError{Err: err}
	}
	return err
}
