package chatserver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/jsstore"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Values of [Server].StoreBackend.
const (
	// StoreSQLite keeps the handle registry in the SQLite file DBPath: one
	// machine (replicas on it may share the file).
	StoreSQLite = "sqlite"
	// StoreJetStream keeps the handle registry in a JetStream key-value
	// bucket ([jsstore.DefaultBucket]) of the callout account, reached
	// through the callout service's own login: replicas on any machine
	// share it, and no KEZ user can reach it.
	StoreJetStream = "jetstream"
)

// errRegistryNotOpen is what registry calls return before a JetStream
// registry is open.
var errRegistryNotOpen = errors.New("chatserver: the handle registry is not open yet (it lives in NATS JetStream, which the server has not reached yet)")

// registry is a handle store the server can check for readiness.
type registry interface {
	handles.Store
	Ping(ctx context.Context) error
}

// registryRef holds the open registry (an atomic.Pointer needs a type)
// and, with StoreJetStream, its view for logins (nil: none).
type registryRef struct {
	registry
	view *jsstore.View
}

// loginStore is the registry as logins see it (the callout's directory
// and the gate's): LookupKey goes to the registry's view when there is
// one.
type loginStore struct{ lazyStore }

func (l loginStore) LookupKey(ctx context.Context, key kez.PublicKey) (handles.Record, error) {
	if r := l.s.store.Load(); r != nil && r.view != nil {
		return r.view.LookupKey(ctx, key)
	}
	return l.lazyStore.LookupKey(ctx, key)
}

// lazyStore is the registry as the handle server and the callout see it:
// the open store, or errRegistryNotOpen until there is one.
type lazyStore struct{ s *Server }

func (l lazyStore) get() (registry, error) {
	if r := l.s.store.Load(); r != nil {
		return r.registry, nil
	}
	return nil, errRegistryNotOpen
}

func (l lazyStore) Claim(ctx context.Context, rec handles.Record) (bool, error) {
	r, err := l.get()
	if err != nil {
		return false, err
	}
	return r.Claim(ctx, rec)
}

func (l lazyStore) Lookup(ctx context.Context, h handles.Handle) (handles.Record, error) {
	r, err := l.get()
	if err != nil {
		return handles.Record{}, err
	}
	return r.Lookup(ctx, h)
}

func (l lazyStore) LookupKey(ctx context.Context, key kez.PublicKey) (handles.Record, error) {
	r, err := l.get()
	if err != nil {
		return handles.Record{}, err
	}
	return r.LookupKey(ctx, key)
}

func (l lazyStore) SetSuspended(ctx context.Context, h handles.Handle, suspended bool) error {
	r, err := l.get()
	if err != nil {
		return err
	}
	return r.SetSuspended(ctx, h, suspended)
}

func (l lazyStore) Release(ctx context.Context, h handles.Handle) error {
	r, err := l.get()
	if err != nil {
		return err
	}
	return r.Release(ctx, h)
}

// SyncRegistry waits until the server's view of the registry for logins
// (StoreJetStream; see RegistryMaxStale) holds every change stored before
// the call, or ctx ends: after it, a suspension or revocation stored
// before is what this server's logins see. It returns nil at once without
// a view, and [ErrNotStarted] before the registry is open.
func (s *Server) SyncRegistry(ctx context.Context) error {
	r := s.store.Load()
	switch {
	case r == nil:
		return ErrNotStarted
	case r.view == nil:
		return nil
	}
	if err := r.view.Sync(ctx); err != nil {
		return fmt.Errorf("chatserver: syncing the registry's view: %w", err)
	}
	return nil
}

// registryMaxStale is RegistryMaxStale with its default.
func (s *Server) registryMaxStale() time.Duration {
	if s.RegistryMaxStale == 0 {
		return jsstore.DefaultMaxStale
	}
	return s.RegistryMaxStale
}

// registryName says where the registry lives, for logs and errors.
func (s *Server) registryName() string {
	if s.StoreBackend == StoreJetStream {
		return fmt.Sprintf("(JetStream bucket %s in account %s)", jsstore.DefaultBucket, callout.DefaultAuthAccount)
	}
	return s.DBPath
}

// openJetStreamRegistry opens (creating if needed) the registry bucket
// through nc, the callout service's login, retrying until it works or ctx
// ends. It reports whether the registry is open.
func (s *Server) openJetStreamRegistry(ctx context.Context, nc *nats.Conn) bool {
	js, err := jetstream.New(nc)
	if err != nil {
		s.log.Error("cannot use JetStream", "err", err)
		return false
	}
	replicas := max(s.StoreReplicas, 1)
	warned := false
	for retry := minRetry; ; retry = min(2*retry, maxRetry) {
		if !waitUp(ctx, nc, nil) {
			return false
		}
		octx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := jsstore.New(octx, js, jsstore.WithReplicas(replicas))
		if err == nil {
			err = st.Ping(octx)
		}
		cancel()
		if err == nil {
			ref := &registryRef{registry: st}
			if s.RegistryMaxStale >= 0 {
				// Options checked in defaults: NewView cannot fail.
				ms := s.registryMaxStale()
				ref.view, _ = st.NewView(ctx, jsstore.WithMaxStale(ms), jsstore.WithCheckInterval(min(jsstore.DefaultCheckInterval, ms/2)))
			}
			s.store.Store(ref)
			s.log.Info("handle registry open", "registry", s.registryName(), "replicas", replicas, "login_view", ref.view != nil)
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		if warned {
			s.log.Debug("cannot open the handle registry in JetStream yet; retrying", "err", err, "retry_in", retry)
		} else {
			s.log.Warn("cannot open the handle registry in JetStream yet; retrying (the auth account needs JetStream: print the snippet with \"kez-chat-server nats-config --store jetstream\")",
				"registry", s.registryName(), "err", err, "retry_in", retry)
			warned = true
		}
		if !lifecycle.Sleep(ctx, retry) {
			return false
		}
	}
}

func (l lazyStore) AddDevice(ctx context.Context, d handles.DeviceRecord) (bool, error) {
	r, err := l.get()
	if err != nil {
		return false, err
	}
	created, err := r.AddDevice(ctx, d)
	if err == nil {
		l.s.gate.forgetDigests(d.Person.String())
	}
	return created, err
}

func (l lazyStore) RevokeDevice(ctx context.Context, person, device kez.PublicKey, at time.Time) error {
	r, err := l.get()
	if err != nil {
		return err
	}
	err = r.RevokeDevice(ctx, person, device, at)
	if err == nil {
		l.s.gate.forgetDigests(person.String())
	}
	return err
}

func (l lazyStore) Devices(ctx context.Context, person kez.PublicKey) ([]handles.DeviceRecord, error) {
	r, err := l.get()
	if err != nil {
		return nil, err
	}
	return r.Devices(ctx, person)
}
