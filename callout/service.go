package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// AuthSubject is where nats-server publishes authorization requests, in
// the callout account.
const AuthSubject = "$SYS.REQ.USER.AUTH"

// Defaults for [Config].
const (
	DefaultTTL              = 10 * time.Minute
	DefaultLookupTimeout    = time.Second
	DefaultMaxPayload       = 128 << 10
	DefaultMaxSubscriptions = 256
)

// Request describes a login that passed the key check, for an
// [Authorizer].
type Request struct {
	Key        kez.PublicKey // the verified KEZ key
	Entry      Entry         // its directory entry
	ClientName string        // the name the client gave (nats.Name); untrusted
	ClientHost string        // the client's IP address as the server saw it
	ServerID   string        // the nats-server asking ("N…")
	ServerName string
}

// Authorizer is an embedder's extra policy, run after the key is verified
// and found in the directory. A non-nil error denies the login; its text
// is sent to nats-server, which logs it. It is called concurrently.
type Authorizer func(ctx context.Context, req *Request) error

// Config configures a [Service]. Keys and Directory are required.
type Config struct {
	Keys       *Keys
	Directory  Directory
	Authorizer Authorizer // optional

	ChatAccount string        // the chat-server's own account (the inbox stream); default [DefaultChatAccount]
	UserAccount string        // the account users land in; default [DefaultUserAccount]
	Stream      string        // the inbox stream; default [DefaultStream]
	TTL         time.Duration // lifetime of a user JWT; default [DefaultTTL]
	QueueGroup  string        // default [DefaultQueueGroup]
	Workers     int           // requests handled at once; default 2×GOMAXPROCS

	// LookupTimeout bounds Directory.Lookup and the Authorizer together;
	// default [DefaultLookupTimeout]. Keep it below the server's auth
	// timeout (2 s by default).
	LookupTimeout time.Duration
	// MaxPayload and MaxSubscriptions go into the user JWTs the service
	// issues; defaults [DefaultMaxPayload] and [DefaultMaxSubscriptions].
	// nats-server does not apply a callout-issued JWT's limits: what
	// bounds a user connection is the user account's limits block that
	// [NATSConfig] renders ([ConfigOptions].UserMaxPayload and
	// UserMaxSubscriptions), so keep the two equal. The server closes a
	// connection that publishes more than that maximum payload, so keep it
	// above the inbox stream's message size limit (64 KiB): JetStream
	// then refuses an oversized message with an error instead.
	MaxPayload       int64
	MaxSubscriptions int64

	// Limits shape how the service holds up under a flood of logins
	// (queues, lanes, backoff, log summaries); the zero value gives the
	// defaults.
	Limits LoginLimits

	Logger *slog.Logger     // default slog.Default()
	Now    func() time.Time // the clock for JWT expiry and the limits; default time.Now
}

// Stats counts what a [Service] did since it started, and what it holds
// now.
type Stats struct {
	Authorized uint64 // logins granted
	Denied     uint64 // logins refused (with a reason, or left unanswered by the backoff)
	Malformed  uint64 // requests that could not be read (answered empty)

	// DeniedBy splits Denied by cause.
	DeniedBy map[DenyCode]uint64
	// Delayed counts denials held before they were answered, Unanswered
	// denials not answered at all (their address backed off past
	// [LoginLimits].BackoffMax, or MaxHeld were held); both are in Denied.
	Delayed, Unanswered uint64
	// Requests dropped unread: their lane was full, they expired while
	// queued, or the NATS client dropped them before the service saw
	// them (a slow consumer). nats-server refuses those logins.
	DroppedFull, DroppedExpired, DroppedSlow uint64

	// Queued is how many requests wait in each lane now.
	Queued map[Lane]int
	// Held is how many denials are held now.
	Held int
	// Addresses and Known are how many failing addresses and key and
	// address pairs are tracked now.
	Addresses, Known int
}

// Lane is one of the queues requests wait in (see [LoginLimits]).
type Lane int

// The lanes, in the order workers serve them.
const (
	LaneKnown Lane = iota
	LaneNew
	LaneSuspect
	numLanes
)

// Lanes lists the lanes in the order workers serve them.
var Lanes = []Lane{LaneKnown, LaneNew, LaneSuspect}

// String returns "known", "new" or "suspect".
func (l Lane) String() string {
	switch l {
	case LaneKnown:
		return "known"
	case LaneNew:
		return "new"
	case LaneSuspect:
		return "suspect"
	}
	return fmt.Sprintf("Lane(%d)", int(l))
}

