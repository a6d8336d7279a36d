// Package relay runs a KEZ relay: a libp2p host that lets two peers that
// cannot dial each other (both behind NAT, say) still share files. It is
// go-libp2p's own circuit relay v2 service (a peer behind NAT reserves a
// slot, others connect to it through the relay), with the AutoNAT v2
// server (it dials peers back so they learn whether they are reachable)
// and identify (it tells peers the address it sees them at, which hole
// punching needs) — plus limits on reservations, circuits and bandwidth,
// an optional registry check of who may reserve, and Prometheus metrics.
//
// A relay sees only encrypted libp2p traffic (the peers' own secure
// channel runs through the circuit) and which peers connect to which.
//
//	r, err := relay.New(relay.Config{Key: key, Announce: public})
//	if err != nil { … }
//	defer r.Close()
//	fmt.Println(r.Addrs()) // for the chat-server's --relay
//	http.ListenAndServe("127.0.0.1:9102", r.Handler())
//
// Command kez-relay is a thin wrapper around this package.
package relay

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of [Config].
const (
	DefaultMaxReservations      = 128
	DefaultMaxReservationsPerIP = 8
	DefaultMaxCircuits          = 16
	DefaultMaxCircuitsPerIP     = 64
	// DefaultMaxCircuitsPerIPToPeer leaves three quarters of a target's
	// DefaultMaxCircuits to other addresses.
	DefaultMaxCircuitsPerIPToPeer = 4
	DefaultCircuitDuration        = time.Hour
	DefaultCircuitData            = 4 << 30 // bytes each way
	DefaultReservationTTL         = time.Hour
	// MinReservationTTL is the shortest ReservationTTL: peers renew their
	// reservation before it ends.
	MinReservationTTL = time.Minute
	// DefaultRegistryCacheTTL is how long an answer of the registry is
	// kept: a known key for this long, an unknown one for a tenth of it.
	DefaultRegistryCacheTTL = 10 * time.Minute
	// DefaultRegistryCacheSize bounds the keys whose answer is kept.
	DefaultRegistryCacheSize = 10_000
	// RegistryTimeout bounds one question to the registry.
	RegistryTimeout = 5 * time.Second
)

// DefaultListen are the addresses a relay listens on when
// [Config].Listen is empty: TCP and QUIC v1 on port 4002 of every IPv4
// interface.
var DefaultListen = []string{"/ip4/0.0.0.0/tcp/4002", "/ip4/0.0.0.0/udp/4002/quic-v1"}

// DefaultRegistryLookupsPerIP bounds how often one IP address may make
// the relay ask the registry about a key it does not know yet.
var DefaultRegistryLookupsPerIP = ratelimit.Limit{N: 30, Per: time.Minute}

// Unlimited, as [Config].CircuitDuration or CircuitData, turns that limit
// off.
const Unlimited = -1

// bufferSize is the relay's copy buffer per direction of a circuit (and
// so the largest read the rate limits see).
const bufferSize = 16 << 10

// ErrConfig reports a [Config] that [New] cannot run.
var ErrConfig = errors.New("relay: bad configuration")

