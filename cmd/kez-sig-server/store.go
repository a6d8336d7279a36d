package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/httpjson"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/jsstore"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore/groupstore"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// Store backends (--store).
const (
	storeSQLite    = "sqlite"
	storeJetStream = "jetstream"
)

// storeConfig is what the flags say about the chain store.
type storeConfig struct {
	backend  string // storeSQLite or storeJetStream
	dbPath   string // sqlite
	natsURL  string // jetstream
	natsKey  string // jetstream: the nkey seed file
	replicas int    // jetstream: stream replicas when this server creates it
	limits   sigchain.Limits

	groupLimits  group.Limits
	groupDomains []string // none: any

	linkLog sigchain.LinkLog // nil: no transparency log
}

// chainOptions are the options of the chain API the flags say.
func (c storeConfig) chainOptions(log *slog.Logger) []sigchain.HandlerOption {
	opts := []sigchain.HandlerOption{sigchain.WithLogger(log), sigchain.WithLimits(c.limits)}
	if c.linkLog != nil {
		opts = append(opts, sigchain.WithLog(c.linkLog))
	}
	return opts
}

// groupOptions are the options of the group API the flags say.
func (c storeConfig) groupOptions(log *slog.Logger) []group.HandlerOption {
	opts := []group.HandlerOption{group.WithLogger(log), group.WithLimits(c.groupLimits)}
	if len(c.groupDomains) > 0 {
		opts = append(opts, group.WithDomains(c.groupDomains...))
	}
	return opts
}

// api routes the group API (group.GroupsPath) to groups and everything
// else to chains.
func api(chains, groups http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", chains)
	mux.Handle(group.GroupsPath, groups)
	mux.Handle(group.GroupsPath+"/", groups)
	return mux
}

// chains is the opened chain store as the HTTP side sees it: the API
// handler (chains and groups; 503 until the store is open), the
// readiness check, a close function, and the APIs and store once open
// (nil before), for metrics and the collection of orphan chains.
type chains struct {
	handler http.Handler
	ready   func(context.Context) error
	close   func()
	app     func() *sigchain.Handler
	groups  func() *group.Handler
	store   func() sigchain.OrphanCollector
}

// openChains opens the store the flags select. A SQLite store is open when
// it returns; a JetStream store opens in the background once NATS answers,
// until ctx ends.
func openChains(ctx context.Context, c storeConfig, log *slog.Logger) (*chains, error) {
	switch c.backend {
	case storeSQLite:
		st, err := sqlitestore.Open(c.dbPath)
		if err != nil {
			return nil, err
		}
		h := sigchain.NewHandler(st, c.chainOptions(log)...)
		gh := group.NewHandler(groupstore.New(st), st, c.groupOptions(log)...)
		return &chains{
			handler: api(h, gh),
			ready:   st.Ping,
			close:   func() { st.Close() },
			app:     func() *sigchain.Handler { return h },
			groups:  func() *group.Handler { return gh },
			store:   func() sigchain.OrphanCollector { return st },
		}, nil
	case storeJetStream:
		return openJetStream(ctx, c, log)
	}
	return nil, servercmd.Usagef("--store %q: want %s or %s", c.backend, storeSQLite, storeJetStream)
}