// Service answers nats-server's auth callout requests: it verifies the
// client's nkey signature, looks the key up in the directory, runs the
// optional [Authorizer], and issues a short-lived user JWT that places the
// user in the chat account with [Permissions]. Several services (replicas)
// may listen at once; the server's requests are shared through a queue
// group.
//
// Under a flood of bogus logins it keeps answering registered users first
// and slows the flood down ([LoginLimits]).
//
// Create one with [New], start it with [Service.Listen] and stop it with
// [Service.Close]. Its methods are safe for concurrent use.
type Service struct {
	cfg  Config
	lim  LoginLimits
	log  *slog.Logger
	prov string // the provisioner key

	// The keys' per-login work done once (see keycache.go).
	issuer    *signingKey
	issuerPub string
	xbox      *xkeyBox

	track *tracker
	lanes [numLanes]chan *request

	authorized, denied, malformed atomic.Uint64
	deniedBy                      map[DenyCode]*atomic.Uint64 // by every DenyCodes entry; read-only map
	delayed, unanswered           atomic.Uint64
	droppedFull, droppedExpired   atomic.Uint64
	summary                       summary
	unopened                      atomic.Uint64 // sealed requests in a row the xkey did not open

	mu     sync.Mutex
	sub    *nats.Subscription
	stop   chan struct{}
	wg     sync.WaitGroup // the workers and the summary
	closed bool
	// finishing: the workers answer what the lanes hold before they stop
	// (Drain); cleared when the drain's time is up.
	finishing atomic.Bool

	heldMu sync.Mutex
	held   map[*heldDenial]struct{}
	heldWG sync.WaitGroup // held denials being sent
}

// New checks cfg and returns a service that is not yet listening.
func New(cfg Config) (*Service, error) {
	if cfg.Keys == nil || cfg.Keys.Issuer == nil || cfg.Keys.XKey == nil || cfg.Keys.Provisioner == nil {
		return nil, errors.New("callout: Config.Keys is required (see LoadOrCreateKeys)")
	}
	if cfg.Directory == nil {
		return nil, errors.New("callout: Config.Directory is required")
	}
	if cfg.ChatAccount == "" {
		cfg.ChatAccount = DefaultChatAccount
	}
	if cfg.UserAccount == "" {
		cfg.UserAccount = DefaultUserAccount
	}
	if cfg.Stream == "" {
		cfg.Stream = DefaultStream
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.TTL < time.Second {
		return nil, fmt.Errorf("callout: a user JWT lifetime of %s is too short", cfg.TTL)
	}
	if cfg.QueueGroup == "" {
		cfg.QueueGroup = DefaultQueueGroup
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if cfg.LookupTimeout <= 0 {
		cfg.LookupTimeout = DefaultLookupTimeout
	}
	if cfg.MaxPayload == 0 {
		cfg.MaxPayload = DefaultMaxPayload
	}
	if cfg.MaxSubscriptions == 0 {
		cfg.MaxSubscriptions = DefaultMaxSubscriptions
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	lim, err := cfg.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	issuer, err := newSigningKey(cfg.Keys.Issuer)
	if err != nil {
		return nil, fmt.Errorf("callout: the issuer key: %w", err)
	}
	xbox, err := newXKeyBox(cfg.Keys.XKey)
	if err != nil {
		return nil, fmt.Errorf("callout: the xkey: %w", err)
	}
	s := &Service{
		cfg: cfg, lim: lim, log: cfg.Logger.With("component", "callout"), prov: cfg.Keys.ProvisionerPublicKey(),
		issuer: issuer, issuerPub: issuer.pub, xbox: xbox,
		track: newTracker(lim), held: map[*heldDenial]struct{}{},
		deniedBy: make(map[DenyCode]*atomic.Uint64, len(DenyCodes)),
	}
	for _, c := range DenyCodes {
		s.deniedBy[c] = new(atomic.Uint64)
	}
	for i := range s.lanes {
		s.lanes[i] = make(chan *request, lim.MaxQueued)
	}
	return s, nil
}

// Listen subscribes to [AuthSubject] on nc in the service's queue group
// and starts the workers. nc must be logged in as the service user (see
// [Keys.ServiceOptions]). A service listens on one connection; call
// [Service.Close] to stop.
func (s *Service) Listen(nc *nats.Conn) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("callout: the service is closed")
	}
	if s.sub != nil {
		return errors.New("callout: the service is already listening")
	}
	// The callback only sorts requests into the lanes; it never blocks,
	// so the client's own pending list (500,000 messages) stays short.
	sub, err := nc.QueueSubscribe(AuthSubject, s.cfg.QueueGroup, s.enqueue)
	if err != nil {
		return fmt.Errorf("callout: subscribing to %s: %w", AuthSubject, err)
	}
	// Make sure the server has the subscription before we report ready.
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return fmt.Errorf("callout: subscribing to %s: %w", AuthSubject, err)
	}
	s.sub, s.stop = sub, make(chan struct{})
	for range s.cfg.Workers {
		s.wg.Add(1)
		go s.work(s.stop)
	}
	s.wg.Add(1)
	go s.summarize(s.stop)
	return nil
}