// Config configures [New]. The zero value runs a relay with a fresh key
// on [DefaultListen] with the default limits.
type Config struct {
	// Key is the relay's identity (its peer id): keep it, or the
	// addresses operators gave out stop working. nil: a fresh key
	// ([LoadKey] keeps one in a file).
	Key ed25519.PrivateKey
	// Listen are the multiaddrs to listen on. Empty: [DefaultListen].
	Listen []ma.Multiaddr
	// Announce, if set, are the addresses the relay tells peers instead
	// of those it listens on (public addresses behind a port forward or
	// in a container). They are also handed out in reservations even
	// when they are not public internet addresses.
	Announce []ma.Multiaddr

	// MaxReservations bounds the slots reserved at once; 0:
	// [DefaultMaxReservations].
	MaxReservations int
	// MaxReservationsPerIP bounds the slots one IP address holds; 0:
	// [DefaultMaxReservationsPerIP].
	MaxReservationsPerIP int
	// MaxCircuits bounds the circuits open at once to or from one peer;
	// 0: [DefaultMaxCircuits].
	MaxCircuits int
	// MaxCircuitsPerIP bounds the circuits that peers connecting from one
	// IP address (an IPv6 /64) hold open at once, to all targets; 0:
	// [DefaultMaxCircuitsPerIP].
	MaxCircuitsPerIP int
	// MaxCircuitsPerIPToPeer bounds those to one target; 0:
	// [DefaultMaxCircuitsPerIPToPeer]. MaxCircuits alone counts per peer
	// id, which costs nothing: one address could hold all of a target's.
	MaxCircuitsPerIPToPeer int
	// CircuitDuration is how long a circuit may stay open before the
	// relay cuts it; 0: [DefaultCircuitDuration]; [Unlimited]: no limit.
	CircuitDuration time.Duration
	// CircuitData is how many bytes a circuit may carry each way before
	// the relay cuts it; 0: [DefaultCircuitData]; [Unlimited]: no limit.
	CircuitData int64
	// CircuitRate bounds the bytes per second a circuit carries each way
	// (a token bucket); 0: no limit.
	CircuitRate int64
	// TotalRate bounds the bytes per second all circuits carry together,
	// both ways counted; 0: no limit.
	TotalRate int64
	// ReservationTTL is how long a reservation lasts before the peer must
	// renew it; 0: [DefaultReservationTTL].
	ReservationTTL time.Duration

	// Registry, if set, is the base URL of a KEZ chat-server: only keys
	// it knows (a person's key or a current device's, not suspended or
	// revoked) may reserve a slot. Connecting through a reservation stays
	// open to anyone. A registry that cannot answer means no (and is
	// counted in kez_relay_refused_total{reason="registry_unreachable"}).
	Registry string
	// RegistryClient asks the registry. nil: a client with a
	// [RegistryTimeout] timeout.
	RegistryClient *http.Client
	// RegistryCacheTTL and RegistryCacheSize: see
	// [DefaultRegistryCacheTTL] and [DefaultRegistryCacheSize] (the
	// defaults for 0).
	RegistryCacheTTL  time.Duration
	RegistryCacheSize int
	// RegistryLookupsPerIP bounds the registry questions one IP address
	// may cause (keys not in the cache); zero: [DefaultRegistryLookupsPerIP].
	RegistryLookupsPerIP ratelimit.Limit

	// Metrics receives the relay's metrics (go-libp2p's and
	// kez_relay_*), served by [Relay.Handler]. nil: a new registry.
	Metrics *prometheus.Registry
	// Logger receives the relay's logs. nil: slog.Default().
	Logger *slog.Logger
	// Clock dates the registry cache; nil: time.Now.
	Clock func() time.Time
}

// Relay is a running relay. Its methods are safe for concurrent use.
type Relay struct {
	host    host.Host
	svc     *relayv2.Relay
	metrics *metrics
	reg     *prometheus.Registry
	lim     *limiter
	log     *slog.Logger
	cancel  context.CancelFunc

	handlerOnce sync.Once
	handler     http.Handler
	closeOnce   sync.Once
	closeErr    error
}

