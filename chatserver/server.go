package chatserver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of [Server] fields.
const (
	DefaultDBPath  = "kez-chat.db"   // the handle registry, relative to the working folder
	DefaultKeysDir = "kez-chat-keys" // the callout keys, relative to the working folder
)

var (
	// ErrNotStarted: the server has not been started (or Start failed).
	ErrNotStarted = errors.New("chatserver: the server is not started")
	// ErrClosed: the server was closed.
	ErrClosed = errors.New("chatserver: the server is closed")
	// ErrDraining: [Server.Drain] was called; the server is on its way
	// out and takes no new logins or gate requests.
	ErrDraining = errors.New("chatserver: the server is draining")
	// ErrNoDomain: Start was called without a Domain. There is no default:
	// a forgotten domain would register users under someone else's.
	ErrNoDomain = errors.New("chatserver: no handle domain (Server.Domain) given")
)

// Server is one KEZ chat-server: the handle registry and the NATS auth
// callout. Set the fields, call [Server.Start], serve [Server.Handler],
// and call [Server.Close] when done ([Server.Drain] first, to stop
// without refusing a login while other replicas run). Fields must not change after Start.
// The zero value needs at least Domain, SigServerURL and NATSURL.
//
// All methods are safe for concurrent use.
type Server struct {
	// Domain is the handle domain this server registers, e.g. "kez.lat"
	// (handles are alice@Domain). Required: without it Start returns
	// [ErrNoDomain].
	Domain string
	// SigServerURL is the sig-server's base URL (KEZ_SIG_SERVER); claims
	// are checked against the claimant's sigchain there. Required.
	SigServerURL string
	// PublicSigServerURL is the sig-server's base URL as clients reach it,
	// when it differs from SigServerURL (an internal address). It is what
	// lookups, WebFinger and /v1/info tell clients.
	PublicSigServerURL string
	// PublicURL is this server's base URL as clients reach it, used in
	// WebFinger aliases. Empty: WebFinger answers carry no aliases (none
	// is built from a request's Host).
	PublicURL string
	// AllowLocal accepts development domains (localhost, IP:port) as
	// Domain and in claims. Never in production.
	AllowLocal bool
	// Relays are the libp2p relays (kez-relay, or any circuit relay v2)
	// /v1/info offers the users for file sharing behind NAT: each a
	// multiaddr ending in /p2p/<peer id> ([handles.ParseRelay]), at most
	// [handles.MaxRelays]. Empty: none.
	Relays []string

	// NATSURL is the operator's NATS (NATS_URL); several comma-separated
	// URLs of one cluster are fine. Required.
	NATSURL string
	// NATSOptions are extra nats.go options for the server's two NATS
	// connections (TLS, reconnect timing), applied after the defaults.
	NATSOptions []nats.Option
	// DBPath is the SQLite file of the handle registry. Default
	// [DefaultDBPath].
	DBPath string
	// StoreBackend selects where the handle registry lives:
	// [StoreSQLite] (or "") keeps it in the SQLite file DBPath;
	// [StoreJetStream] keeps it in a key-value bucket of the callout
	// account's JetStream (package handles/jsstore), which every replica
	// shares. With StoreJetStream the NATS configuration must give that
	// account JetStream (callout.ConfigOptions.AuthJetStream; "kez-chat-server
	// nats-config --store jetstream"), and the registry opens once the
	// server is logged in to NATS: until then the API answers 503 and
	// logins are refused.
	StoreBackend string
	// StoreReplicas is how many JetStream servers keep the registry
	// bucket when this server creates it (StoreJetStream): 1 by default,
	// 3 in a cluster. An existing bucket keeps its own setting.
	StoreReplicas int
	// RegistryMaxStale bounds how long, with StoreJetStream, a login may
	// still be answered from the server's in-memory view of the registry
	// after the view last confirmed it holds every change (see
	// [jsstore.View]): how long a suspended handle or a revoked device
	// may still log in while the registry's stream has no leader. The
	// view keeps logins of known users flowing through leader elections
	// and lost nodes. 0 means [jsstore.DefaultMaxStale]; a negative value
	// turns the view off, so that every login reads the bucket.
	RegistryMaxStale time.Duration
	// KeysDir holds the callout keys (created on first start, files mode
	// 0600); nats.conf names their public halves, see [NATSConfig].
	// Default [DefaultKeysDir].
	KeysDir string

	// UserJWTLifetime is how long a user's NATS login stays valid before
	// the broker disconnects the user and the client logs in again (which
	// is when a suspension takes effect). Default [callout.DefaultTTL].
	UserJWTLifetime time.Duration
	// Inbox configures the JetStream stream holding every inbox; the zero
	// value gives callout's defaults (a stream named [callout.DefaultStream]).
	Inbox callout.InboxConfig
	// Authorizer is an optional extra login policy (see [callout.Authorizer]).
	Authorizer callout.Authorizer
	// MailLimits bound what one user may do with the shared inbox stream
	// through the gate; the zero value gives [DefaultMailLimits].
	MailLimits MailLimits
	// HTTPLimits are the rate limits of the HTTP API: claims per client
	// address and per key, and lookups, WebFinger and /v1/info per client
	// address (429 with Retry-After). Zero fields take
	// [handles.DefaultLimits]; behind a reverse proxy set
	// HTTPLimits.ClientIP.TrustedProxies, or every client shares the proxy's
	// address.
	HTTPLimits handles.Limits
	// LoginLimits shape how the auth callout holds up under a flood of
	// logins (queues, lanes, the per-address backoff, the denial log
	// summary); the zero value gives callout's defaults. LoginWorkers is
	// how many logins it decides at once; default 2×GOMAXPROCS.
	LoginLimits  callout.LoginLimits
	LoginWorkers int

	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
	// Registry receives the server's metrics and is served on /metrics.
	// Default: a new registry. Give each Server its own.
	Registry *prometheus.Registry
	// HTTPClient reaches the sig-server. Default: a client with a 10 s
	// timeout.
	HTTPClient *http.Client
	// Now is the clock for claims and user JWTs. Default time.Now.
	Now func() time.Time

	relays []string // Relays checked, in canonical form; set by Start

	mu       sync.Mutex
	started  bool
	closed   bool
	draining bool
	cancel   context.CancelFunc
	done     chan struct{} // closed when the NATS loop has returned
	watched  chan struct{} // closed when logReadiness has returned

	log     *slog.Logger
	reg     *prometheus.Registry
	keys    *callout.Keys
	store   atomic.Pointer[registryRef] // nil until the registry is open
	sqlite  *handles.SQLiteStore        // StoreSQLite only, closed by Close
	hs      atomic.Pointer[handles.Server]
	svc     *callout.Service
	stream  string
	metrics *metrics
	gate    *gate

	svcConn   atomic.Pointer[nats.Conn]
	provConn  atomic.Pointer[nats.Conn]
	kickConn  atomic.Pointer[nats.Conn] // the kicker, in the system account
	runCtx    context.Context           // ends at Close
	bg        sync.WaitGroup            // revocations' second sweeps
	js        atomic.Pointer[jetstream.JetStream]
	listening atomic.Bool
	// legacyWarned: the warning about an earlier release's inbox stream
	// was logged.
	legacyWarned atomic.Bool
	kick         chan struct{} // asks the NATS loop to (re)provision the stream

	handlerOnce sync.Once
	handler     http.Handler
}

