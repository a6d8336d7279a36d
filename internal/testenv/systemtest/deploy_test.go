package systemtest

// A whole deployment on loopback, built from the parts an operator runs,
// with handles a fault test needs: NATS as a process (or a 3-node
// cluster) it can kill, a sig-server it can take down and bring back on
// the same address, chat-server replicas it can stop and start, and
// client connections it can cut.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/chatserver"
	kezclient "github.com/kez-lat/kez-chat/client"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/testenv/natstest"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/jsstore"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

const domain = "kez.test"

// long reports whether KEZ_LONG=1 asks for the full-scale runs.
func long() bool { return os.Getenv("KEZ_LONG") == "1" }

// needProcesses skips a test under -short: it starts nats-server processes.
func needProcesses(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts nats-server processes; skipped with -short")
	}
}

// sysOptions shape a deployment.
type sysOptions struct {
	cluster      bool          // a 3-node NATS cluster, else one nats-server process
	jetstream    bool          // registry and chains in JetStream, else SQLite files
	chatReplicas int           // chat-server replicas; default 1
	jwtLifetime  time.Duration // the callout's user JWT lifetime; default the chat-server's
	ackWait      time.Duration // clients' consumer AckWait; default chat.DefaultAckWait
}

// system is a running deployment. Its methods may be called from several
// goroutines, except those taking a testing.TB, which follow its rules.
type system struct {
	t        testing.TB
	o        sysOptions
	dir      string
	keysDir  string
	natsConf string
	proc     *natstest.Process // one NATS process, or nil
	cluster  *natstest.Cluster // or a cluster, or nil
	natsURL  string
	sigKey   nkeys.KeyPair // the sig-server's NATS login (jetstream)
	logs     *logBuffer

	mu      sync.Mutex
	sig     *sigServer
	chats   []*chatserver.Server // nil while a replica is stopped
	rr      int
	chatURL string // the front of the chat-server replicas
	sigURL  string
}

// startSystem brings a deployment up and stops it in t.Cleanup.
func startSystem(t testing.TB, o sysOptions) *system {
	t.Helper()
	needProcesses(t)
	if o.chatReplicas == 0 {
		o.chatReplicas = 1
	}
	s := newNATSSystem(t, o)

	s.sig = &sigServer{sys: s, addr: "127.0.0.1:0"}
	s.sig.start(t)
	s.sigURL = "http://" + s.sig.addr

	front := httptest.NewServer(http.HandlerFunc(s.serveChat))
	t.Cleanup(front.Close)
	s.chatURL = front.URL
	s.chats = make([]*chatserver.Server, o.chatReplicas)
	for i := range o.chatReplicas {
		s.startChat(t, i)
	}
	for i := range o.chatReplicas {
		s.waitChatReady(t, i)
	}
	return s
}

// newNATSSystem starts the deployment's NATS (with the callout snippet
// for a fresh keys folder) and returns it without the KEZ servers.
func newNATSSystem(t testing.TB, o sysOptions) *system {
	t.Helper()
	s := &system{t: t, o: o, dir: t.TempDir(), logs: &logBuffer{}}
	s.keysDir = filepath.Join(s.dir, "chat-keys")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("servers' log (tail):\n%s", s.logs.tail(20000))
		}
	})
	co := callout.ConfigOptions{}
	if o.jetstream {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		s.sigKey = kp
		co.AuthJetStream, co.SigServerKey = true, pub
	}
	conf, err := chatserver.NATSConfig(s.keysDir, co)
	if err != nil {
		t.Fatal(err)
	}
	s.natsConf = conf
	if o.cluster {
		// The cluster helper sets jetstream itself (docs/operators.md: drop
		// the snippet's last line when the server has a jetstream block).
		s.cluster = natstest.StartCluster(t, strings.Replace(conf, "\njetstream: enabled\n", "\n", 1))
		s.natsURL = s.cluster.ClientURLs()
	} else {
		s.proc = natstest.StartProcess(t, conf)
		s.natsURL = s.proc.ClientURL()
	}
	return s
}

func (s *system) replicas() int {
	if s.o.cluster {
		return 3
	}
	return 1
}