// enqueue sorts a request into its lane, or drops it if the lane is full.
func (s *Service) enqueue(m *nats.Msg) {
	r := s.triage(m)
	select {
	case s.lanes[r.lane] <- r:
	default:
		s.droppedFull.Add(1)
		s.log.Debug("auth request dropped: its lane is full", "lane", r.lane, "client_host", r.peek.Nats.ClientInfo.Host)
	}
}

func (s *Service) work(stop <-chan struct{}) {
	defer s.wg.Done()
	known, fresh, suspect := s.lanes[LaneKnown], s.lanes[LaneNew], s.lanes[LaneSuspect]
	for {
		select {
		case <-stop:
			s.finish(known, fresh, suspect)
			return
		default:
		}
		// Strictly in lane order: a request waits only while a lane before
		// its own has requests.
		var r *request
		select {
		case r = <-known:
		default:
			select {
			case r = <-known:
			case r = <-fresh:
			default:
				select {
				case r = <-known:
				case r = <-fresh:
				case r = <-suspect:
				case <-stop:
					s.finish(known, fresh, suspect)
					return
				}
			}
		}
		s.process(r)
	}
}

// Close stops listening and waits for requests in progress. Requests not
// yet taken, and denials held by the backoff, are dropped; nats-server
// denies those logins after its auth timeout (fail closed). Close does not
// close the connection.
func (s *Service) Close() error {
	s.mu.Lock()
	sub, stop := s.sub, s.stop
	s.sub, s.closed = nil, true
	s.mu.Unlock()
	if sub == nil {
		return nil
	}
	err := sub.Unsubscribe()
	close(stop)
	s.wg.Wait()
	s.dropHeld()
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("callout: unsubscribing: %w", err)
	}
	return nil
}

// SealError returns nil unless the last authorization request the service
// received was sealed to a key its xkey does not open; then an error
// wrapping [ErrCannotOpen] that says how many in a row were. The next
// request that opens (or comes unsealed) clears it. While it is set,
// logins fail.
func (s *Service) SealError() error {
	if n := s.unopened.Load(); n > 0 {
		return fmt.Errorf("%w: the last %d sealed requests did not open", ErrCannotOpen, n)
	}
	return nil
}

// Stats returns the counters so far.
func (s *Service) Stats() Stats {
	st := Stats{
		Authorized: s.authorized.Load(), Denied: s.denied.Load(), Malformed: s.malformed.Load(),
		DeniedBy: make(map[DenyCode]uint64, len(DenyCodes)),
		Delayed:  s.delayed.Load(), Unanswered: s.unanswered.Load(),
		DroppedFull: s.droppedFull.Load(), DroppedExpired: s.droppedExpired.Load(),
		Queued: make(map[Lane]int, numLanes),
	}
	for _, c := range DenyCodes {
		st.DeniedBy[c] = s.deniedBy[c].Load()
	}
	for _, l := range Lanes {
		st.Queued[l] = len(s.lanes[l])
	}
	s.mu.Lock()
	if s.sub != nil {
		if n, err := s.sub.Dropped(); err == nil {
			s.summary.slow.Store(uint64(n))
		}
	}
	s.mu.Unlock()
	st.DroppedSlow = s.summary.slow.Load()
	s.heldMu.Lock()
	st.Held = len(s.held)
	s.heldMu.Unlock()
	st.Addresses, st.Known = s.track.sizes()
	return st
}

// handle answers one request at once, as a worker would. It never panics
// on bad input.
func (s *Service) handle(m *nats.Msg) { s.process(s.triage(m)) }

// request is an authorization request on its way through the service.
type request struct {
	m          *nats.Msg
	serverXKey string
	data       []byte // the opened request JWT
	err        error  // why it could not be opened
	peek       peeked // unverified: for the lane and the expiry only
	addr       netip.Addr
	lane       Lane
	arrived    time.Time
}