// Start opens the handle registry, loads the callout keys (creating them
// on first use) and starts connecting to NATS in the background; it
// returns once the local parts are ready, without waiting for NATS.
// From then on the server logs in as the callout service user and answers
// authorization requests, logs in as the provisioner and provisions the
// inbox stream (again after every reconnect: it is idempotent), and keeps
// retrying while NATS is down or refuses it. Use [Server.Ready] or
// [Server.WaitReady] to learn when logins work.
//
// ctx bounds the start only; [Server.Close] stops the server. Start may be
// called once.
func (s *Server) Start(ctx context.Context) (err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return errors.New("chatserver: Start was already called")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.defaults(); err != nil {
		return err
	}

	keys, err := callout.LoadOrCreateKeys(s.KeysDir)
	if err != nil {
		return fmt.Errorf("chatserver: the callout keys in %s: %w", s.KeysDir, err)
	}
	var sqlite *handles.SQLiteStore
	if s.StoreBackend == StoreSQLite {
		if sqlite, err = handles.OpenSQLite(s.DBPath); err != nil {
			return fmt.Errorf("chatserver: the handle registry %s: %w", s.DBPath, err)
		}
		defer func() {
			if err != nil {
				sqlite.Close()
			}
		}()
	}
	store := lazyStore{s}
	hs, err := handles.NewServer(handles.ServerConfig{
		Domain:             s.Domain,
		Store:              store,
		SigServer:          &sigchain.Client{BaseURL: s.SigServerURL, HTTPClient: s.HTTPClient},
		PublicSigServerURL: s.PublicSigServerURL,
		PublicURL:          s.PublicURL,
		AllowLocal:         s.AllowLocal,
		Now:                s.Now,
		Logger:             s.log,
		Limits:             s.HTTPLimits,
		DeviceRevoked:      s.deviceRevoked,
	})
	if err != nil {
		return fmt.Errorf("chatserver: %w", err)
	}
	svc, err := callout.New(callout.Config{
		Keys:       keys,
		Directory:  RegistryDirectory{Store: loginStore{store}},
		Authorizer: s.Authorizer,
		Stream:     s.stream,
		TTL:        s.UserJWTLifetime,
		Workers:    s.LoginWorkers,
		Limits:     s.LoginLimits,
		Logger:     s.log,
		Now:        s.Now,
	})
	if err != nil {
		return fmt.Errorf("chatserver: %w", err)
	}
	m, err := newMetrics(s.reg, s, svc)
	if err != nil {
		return err
	}
	g := &gate{
		stream: s.stream, userAccount: callout.DefaultUserAccount,
		dir: RegistryDirectory{Store: loginStore{store}}, syncDir: s.SyncRegistry, devices: s.currentDevices, lim: s.MailLimits.withDefaults(), now: s.Now, log: s.log,
		notices: m.notices, self: rand.Text(), maxCopy: int(s.Inbox.StreamConfig().MaxMsgSize),
	}
	g.users, g.known = newTracker[userBuckets](g.lim.MaxTracked), newTracker[knownEntry](g.lim.MaxTracked)
	g.pairs = newTracker[pairBuckets](g.lim.MaxTracked)
	g.seen = newTracker[seenEntry](g.lim.MaxTracked)
	g.digests = newTracker[digestEntry](g.lim.MaxTracked)
	g.read = newReadRemover()
	if g.m, err = newGateMetrics(s.reg, g.lim, g.users.len); err != nil {
		return fmt.Errorf("chatserver: registering the gate's metrics: %w", err)
	}
	if g.readM, err = registerReadMetrics(s.reg, g.read); err != nil {
		return fmt.Errorf("chatserver: registering the gate's metrics: %w", err)
	}
	s.gate = g

	s.keys, s.sqlite, s.svc, s.metrics = keys, sqlite, svc, m
	if sqlite != nil {
		s.store.Store(&registryRef{registry: sqlite})
	}
	s.Domain = hs.Domain()
	s.hs.Store(hs)
	s.kick = make(chan struct{}, 1)
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done, s.watched, s.runCtx = cancel, make(chan struct{}), make(chan struct{}), runCtx
	s.started = true
	s.log.Info("chat-server starting", "domain", s.Domain, "nats", natsconn.RedactURL(s.NATSURL), "registry", s.registryName(), "keys", s.KeysDir)
	go s.runNATS(runCtx)
	go s.logReadiness(runCtx)
	return nil
}