// startChat starts chat-server replica i (again), with the deployment's
// keys and registry.
func (s *system) startChat(t testing.TB, i int) {
	t.Helper()
	srv := &chatserver.Server{
		Domain:          domain,
		SigServerURL:    s.sigURL,
		NATSURL:         s.natsURL,
		NATSOptions:     []nats.Option{nats.ReconnectWait(50 * time.Millisecond), nats.ReconnectJitter(20*time.Millisecond, 20*time.Millisecond)},
		DBPath:          filepath.Join(s.dir, "chat.db"),
		KeysDir:         s.keysDir,
		UserJWTLifetime: s.o.jwtLifetime,
		Inbox:           callout.InboxConfig{Replicas: s.replicas()},
		HTTPLimits:      handles.NoLimits(), // every user comes from loopback; hostile_httplimits_test.go tests the limits
		Logger:          slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("server", fmt.Sprintf("chat%d", i)),
	}
	if s.o.jetstream {
		srv.StoreBackend, srv.StoreReplicas = chatserver.StoreJetStream, s.replicas()
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatalf("chat-server %d: %v", i, err)
	}
	t.Cleanup(func() { srv.Close() })
	s.mu.Lock()
	s.chats[i] = srv
	s.mu.Unlock()
}

// waitChatReady waits until replica i is ready (polling: the server
// waits on NATS, another process).
func (s *system) waitChatReady(t testing.TB, i int) {
	t.Helper()
	s.mu.Lock()
	srv := s.chats[i]
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := srv.WaitReady(ctx); err != nil {
		t.Fatalf("chat-server %d: %v", i, err)
	}
}

