package callout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	// MaxPayload and MaxSubscriptions limit each user connection; defaults
	// [DefaultMaxPayload] and [DefaultMaxSubscriptions]. The server closes
	// a connection that publishes more than MaxPayload, so keep it above
	// the inbox stream's message size limit (64 KiB): JetStream then
	// refuses an oversized message with an error instead.
	MaxPayload       int64
	MaxSubscriptions int64

	Logger *slog.Logger     // default slog.Default()
	Now    func() time.Time // the clock for JWT expiry; default time.Now
}

// Stats counts what a [Service] did since it started.
type Stats struct {
	Authorized uint64 // logins granted
	Denied     uint64 // logins refused with a signed reason
	Malformed  uint64 // requests that could not be read (answered empty)
}

// Service answers nats-server's auth callout requests: it verifies the
// client's nkey signature, looks the key up in the directory, runs the
// optional [Authorizer], and issues a short-lived user JWT that places the
// user in the chat account with [Permissions]. Several services (replicas)
// may listen at once; the server's requests are shared through a queue
// group.
//
// Create one with [New], start it with [Service.Listen] and stop it with
// [Service.Close]. Its methods are safe for concurrent use.
type Service struct {
	cfg  Config
	log  *slog.Logger
	prov string // the provisioner key

	// The keys' per-login work done once (see keycache.go).
	issuer    *signingKey
	issuerPub string
	xbox      *xkeyBox

	authorized, denied, malformed atomic.Uint64

	mu     sync.Mutex
	sub    *nats.Subscription
	stop   chan struct{}
	wg     sync.WaitGroup
	closed bool
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
	issuer, err := newSigningKey(cfg.Keys.Issuer)
	if err != nil {
		return nil, fmt.Errorf("callout: the issuer key: %w", err)
	}
	xbox, err := newXKeyBox(cfg.Keys.XKey)
	if err != nil {
		return nil, fmt.Errorf("callout: the xkey: %w", err)
	}
	return &Service{
		cfg: cfg, log: cfg.Logger.With("component", "callout"), prov: cfg.Keys.ProvisionerPublicKey(),
		issuer: issuer, issuerPub: issuer.pub, xbox: xbox,
	}, nil
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
	ch := make(chan *nats.Msg, 4*s.cfg.Workers)
	sub, err := nc.ChanQueueSubscribe(AuthSubject, s.cfg.QueueGroup, ch)
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
		go s.work(ch, s.stop)
	}
	return nil
}

func (s *Service) work(ch <-chan *nats.Msg, stop <-chan struct{}) {
	defer s.wg.Done()
	for {
		select {
		case <-stop:
			return
		case m := <-ch:
			s.handle(m)
		}
	}
}

// Close stops listening and waits for requests in progress. Requests not
// yet taken are dropped; nats-server denies those logins after its auth
// timeout (fail closed). Close does not close the connection.
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
	if err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
		return fmt.Errorf("callout: unsubscribing: %w", err)
	}
	return nil
}

// Stats returns the counters so far.
func (s *Service) Stats() Stats {
	return Stats{Authorized: s.authorized.Load(), Denied: s.denied.Load(), Malformed: s.malformed.Load()}
}

// handle answers one request. It never panics on bad input: every failure
// is logged and answered (a signed denial when the server is known, an
// empty reply otherwise, which the server also treats as a denial).
func (s *Service) handle(m *nats.Msg) {
	serverXKey := m.Header.Get(ServerXKeyHeader)
	rc, err := openRequest(m.Data, serverXKey, s.xbox, s.issuerPub)
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
	token, who, err := s.authorize(rc)
	if err != nil {
		s.denied.Add(1)
		var de *DenyError
		if errors.As(err, &de) {
			s.log.Info("login denied", "reason", de.Reason, "client_host", rc.ClientInformation.Host, "server", rc.Server.ID)
			s.respond(m, rc, serverXKey, "", de.Reason)
		} else {
			s.log.Error("login failed", "err", err, "client_host", rc.ClientInformation.Host, "server", rc.Server.ID)
			s.respond(m, rc, serverXKey, "", "the KEZ auth service could not decide: "+err.Error())
		}
		return
	}
	s.authorized.Add(1)
	s.log.Debug("login granted", "user", who, "client_host", rc.ClientInformation.Host, "server", rc.Server.ID)
	s.respond(m, rc, serverXKey, token, "")
}