// defaults fills in the defaults and checks the required fields. Called
// with s.mu held.
func (s *Server) defaults() error {
	if s.SigServerURL == "" {
		return errors.New("chatserver: SigServerURL is required: the base URL of the sig-server")
	}
	if !strings.HasPrefix(s.SigServerURL, "http://") && !strings.HasPrefix(s.SigServerURL, "https://") {
		return fmt.Errorf("chatserver: SigServerURL %q: want an http:// or https:// URL", s.SigServerURL)
	}
	if s.NATSURL == "" {
		return errors.New("chatserver: NATSURL is required: the operator's NATS server")
	}
	if s.Domain == "" {
		return ErrNoDomain
	}
	if len(s.Relays) > handles.MaxRelays {
		return fmt.Errorf("chatserver: %d Relays: at most %d", len(s.Relays), handles.MaxRelays)
	}
	relays := make([]string, 0, len(s.Relays))
	for _, r := range s.Relays {
		c, err := handles.ParseRelay(r)
		if err != nil {
			return fmt.Errorf("chatserver: Relays: %w", err)
		}
		if slices.Contains(relays, c) {
			return fmt.Errorf("chatserver: Relays: %q twice", c)
		}
		relays = append(relays, c)
	}
	s.relays = relays
	if s.DBPath == "" {
		s.DBPath = DefaultDBPath
	}
	switch s.StoreBackend {
	case "":
		s.StoreBackend = StoreSQLite
	case StoreSQLite, StoreJetStream:
	default:
		return fmt.Errorf("chatserver: StoreBackend %q: want %q or %q", s.StoreBackend, StoreSQLite, StoreJetStream)
	}
	if s.StoreReplicas < 0 || s.StoreReplicas > 5 {
		return fmt.Errorf("chatserver: StoreReplicas %d: want 1 to 5 (0 means 1)", s.StoreReplicas)
	}
	if s.RegistryMaxStale > 0 && s.RegistryMaxStale < 10*time.Millisecond {
		return fmt.Errorf("chatserver: RegistryMaxStale %s: want at least 10ms (or 0: the default, negative: no view)", s.RegistryMaxStale)
	}
	if s.KeysDir == "" {
		s.KeysDir = DefaultKeysDir
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.HTTPClient == nil {
		s.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	s.base()
	s.stream = s.Inbox.StreamConfig().Name
	return nil
}

// base settles the logger and the metrics registry, for Start or Handler,
// whichever comes first. Called with s.mu held.
func (s *Server) base() {
	if s.log == nil {
		s.log = s.Logger
		if s.log == nil {
			s.log = slog.Default()
		}
		s.log = s.log.With("component", "chatserver")
	}
	if s.reg == nil {
		s.reg = s.Registry
		if s.reg == nil {
			s.reg = prometheus.NewRegistry()
		}
	}
}

// Close stops the server: it stops answering authorization requests
// (nats-server then denies new logins after its auth timeout, unless
// another replica answers), closes its NATS connections and the registry.
// Users already logged in stay connected until their user JWT expires.
// Close is idempotent; the HTTP handler answers 503 afterwards.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	s.hs.Store(nil)
	s.cancel()
	<-s.done
	<-s.watched
	s.bg.Wait()
	var errs []error
	if err := s.svc.Close(); err != nil {
		errs = append(errs, err)
	}
	if r := s.store.Load(); r != nil && r.view != nil {
		r.view.Close()
	}
	for _, p := range []*atomic.Pointer[nats.Conn]{&s.kickConn, &s.provConn, &s.svcConn} {
		if nc := p.Load(); nc != nil {
			nc.Close()
		}
	}
	if s.sqlite != nil {
		if err := s.sqlite.Close(); err != nil {
			errs = append(errs, fmt.Errorf("chatserver: closing the registry: %w", err))
		}
	}
	s.log.Info("chat-server stopped")
	return errors.Join(errs...)
}

// Keys returns the callout keys loaded by Start, or nil before.
func (s *Server) Keys() *callout.Keys {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.keys
}

// Store returns the handle registry opened by Start, or nil before (with
// StoreJetStream: before the server first logged in to NATS). It is what
// an operator tool suspends or releases handles with.
func (s *Server) Store() handles.Store {
	if r := s.store.Load(); r != nil {
		return r.registry
	}
	return nil
}

// Ready reports whether the server can take traffic: nil when the
// registry answers, the callout service is logged in to NATS and
// listening, the provisioner is logged in and the inbox stream exists.
// Otherwise the error says what is missing, in words an operator can act
// on. It is what /readyz answers.
func (s *Server) Ready(ctx context.Context) error {
	s.mu.Lock()
	started, closed, draining := s.started, s.closed, s.draining
	s.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !started:
		return ErrNotStarted
	case draining:
		return ErrDraining
	}
	reg := s.store.Load()
	if reg == nil {
		return fmt.Errorf("the handle registry %s is not open yet: it opens once the callout service is logged in to NATS at %s (does the auth account have JetStream? see \"kez-chat-server nats-config --store jetstream\")", s.registryName(), natsconn.RedactURL(s.NATSURL))
	}
	if err := reg.Ping(ctx); err != nil {
		return fmt.Errorf("the handle registry %s does not answer: %w", s.registryName(), err)
	}
	if nc := s.svcConn.Load(); nc == nil || !nc.IsConnected() {
		return fmt.Errorf("the callout service is not logged in to NATS at %s yet (is NATS running, and does its nats.conf hold the snippet of \"kez-chat-server nats-config\" for these keys?)", natsconn.RedactURL(s.NATSURL))
	}
	if !s.listening.Load() {
		return errors.New("the callout service is not listening for authorization requests yet")
	}
	if err := s.svc.SealError(); err != nil {
		return fmt.Errorf("NATS's authorization requests do not open with the xkey in %s, so every login fails: "+
			"is nats-server older than v2.10.4 (it seals them to a zero key), or does nats.conf name another auth_callout xkey? (%w)", s.KeysDir, err)
	}
	nc, js := s.provConn.Load(), s.js.Load()
	if nc == nil || js == nil || !nc.IsConnected() {
		return fmt.Errorf("the provisioner is not logged in to NATS at %s yet (the auth callout must answer it)", natsconn.RedactURL(s.NATSURL))
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := (*js).Stream(ctx, s.stream); err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s.provision()
			return fmt.Errorf("the inbox stream %s does not exist yet", s.stream)
		}
		return fmt.Errorf("cannot check the inbox stream %s: %w", s.stream, err)
	}
	return nil
}

// WaitReady waits until [Server.Ready] returns nil or ctx ends; then it
// returns ctx's error together with the last reason the server was not
// ready.
func (s *Server) WaitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		err := s.Ready(ctx)
		if err == nil || errors.Is(err, ErrClosed) || errors.Is(err, ErrNotStarted) || errors.Is(err, ErrDraining) {
			return err
		}
		if ctx.Err() == nil || last == nil {
			last = err // not an artefact of ctx ending mid-check
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chatserver: not ready: %w (%w)", last, ctx.Err())
		case <-t.C:
		}
	}
}

// provision asks the NATS loop to provision the inbox stream again.
func (s *Server) provision() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
