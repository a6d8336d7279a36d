package callout_test

import (
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// stack is a real nats-server configured with exactly the rendered
// snippet, and one callout service listening on it.
type stack struct {
	t    testing.TB
	keys *callout.Keys
	dir  *callout.StaticDirectory
	srv  *natstest.Server
	svc  *callout.Service
	cfg  callout.Config
	log  *syncBuffer // the services' log
}

// syncBuffer collects log text from concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// logged reports whether the services logged text. A service logs a
// decision before it answers, so a refused login's reason is already
// there when the client sees the refusal.
func (s *stack) logged(text string) bool { return strings.Contains(s.log.String(), text) }

type stackOptions struct {
	config  callout.ConfigOptions
	service callout.Config // Keys and Directory are filled in
}

func newStack(t testing.TB, o stackOptions) *stack {
	t.Helper()
	keys, err := callout.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	conf, err := callout.NATSConfig(keys, o.config)
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, keys: keys, dir: &callout.StaticDirectory{}, srv: natstest.Run(t, conf)}
	s.cfg = o.service
	s.cfg.Keys, s.cfg.Directory = keys, s.dir
	s.log = &syncBuffer{}
	if s.cfg.Logger == nil {
		s.cfg.Logger = slog.New(slog.NewTextHandler(s.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s.svc = s.startService()
	return s
}

// startService starts one more service replica on its own connection.
func (s *stack) startService() *callout.Service {
	s.t.Helper()
	svc, err := callout.New(s.cfg)
	if err != nil {
		s.t.Fatal(err)
	}
	nc, err := nats.Connect(s.srv.ClientURL(), append(s.keys.ServiceOptions(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))...)
	if err != nil {
		s.t.Fatal(err)
	}
	if err := svc.Listen(nc); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		_ = svc.Close()
		nc.Close()
	})
	return svc
}

// user is a KEZ identity registered in the stack's directory.
func (s *stack) user(handle string) *kez.Identity {
	s.t.Helper()
	id := newIdentity(s.t)
	s.dir.Set(id.PublicKey(), callout.Entry{Handle: handle})
	return id
}

// newIdentity returns a fresh identity.
func newIdentity(t testing.TB) *kez.Identity {
	t.Helper()
	id, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// client is a connection with its asynchronous errors captured.
type client struct {
	*nats.Conn
	errs chan error
}

// loginOptions are what chat.Connect uses: the key, the nonce signer, the
// private reply prefix and the timeout; then NoReconnect (last, so callers
// may drop it).
func loginOptions(key kez.PublicKey, sign nats.SignatureHandler) []nats.Option {
	return []nats.Option{
		nats.Nkey(key.String(), sign),
		nats.CustomInboxPrefix("_INBOX." + key.String()),
		nats.Timeout(5 * time.Second),
		nats.NoReconnect(),
	}
}

func (s *stack) connect(id *kez.Identity) (*client, error) {
	return s.connectAs(id.PublicKey(), id.SignNATSNonce)
}

func (s *stack) connectAs(key kez.PublicKey, sign nats.SignatureHandler) (*client, error) {
	c := &client{errs: make(chan error, 16)}
	opts := append(loginOptions(key, sign), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case c.errs <- err:
		default:
		}
	}))
	nc, err := nats.Connect(s.srv.ClientURL(), opts...)
	if err != nil {
		return nil, err
	}
	c.Conn = nc
	s.t.Cleanup(nc.Close)
	return c, nil
}

func (s *stack) mustConnect(id *kez.Identity) *client {
	s.t.Helper()
	c, err := s.connect(id)
	if err != nil {
		s.t.Fatalf("login: %v\nserver log:\n%s", err, strings.Join(s.srv.Logs(), "\n"))
	}
	return c
}

// wantViolation waits for the permissions violation naming subject.
func (c *client) wantViolation(t testing.TB, subject string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-c.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
			t.Logf("other async error: %v", err)
		case <-timeout:
			t.Fatalf("no permissions violation for %q", subject)
		}
	}
}