// triage opens a request and reads (without checking) who it is for, to
// choose its lane: cheap work only, no signature is verified here.
func (s *Service) triage(m *nats.Msg) *request {
	r := &request{m: m, serverXKey: m.Header.Get(ServerXKeyHeader), lane: LaneNew, arrived: time.Now()}
	if r.data, r.err = unseal(m.Data, r.serverXKey, s.xbox); r.err != nil {
		if errors.Is(r.err, ErrCannotOpen) && s.unopened.Add(1) == 1 {
			s.log.Error("NATS's authorization requests do not open with this service's xkey; every login fails until they do. "+
				"A nats-server older than v2.10.4 seals them to a zero key, or nats.conf names another auth_callout xkey", "err", r.err)
		}
		return r
	}
	if s.unopened.Load() != 0 && s.unopened.Swap(0) != 0 {
		s.log.Info("NATS's authorization requests open again")
	}
	p, err := peek(r.data)
	if err != nil {
		return r // decodeRequest will say what is wrong
	}
	r.peek = p
	r.addr = addrOf(p.Nats.ClientInfo.Host)
	now := s.cfg.Now()
	key, kerr := kez.ParsePublicKey(p.Nats.ConnectOpts.Nkey)
	switch {
	case kerr == nil && key.String() == s.prov:
		r.lane = LaneKnown // the chat-server's own provisioner
	case s.track.suspect(r.addr, now):
		r.lane = LaneSuspect
	case kerr == nil && s.track.takeKnown(key, r.addr, now):
		r.lane = LaneKnown
	}
	return r
}

// process decides one request and answers it: at once, later (a held
// denial), or not at all (expired, or a denial past the backoff). Every
// failure is logged and answered when answered at all (a signed denial
// when the server is known, an empty reply otherwise, which the server
// also treats as a denial).
func (s *Service) process(r *request) {
	m, serverXKey := r.m, r.serverXKey
	if r.peek.Exp > 0 && r.peek.Exp >= r.arrived.Unix() && time.Now().Unix() > r.peek.Exp {
		// It was valid when it came but nats-server has stopped waiting:
		// the answer would be wasted work. (A request that came expired
		// is answered, as an invalid one.)
		s.droppedExpired.Add(1)
		s.log.Debug("auth request dropped: it expired while queued", "lane", r.lane, "client_host", r.peek.Nats.ClientInfo.Host)
		return
	}
	var rc *jwt.AuthorizationRequestClaims
	err := r.err
	if err == nil {
		rc, err = decodeRequest(r.data, serverXKey, s.issuerPub)
	}
	if err != nil {
		s.malformed.Add(1)
		if rc == nil {
			s.log.Warn("dropping an unreadable auth request", "err", err, "bytes", len(m.Data))
			if m.Reply != "" {
				_ = m.Respond(nil)
			}
			return
		}
		s.log.Warn("refusing an invalid auth request", "err", err, "server", rc.Server.ID)
		s.respond(m, rc, serverXKey, "", err.Error())
		return
	}
	host := rc.ClientInformation.Host
	addr := addrOf(host)
	token, who, key, err := s.authorize(rc)
	if err == nil {
		s.authorized.Add(1)
		s.track.granted(key, addr, s.cfg.Now())
		s.log.Debug("login granted", "user", who, "client_host", host, "server", rc.Server.ID, "lane", r.lane)
		s.respond(m, rc, serverXKey, token, "")
		return
	}
	s.denied.Add(1)
	var de *DenyError
	if !errors.As(err, &de) {
		s.deniedBy[DenyFailed].Add(1)
		if s.summary.firstError() {
			s.log.Error("login failed", "err", err, "client_host", host, "server", rc.Server.ID)
		} else {
			s.log.Debug("login failed", "err", err, "client_host", host, "server", rc.Server.ID)
		}
		s.respond(m, rc, serverXKey, "", "the KEZ auth service could not decide: "+err.Error())
		return
	}
	if c := s.deniedBy[de.Code]; c != nil {
		c.Add(1)
	} else {
		s.deniedBy[DenyPolicy].Add(1) // a DenyError from an embedder's Directory
	}
	if !key.IsZero() {
		s.track.denied(key, addr)
	}
	now := s.cfg.Now()
	n := s.track.fail(addr, now)
	delay, ok := s.lim.delay(n)
	if ok && delay > 0 && rc.Expires > 0 && time.Now().Add(delay).Unix() >= rc.Expires {
		ok = false // the server (on its own clock) would stop waiting before the answer came
	}
	s.log.Debug("login denied", "reason", de.Reason, "code", de.Code, "client_host", host, "server", rc.Server.ID,
		"lane", r.lane, "failures", n, "delay", delay, "answered", ok)
	switch {
	case !ok:
		s.unanswered.Add(1)
	case delay > 0:
		if !s.hold(delay, m, rc, serverXKey, de.Reason) {
			s.unanswered.Add(1)
		}
	default:
		s.respond(m, rc, serverXKey, "", de.Reason)
	}
}