// authorize decides a well-formed request and returns the user JWT and the
// name it carries. Errors are [*DenyError] for policy decisions and plain
// errors when the service could not decide.
func (s *Service) authorize(rc *jwt.AuthorizationRequestClaims) (string, string, error) {
	key, err := VerifyNonce(rc.ConnectOptions, rc.ClientInformation)
	if err != nil {
		return "", "", err
	}
	var (
		name, account string
		perms         jwt.Permissions
	)
	if key.String() == s.prov {
		name, account, perms = "kez-chat-server", s.cfg.ChatAccount, GatePermissions(s.prov, s.cfg.Stream)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.LookupTimeout)
		defer cancel()
		entry, err := s.cfg.Directory.Lookup(ctx, key)
		switch {
		case errors.Is(err, ErrUnknownKey):
			return "", "", deny("%s is not registered", key)
		case err != nil:
			return "", "", fmt.Errorf("looking up %s: %w", key, err)
		case entry.Suspended:
			return "", "", deny("%s (%s) is suspended", key, entry.Handle)
		}
		if s.cfg.Authorizer != nil {
			req := &Request{
				Key: key, Entry: entry,
				ClientName: rc.ClientInformation.Name, ClientHost: rc.ClientInformation.Host,
				ServerID: rc.Server.ID, ServerName: rc.Server.Name,
			}
			if err := s.cfg.Authorizer(ctx, req); err != nil {
				return "", "", deny("%s (%s) refused by policy: %v", key, entry.Handle, err)
			}
		}
		name, account, perms = entry.Handle, s.cfg.UserAccount, Permissions(key, s.cfg.Stream)
	}
	uc := jwt.NewUserClaims(rc.UserNkey)
	// The NATS user name is the key: nats-server stamps it on every
	// request that crosses a service import (Nats-Request-Info "user"),
	// and the chat-server's gate trusts nothing else to tell who sent it.
	uc.Name = key.String()
	uc.Audience = account
	uc.Expires = s.cfg.Now().Add(s.cfg.TTL).Unix()
	uc.Permissions = perms
	uc.AllowedConnectionTypes = jwt.StringList{jwt.ConnectionTypeStandard, jwt.ConnectionTypeWebsocket}
	uc.Limits.Payload = s.cfg.MaxPayload
	uc.Limits.Subs = s.cfg.MaxSubscriptions
	token, err := uc.Encode(s.issuer)
	if err != nil {
		return "", "", fmt.Errorf("signing the user JWT: %w", err)
	}
	return token, name, nil
}

// respond signs (and, for a sealed request, seals) the response: exactly
// one of userJWT and reason is set.
func (s *Service) respond(m *nats.Msg, rc *jwt.AuthorizationRequestClaims, serverXKey, userJWT, reason string) {
	if m.Reply == "" {
		return
	}
	rs := jwt.NewAuthorizationResponseClaims(rc.UserNkey)
	rs.Audience = rc.Server.ID
	rs.Jwt, rs.Error = userJWT, reason
	token, err := rs.Encode(s.issuer)
	if err != nil {
		s.log.Error("cannot sign an auth response", "err", err)
		_ = m.Respond(nil)
		return
	}
	data := []byte(token)
	if serverXKey != "" {
		if data, err = s.xbox.Seal(data, serverXKey); err != nil {
			s.log.Error("cannot seal an auth response", "err", err)
			_ = m.Respond(nil)
			return
		}
	}
	if err := m.Respond(data); err != nil {
		s.log.Warn("cannot send an auth response", "err", err)
	}
}