// New starts a relay: it listens, and serves reservations and circuits
// until Close. Errors wrap [ErrConfig] for a bad Config.
func New(cfg Config) (*Relay, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	key := cfg.Key
	if key == nil {
		_, k, err := ed25519.GenerateKey(nil)
		if err != nil {
			return nil, fmt.Errorf("relay: making a key: %w", err)
		}
		key = k
	}
	priv, err := crypto.UnmarshalEd25519PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("%w: the key: %w", ErrConfig, err)
	}
	reg := cfg.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := newMetrics(reg)
	opts := []libp2p.Option{
		libp2p.Identity(priv),
		libp2p.ListenAddrs(cfg.Listen...),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Transport(quic.NewTransport),
		libp2p.DisableRelay(), // no relay client: this host relays, it is not relayed
		libp2p.ForceReachabilityPublic(),
		libp2p.EnableAutoNATv2(),
		libp2p.PrometheusRegisterer(reg),
	}
	if len(cfg.Announce) > 0 {
		announce := slices.Clone(cfg.Announce)
		opts = append(opts, libp2p.AddrsFactory(func([]ma.Multiaddr) []ma.Multiaddr { return slices.Clone(announce) }))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("relay: starting the libp2p host: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{host: h, metrics: m, reg: reg, log: cfg.Logger, cancel: cancel}
	r.lim = newLimiter(ctx, cfg.CircuitRate, cfg.TotalRate, m)
	res := relayv2.DefaultResources()
	res.MaxReservations = cfg.MaxReservations
	res.MaxReservationsPerIP = cfg.MaxReservationsPerIP
	res.MaxReservationsPerASN = max(res.MaxReservationsPerASN, cfg.MaxReservationsPerIP)
	res.MaxCircuits = cfg.MaxCircuits
	res.ReservationTTL = cfg.ReservationTTL
	res.BufferSize = bufferSize
	res.Limit = circuitLimit(cfg.CircuitDuration, cfg.CircuitData)
	ropts := []relayv2.Option{
		relayv2.WithResources(res),
		relayv2.WithMetricsTracer(tracer{relayv2.NewMetricsTracer(relayv2.WithRegisterer(reg)), m}),
		relayv2.WithReservationAddressFilter(func(a ma.Multiaddr) bool {
			return manet.IsPublicAddr(a) || slices.ContainsFunc(cfg.Announce, a.Equal)
		}),
	}
	if cfg.Registry != "" {
		ropts = append(ropts, relayv2.WithACL(newRegistryACL(cfg, m)))
	}
	svc, err := relayv2.New(limitedHost{h, r.lim, newCircuitSlots(cfg.MaxCircuitsPerIP, cfg.MaxCircuitsPerIPToPeer, m)}, ropts...)
	if err != nil {
		cancel()
		h.Close()
		return nil, fmt.Errorf("relay: starting the relay service: %w", err)
	}
	r.svc = svc
	r.log.Info("relay started", "peer_id", h.ID().String(), "addrs", fmt.Sprint(r.Addrs()), "registry", cfg.Registry)
	return r, nil
}

// defaults fills in c's defaults and checks it.
func (c *Config) defaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.MaxReservations, DefaultMaxReservations)
	def(&c.MaxReservationsPerIP, DefaultMaxReservationsPerIP)
	def(&c.MaxCircuits, DefaultMaxCircuits)
	def(&c.MaxCircuitsPerIP, DefaultMaxCircuitsPerIP)
	def(&c.MaxCircuitsPerIPToPeer, DefaultMaxCircuitsPerIPToPeer)
	def(&c.RegistryCacheSize, DefaultRegistryCacheSize)
	if c.CircuitDuration == 0 {
		c.CircuitDuration = DefaultCircuitDuration
	}
	if c.CircuitData == 0 {
		c.CircuitData = DefaultCircuitData
	}
	if c.ReservationTTL == 0 {
		c.ReservationTTL = DefaultReservationTTL
	}
	if c.RegistryCacheTTL == 0 {
		c.RegistryCacheTTL = DefaultRegistryCacheTTL
	}
	if c.RegistryLookupsPerIP.IsZero() {
		c.RegistryLookupsPerIP = DefaultRegistryLookupsPerIP
	}
	switch {
	case c.Key != nil && len(c.Key) != ed25519.PrivateKeySize:
		return fmt.Errorf("%w: the key is %d bytes, not an ed25519 private key", ErrConfig, len(c.Key))
	case c.MaxReservations < 0, c.MaxReservationsPerIP < 0, c.MaxCircuits < 0, c.MaxCircuitsPerIP < 0, c.MaxCircuitsPerIPToPeer < 0, c.RegistryCacheSize < 0:
		return fmt.Errorf("%w: a negative count limit", ErrConfig)
	case c.CircuitDuration < 0 && c.CircuitDuration != Unlimited, c.CircuitData < 0 && c.CircuitData != Unlimited:
		return fmt.Errorf("%w: a negative circuit limit (Unlimited turns it off)", ErrConfig)
	case c.CircuitDuration > math.MaxUint32*time.Second:
		return fmt.Errorf("%w: a circuit duration over %v", ErrConfig, math.MaxUint32*time.Second)
	case c.CircuitRate < 0, c.TotalRate < 0:
		return fmt.Errorf("%w: a negative rate", ErrConfig)
	case c.ReservationTTL < MinReservationTTL, c.RegistryCacheTTL < 0:
		return fmt.Errorf("%w: a reservation TTL under %v, or a negative cache TTL", ErrConfig, MinReservationTTL)
	}
	if c.Registry != "" {
		u, err := url.Parse(c.Registry)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("%w: the registry %q is not an http(s) base URL", ErrConfig, c.Registry)
		}
	}
	if len(c.Listen) == 0 {
		for _, s := range DefaultListen {
			c.Listen = append(c.Listen, ma.StringCast(s))
		}
	}
	for _, a := range c.Announce {
		if _, err := a.ValueForProtocol(ma.P_P2P); err == nil {
			return fmt.Errorf("%w: the announced address %s names a peer id: give it without /p2p", ErrConfig, a)
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return nil
}

// circuitLimit is go-libp2p's per-circuit limit: nil when both are off,
// else the one off as large as the relay protocol can say.
func circuitLimit(d time.Duration, data int64) *relayv2.RelayLimit {
	if d == Unlimited && data == Unlimited {
		return nil
	}
	if d == Unlimited {
		d = math.MaxUint32 * time.Second
	}
	if data == Unlimited {
		data = math.MaxInt64
	}
	return &relayv2.RelayLimit{Duration: d, Data: data}
}

// ID is the relay's peer id.
func (r *Relay) ID() peer.ID { return r.host.ID() }

// Addrs returns the relay's addresses as peers dial them, each ending in
// /p2p/<the relay's peer id>: the text of each is what a chat-server's
// --relay (handles.Info.Relays) takes.
func (r *Relay) Addrs() []ma.Multiaddr {
	p2p, err := ma.NewComponent("p2p", r.host.ID().String())
	if err != nil {
		return nil
	}
	var out []ma.Multiaddr
	for _, a := range r.host.Addrs() {
		out = append(out, a.Encapsulate(p2p))
	}
	return out
}

// AddrInfo returns the relay's peer id and addresses (without /p2p), as
// a libp2p peer dials it.
func (r *Relay) AddrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: r.host.ID(), Addrs: r.host.Addrs()}
}

// Host returns the relay's libp2p host, for diagnostics. Do not close it:
// close the Relay.
func (r *Relay) Host() host.Host { return r.host }

// Handler serves /metrics (the relay's registry), /healthz and /readyz
// (200 while the relay runs). Every call returns the same handler.
func (r *Relay) Handler() http.Handler {
	r.handlerOnce.Do(func() {
		r.handler = httpserve.Wrap(http.NotFoundHandler(), httpserve.Options{
			Registry: r.reg, Logger: r.log,
			Ready: func(ctx context.Context) error {
				if r.lim.ctx.Err() != nil {
					return errors.New("the relay is closed")
				}
				return nil
			},
		})
	})
	return r.handler
}

// Close stops the relay: every reservation and circuit ends.
func (r *Relay) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		r.svc.Close()
		r.closeErr = r.host.Close()
		r.log.Info("relay stopped")
	})
	return r.closeErr
}