func openJetStream(ctx context.Context, c storeConfig, log *slog.Logger) (*chains, error) {
	if c.natsURL == "" {
		return nil, servercmd.Usagef("--store jetstream needs --nats (or NATS_URL): the URL of your NATS, e.g. nats://127.0.0.1:4222")
	}
	if c.replicas < 1 || c.replicas > 5 {
		return nil, servercmd.Usagef("--replicas %d: want 1 to 5", c.replicas)
	}
	kp, err := loadOrCreateNKey(c.natsKey)
	if err != nil {
		return nil, err
	}
	pub, _ := kp.PublicKey()
	log = log.With("nats_key", pub)
	var warned atomic.Bool
	nc, err := nats.Connect(c.natsURL,
		nats.Nkey(pub, kp.Sign),
		nats.Name("kez-sig-server"),
		nats.Timeout(5*time.Second),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500*time.Millisecond),
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(func(nc *nats.Conn) {
			warned.Store(false)
			log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			warned.Store(false)
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if errors.Is(err, nats.ErrAuthorization) && !warned.Swap(true) {
				log.Warn("NATS refused the sig-server's key; give it to \"kez-chat-server nats-config --sig-server-key\" and restart NATS", "err", err)
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrAuthorization) {
				if !warned.Swap(true) {
					log.Warn("NATS refused the sig-server's key; give it to \"kez-chat-server nats-config --sig-server-key\" and restart NATS", "err", err)
				}
				return
			}
			log.Warn("NATS error", "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("--nats %q: %w", c.natsURL, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}

	var (
		store   atomic.Pointer[jsstore.Store]
		handler atomic.Pointer[sigchain.Handler]
		groups  atomic.Pointer[group.Handler]
		routes  atomic.Pointer[http.Handler]
	)
	go func() {
		for retry := 50 * time.Millisecond; ctx.Err() == nil; retry = min(2*retry, 5*time.Second) {
			if nc.IsConnected() {
				octx, cancel := context.WithTimeout(ctx, 10*time.Second)
				st, err := jsstore.New(octx, js, jsstore.WithReplicas(c.replicas))
				if err == nil {
					err = st.Ping(octx)
				}
				cancel()
				if err == nil {
					h := sigchain.NewHandler(st, c.chainOptions(log)...)
					gh := group.NewHandler(st.Groups(), st, c.groupOptions(log)...)
					both := api(h, gh)
					handler.Store(h)
					groups.Store(gh)
					routes.Store(&both)
					store.Store(st)
					log.Info("sigchain store open", "stream", jsstore.DefaultStream, "replicas", c.replicas)
					return
				}
				if ctx.Err() == nil {
					log.Warn("cannot open the sigchain stream yet; retrying (the sig-server's NATS account needs JetStream, see docs/operators.md)", "err", err, "retry_in", retry)
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
		}
	}()
	return &chains{
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := routes.Load()
			if h == nil {
				httpjson.Error(w, http.StatusServiceUnavailable, "the sigchain store is not open yet (it lives in NATS JetStream); try again shortly")
				return
			}
			(*h).ServeHTTP(w, r)
		}),
		app:    handler.Load,
		groups: groups.Load,
		store: func() sigchain.OrphanCollector {
			if st := store.Load(); st != nil {
				return st
			}
			return nil
		},
		ready: func(ctx context.Context) error {
			st := store.Load()
			if st == nil {
				if !nc.IsConnected() {
					return fmt.Errorf("not logged in to NATS at %s yet (is NATS running, and does its nats.conf list this server's key %s?)", natsconn.RedactURL(c.natsURL), pub)
				}
				return fmt.Errorf("the sigchain stream %s is not open yet", jsstore.DefaultStream)
			}
			return st.Ping(ctx)
		},
		close: nc.Close,
	}, nil
}

// loadOrCreateNKey reads the user nkey seed in path, or makes one and
// writes it there (mode 0600, through a temporary file renamed into
// place, so a crash never leaves half a key).
func loadOrCreateNKey(path string) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed(bytes.TrimSpace(b))
		if err != nil {
			return nil, fmt.Errorf("the NATS key file %s does not hold an nkey seed: %w", path, err)
		}
		if pub, _ := kp.PublicKey(); !nkeys.IsValidPublicUserKey(pub) {
			return nil, fmt.Errorf("the NATS key file %s holds a %c… key; want a user seed (SU…)", path, pub[0])
		}
		return kp, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading the NATS key file: %w", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("making the NATS key's folder: %w", err)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nats-key-*")
	if err != nil {
		return nil, fmt.Errorf("writing the NATS key: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(seed, '\n')); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("writing the NATS key: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	// Link, not rename: of two servers making the key at once, one wins
	// and the other reads its key.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return loadOrCreateNKey(path)
		}
		return nil, fmt.Errorf("writing the NATS key: %w", err)
	}
	return kp, nil
}

// natsKeyCommand prints the public half of the sig-server's NATS key,
// making the key on first use: the value for "kez-chat-server nats-config
// --sig-server-key".
func natsKeyCommand(args []string, env servercmd.Env, stdout, stderr io.Writer) error {
	fs := servercmd.NewFlagSet("kez-sig-server nats-key", "usage: kez-sig-server nats-key [--nats-key FILE]\n\n"+
		"Prints the public NATS key (U…) the sig-server logs in with when it keeps\n"+
		"sigchains in JetStream (--store jetstream), making the key on first use\n"+
		"(mode 0600). Pass it to \"kez-chat-server nats-config --sig-server-key\".", stderr)
	keyFile := fs.String("nats-key", env.Or("KEZ_SIG_NATS_KEY", defaultNATSKey), "file of the sig-server's NATS nkey seed (env KEZ_SIG_NATS_KEY)")
	if ok, err := servercmd.Parse(fs, args, "nats-key takes flags only"); !ok {
		return err
	}
	kp, err := loadOrCreateNKey(*keyFile)
	if err != nil {
		return err
	}
	pub, _ := kp.PublicKey()
	_, err = fmt.Fprintln(stdout, pub)
	return err
}

// defaultNATSKey is the default --nats-key file.
const defaultNATSKey = "kez-sig-nats.nk"