// authorize decides a well-formed request and returns the user JWT, the
// name it carries and the key it was for (zero if the client named none).
// Errors are [*DenyError] for policy decisions and plain errors when the
// service could not decide. The cheap checks come first: an unregistered
// key is refused after one directory lookup, before any signature is
// verified.
func (s *Service) authorize(rc *jwt.AuthorizationRequestClaims) (string, string, kez.PublicKey, error) {
	key, sig, err := parseCredentials(rc.ConnectOptions, rc.ClientInformation)
	if err != nil {
		return "", "", key, err
	}
	var (
		name, account string
		perms         jwt.Permissions
	)
	if key.String() == s.prov {
		if err := verifyNonce(key, sig, rc.ClientInformation.Nonce); err != nil {
			return "", "", key, err
		}
		name, account, perms = "kez-chat-server", s.cfg.ChatAccount, GatePermissions(s.prov, s.cfg.Stream)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
		defer cancel()
		entry, err := s.cfg.Directory.Lookup(ctx, key)
		switch {
		case errors.Is(err, ErrUnknownKey):
			return "", "", key, deny(DenyUnknownKey, "%s is not registered", key)
		case errors.Is(err, ErrRevokedKey):
			return "", "", key, deny(DenyRevoked, "%s is a revoked device", key)
		case err != nil:
			return "", "", key, fmt.Errorf("looking up %s: %w", key, err)
		}
		if err := verifyNonce(key, sig, rc.ClientInformation.Nonce); err != nil {
			return "", "", key, err
		}
		if entry.Suspended {
			return "", "", key, deny(DenySuspended, "%s (%s) is suspended", key, entry.Handle)
		}
		if s.cfg.Authorizer != nil {
			req := &Request{
				Key: key, Entry: entry,
				ClientName: rc.ClientInformation.Name, ClientHost: rc.ClientInformation.Host,
				ServerID: rc.Server.ID, ServerName: rc.Server.Name,
			}
			if err := s.cfg.Authorizer(ctx, req); err != nil {
				return "", "", key, deny(DenyPolicy, "%s (%s) refused by policy: %v", key, entry.Handle, err)
			}
		}
		name, account, perms = entry.Handle, s.cfg.UserAccount, Permissions(key, s.cfg.Stream)
	}
	uc := jwt.NewUserClaims(rc.UserNkey)
	// The NATS user name is the key (monitoring shows who is connected,
	// and requests crossing an import that share details name it).
	uc.Name = key.String()
	uc.Audience = account
	uc.Expires = s.cfg.Now().Add(s.cfg.TTL).Unix()
	uc.Permissions = perms
	uc.AllowedConnectionTypes = jwt.StringList{jwt.ConnectionTypeStandard, jwt.ConnectionTypeWebsocket}
	uc.Limits.Payload = s.cfg.MaxPayload
	uc.Limits.Subs = s.cfg.MaxSubscriptions
	token, err := uc.Encode(s.issuer)
	if err != nil {
		return "", "", key, fmt.Errorf("signing the user JWT: %w", err)
	}
	return token, name, key, nil
}

// respond signs (and, for a sealed request, seals) the response and sends
// it: exactly one of userJWT and reason is set.
func (s *Service) respond(m *nats.Msg, rc *jwt.AuthorizationRequestClaims, serverXKey, userJWT, reason string) {
	if m.Reply == "" {
		return
	}
	s.send(m, s.response(rc, serverXKey, userJWT, reason))
}

// response returns the signed (and, for a sealed request, sealed)
// response, or nil (an empty reply, also a denial) if it cannot be made.
func (s *Service) response(rc *jwt.AuthorizationRequestClaims, serverXKey, userJWT, reason string) []byte {
	rs := jwt.NewAuthorizationResponseClaims(rc.UserNkey)
	rs.Audience = rc.Server.ID
	rs.Jwt, rs.Error = userJWT, reason
	token, err := rs.Encode(s.issuer)
	if err != nil {
		s.log.Error("cannot sign an auth response", "err", err)
		return nil
	}
	data := []byte(token)
	if serverXKey != "" {
		if data, err = s.xbox.Seal(data, serverXKey); err != nil {
			s.log.Error("cannot seal an auth response", "err", err)
			return nil
		}
	}
	return data
}

func (s *Service) send(m *nats.Msg, data []byte) {
	if err := m.Respond(data); err != nil {
		s.log.Warn("cannot send an auth response", "err", err)
	}
}