// stopChat stops replica i, as SIGTERM does: it stops answering the
// callout and its HTTP API goes away from the front.
func (s *system) stopChat(i int) {
	s.mu.Lock()
	srv := s.chats[i]
	s.chats[i] = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// serveChat is the operator's load balancer in front of the chat-server
// replicas: round robin over the running ones.
func (s *system) serveChat(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	var live []*chatserver.Server
	for _, c := range s.chats {
		if c != nil {
			live = append(live, c)
		}
	}
	var pick *chatserver.Server
	if len(live) > 0 {
		pick = live[s.rr%len(live)]
		s.rr++
	}
	s.mu.Unlock()
	if pick == nil {
		http.Error(w, `{"error":"no chat-server is running"}`, http.StatusBadGateway)
		return
	}
	pick.Handler().ServeHTTP(w, r)
}

// sigServer is a sig-server on a fixed loopback address that a test can
// take down (connections refused) and bring back.
type sigServer struct {
	sys   *system
	mu    sync.Mutex
	addr  string
	srv   *http.Server
	close func()
}

func (g *sigServer) start(t testing.TB) {
	t.Helper()
	s := g.sys
	log := slog.New(slog.NewTextHandler(s.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("server", "sig")
	var (
		store sigchain.Store
		done  func()
	)
	if s.o.jetstream {
		pub, _ := s.sigKey.PublicKey()
		nc, err := nats.Connect(s.natsURL, nats.Nkey(pub, s.sigKey.Sign), nats.Name("kez-sig-server"),
			nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.RetryOnFailedConnect(true), nats.Timeout(5*time.Second))
		if err != nil {
			t.Fatalf("sig-server NATS login: %v", err)
		}
		js, _ := jetstream.New(nc)
		deadline := time.Now().Add(60 * time.Second)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			st, err := jsstore.New(ctx, js, jsstore.WithReplicas(s.replicas()))
			cancel()
			if err == nil {
				store = st
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sig-server store: %v", err)
			}
			time.Sleep(100 * time.Millisecond) // the stream's leader is being elected in other processes
		}
		done = nc.Close
	} else {
		st, err := sqlitestore.Open(filepath.Join(s.dir, "sig.db"))
		if err != nil {
			t.Fatal(err)
		}
		store, done = st, func() { st.Close() }
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	ln, err := net.Listen("tcp", g.addr)
	if err != nil {
		done()
		t.Fatalf("sig-server listen %s: %v", g.addr, err)
	}
	g.addr = ln.Addr().String()
	g.srv = &http.Server{Handler: sigchain.NewHandler(store, sigchain.WithLogger(log), sigchain.WithLimits(sigchain.NoLimits())), ReadHeaderTimeout: 10 * time.Second}
	g.close = done
	srv := g.srv
	go srv.Serve(ln)
	t.Cleanup(g.stop)
}

// stop takes the sig-server down: listener and connections closed at once.
func (g *sigServer) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv == nil {
		return
	}
	g.srv.Close()
	g.close()
	g.srv, g.close = nil, nil
}

// user is a registered user.
type user struct {
	name   string
	id     *kez.Identity
	key    kez.PublicKey
	handle handles.Handle
}

// register registers name the way "kez register" does: the eldest link at
// the sig-server, then the handle claim at the chat-server.
func (s *system) register(t testing.TB, name string) *user {
	t.Helper()
	u, err := s.tryRegister(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func (s *system) tryRegister(name string) (*user, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	id := stacktest.Identity(name)
	u := &user{name: name, id: id, key: id.PublicKey(), handle: handles.Handle{Name: name, Domain: domain}}
	link, err := sigchain.NewLink(id, nil, sigchain.TypeEldest,
		sigchain.EldestBody(u.key, id.EncryptionKey(0).PublicKey(), 0, u.handle.String()), time.Now())
	if err != nil {
		return nil, err
	}
	err = (&sigchain.Client{BaseURL: s.sigURL}).Append(ctx, link)
	var conflict *sigchain.ConflictError
	if errors.As(err, &conflict) && conflict.Head.Seqno == 1 {
		// An earlier attempt stored its eldest link (only this key can
		// sign one) and then failed to claim: claim on top of it.
		err = nil
	}
	if err != nil {
		return nil, fmt.Errorf("eldest link of %s: %w", name, err)
	}
	if _, _, err := (&handles.Client{BaseURL: s.chatURL}).Claim(ctx, id, u.handle); err != nil {
		return nil, fmt.Errorf("claiming %s: %w", u.handle, err)
	}
	return u, nil
}

// registerMany registers n users name0…name(n-1), a few at a time.
func (s *system) registerMany(t testing.TB, prefix string, n int) []*user {
	t.Helper()
	users := make([]*user, n)
	errs := make([]error, n)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			users[i], errs[i] = s.tryRegister(fmt.Sprintf("%s%d", prefix, i))
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return users
}

// client is a user's chat.Client whose NATS connections the test can cut.
type client struct {
	*chat.Client
	u    *user
	home string
	net  *cutDialer
	log  *logBuffer
}

// open opens a chat client for u in home ("" for a fresh folder), closed
// in t.Cleanup.
func (s *system) open(t testing.TB, u *user, home string) *client {
	t.Helper()
	c, err := s.tryOpen(t, u, home)
	if err != nil {
		t.Fatalf("opening %s's client: %v", u.name, err)
	}
	return c
}

func (s *system) tryOpen(t testing.TB, u *user, home string) (*client, error) {
	if home == "" {
		home = filepath.Join(t.TempDir(), u.name)
	}
	c := &client{u: u, home: home, net: &cutDialer{}, log: &logBuffer{}}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cc, err := chat.Open(ctx, chat.Config{
		Client: kezclient.Config{
			Identity:     u.id,
			Home:         home,
			NATSURL:      s.natsURL,
			ServerURL:    s.chatURL,
			SigServerURL: s.sigURL,
			Domain:       domain,
			Logger:       slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
			NATSOptions: []nats.Option{
				nats.ReconnectWait(20 * time.Millisecond), nats.ReconnectJitter(20*time.Millisecond, 20*time.Millisecond),
				nats.SetCustomDialer(c.net),
			},
		},
		AckWait: s.o.ackWait,
	})
	if err != nil {
		return nil, err
	}
	c.Client = cc
	t.Cleanup(func() {
		c.Close()
		if t.Failed() && c.log.Len() > 0 && testing.Verbose() {
			t.Logf("%s's client log (tail):\n%s", u.name, c.log.tail(4000))
		}
	})
	return c, nil
}

// cutDialer dials NATS for a client and can cut its connections, as a
// network failure does: the socket closes under both ends.
type cutDialer struct {
	d     net.Dialer
	mu    sync.Mutex
	conns []net.Conn
}

// Dial implements nats.CustomDialer.
func (c *cutDialer) Dial(network, address string) (net.Conn, error) {
	conn, err := c.d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	c.conns = append(c.conns, conn)
	c.mu.Unlock()
	return conn, nil
}

// Cut closes every connection dialled so far and returns how many.
func (c *cutDialer) Cut() int {
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	for _, conn := range conns {
		conn.Close()
	}
	return len(conns)
}

// logBuffer collects log text from concurrent writers.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func (b *logBuffer) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Len()
}

func (b *logBuffer) tail(n int) string {
	s := b.String()
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// eventually polls cond (a real process's state, which no channel reports)
// until it holds or the timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
