// Package devstack is the one launcher of a whole KEZ deployment on one
// machine: NATS configured with the chat-server's auth callout (exactly
// the snippet "kez-chat-server nats-config" prints), a sig-server and a
// chat-server, on loopback ports, with all their state in one folder.
//
//	st, err := devstack.Start(ctx, devstack.Config{Dir: dir})
//	defer st.Close()
//	// st.Env() is what a client needs: NATS_URL, KEZ_SERVER, KEZ_SIG_SERVER, KEZ_DOMAIN
//
// Each of the three runs in this process or, when [Config] names its
// binary, as a separate process:
//
//   - NATS: nats-server's server package (the version pinned in go.mod),
//     or Config.NATSServer, a nats-server binary;
//   - the sig-server: sigchain.NewHandler over SQLite with a transparency
//     log (translog/logserver, checkpoints every 100 ms, its /v1/info and
//     /v1/log/ served beside the chains), or Config.SigServer, a
//     kez-sig-server binary (its log in the same folder);
//   - the chat-server: chatserver.Server, or Config.ChatServer, a
//     kez-chat-server binary.
//
// Start returns once the chat-server is ready (the callout answers and the
// inbox stream exists), DIR/env is written and the ports are kept in
// DIR/ports.json: a later Start in the same folder listens on the same
// ports, so clients configured against one run keep working after a
// restart; a kept port that another program holds now fails Start with a
// [*PortError]. Close stops everything Start started and removes DIR/env.
//
// examples/devstack and the quickstart run it as it comes; stacktest wraps
// it for the tests of other packages; internal/bench runs NATS and the
// chat-server as processes to measure them; systemtest runs all three as
// processes, as an operator does.
//
// It is for development and tests, never the production recipe: an
// operator runs their own NATS (docs/operators.md).
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore/groupstore"
	"github.com/kez-lat/kez-chat/translog/logserver"
	"github.com/nats-io/nats-server/v2/server"
)

// DefaultDomain is the handle domain of a dev stack (.test is reserved for
// testing, RFC 6761, so it never clashes with a real server).
const DefaultDomain = "kez.test"

// Files and folders inside Config.Dir.
const (
	EnvFile      = "env"             // the client environment, written when ready
	NATSConfFile = "nats.conf"       // the NATS configuration
	NATSLogFile  = "nats-server.log" // NATS's log
	ServerLog    = "servers.log"     // the logs of the servers in this process
	ChatLogFile  = "chat-server.log" // a kez-chat-server process's output
	SigLogFile   = "sig-server.log"  // a kez-sig-server process's output
	NATSStore    = "nats"            // the JetStream store folder
	KeysFolder   = "keys"            // the chat-server's callout keys
	ChatDB       = "chat.db"         // the handle registry
	SigDB        = "sig.db"          // the sigchains
	SigLogDir    = SigDB + ".log"    // the sig-server's transparency log (as kez-sig-server's default)
)

// SigLogCheckpointInterval is how often the stack's sig-server publishes a
// checkpoint of its log (tessera's minimum): an append waits for the next.
const SigLogCheckpointInterval = logserver.MinCheckpointInterval

const (
	natsReadyTimeout = 2 * time.Minute  // NATS recovering a large JetStream store
	readyTimeout     = time.Minute      // the chat-server and sig-server
	stopTimeout      = 15 * time.Second // how long a process may take to stop before it is killed
	pollInterval     = 50 * time.Millisecond
)

// Config shapes a stack. The zero value but for Dir runs everything in
// this process.
type Config struct {
	// Dir holds all state (keys, databases, NATS store, logs, ports, env).
	// It is created if missing and may be reused: registered users and the
	// ports survive a restart. Required.
	Dir string
	// Domain is the handle domain the chat-server registers. Default
	// [DefaultDomain].
	Domain string
	// AllowLocal lets the chat-server in this process accept development
	// domains (an IP:port Domain, for instance).
	AllowLocal bool

	// NATSServer is a nats-server binary to run as a process. Empty: NATS
	// runs in this process.
	NATSServer string
	// EditNATSConfig, if set, changes the configuration text NATS runs
	// with (the chat-server's snippet) before it is written to
	// DIR/nats.conf.
	EditNATSConfig func(conf string) (string, error)

	// SigServer is a kez-sig-server binary to run as a process, with
	// --listen and --db set and then SigArgs; SigEnv is added to its
	// environment. Empty: the sig-server runs in this process, with
	// SigOptions.
	SigServer  string
	SigArgs    []string
	SigEnv     []string
	SigOptions []sigchain.HandlerOption
	// SigNoLog runs the sig-server without a transparency log (in this
	// process; a process gets --no-log).
	SigNoLog bool
	// WrapSigServer, if set, wraps the handler of the sig-server in this
	// process (to count or record the requests it serves, say).
	WrapSigServer func(http.Handler) http.Handler

	// ChatServer is a kez-chat-server binary to run as a process, with
	// --listen, --domain, --sig-server, --nats, --db and --keys set and
	// then ChatArgs (a flag given again wins); ChatEnv is added to its
	// environment. Empty: the chat-server runs in this process, and
	// EditChat, if set, adjusts it before it starts.
	ChatServer string
	ChatArgs   []string
	ChatEnv    []string
	EditChat   func(*chatserver.Server)

	// Logger receives the logs of the servers in this process. nil: they
	// go to DIR/servers.log at LogLevel.
	Logger   *slog.Logger
	LogLevel slog.Level
	// Progress, if set, is told what Start is doing.
	Progress func(msg string)
}

// Stack is a running stack. Its fields are set by Start and must not be
// changed; its methods are safe for concurrent use.
type Stack struct {
	Dir          string
	Domain       string
	NATSURL      string // nats://127.0.0.1:PORT, the same across StartNATS and restarts of Dir
	NATSMonitor  string // NATS's HTTP monitoring base URL
	ServerURL    string // the chat-server (KEZ_SERVER)
	SigServerURL string // KEZ_SIG_SERVER
	KeysDir      string // the chat-server's callout keys
	NATSConfig   string // the configuration text NATS runs with
	NATSCommand  string // how NATS runs, for people
	// Chat is the chat-server running in this process, or nil when it
	// runs as a process.
	Chat *chatserver.Server
	// SigLog is the transparency log of the sig-server running in this
	// process, or nil (a process, or Config.SigNoLog).
	SigLog *logserver.Log

	cfg      Config
	natsConf string // DIR/nats.conf

	mu       sync.Mutex // guards ports and the NATS fields
	ports    ports
	natsSrv  *server.Server // NATS in this process, or nil
	natsProc *proc          // NATS as a process, or nil
	natsDone chan struct{}  // closed when the NATS started last has exited

	sigProc, chatProc *proc

	cancel  context.CancelFunc // stops the HTTP servers in this process
	serving sync.WaitGroup
	chains  *sqlitestore.Store
	logFile *os.File

	closeOnce sync.Once
	closeErr  error
}

// Start brings up NATS, the sig-server and the chat-server, waits until
// the chat-server is ready, keeps the ports in DIR/ports.json and writes
// DIR/env. If anything fails it stops what it started and returns the
// error. ctx bounds the start.
func Start(ctx context.Context, cfg Config) (st *Stack, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("devstack: a state folder (Config.Dir) is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("devstack: making the state folder: %w", err)
	}
	os.Remove(filepath.Join(dir, EnvFile)) // a stale one points at stopped servers
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	if cfg.Progress == nil {
		cfg.Progress = func(string) {}
	}
	s := &Stack{
		Dir: dir, Domain: cfg.Domain, KeysDir: filepath.Join(dir, KeysFolder),
		cfg: cfg, natsConf: filepath.Join(dir, NATSConfFile),
	}
	if s.ports, err = readPorts(dir); err != nil {
		return nil, err
	}
	if err := s.ports.checkFree(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	log := cfg.Logger
	if log == nil {
		if s.logFile, err = os.OpenFile(filepath.Join(dir, ServerLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return nil, fmt.Errorf("devstack: server log: %w", err)
		}
		log = slog.New(slog.NewTextHandler(s.logFile, &slog.HandlerOptions{Level: cfg.LogLevel}))
	}
	serveCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel

	if err := s.writeNATSConfig(); err != nil {
		return nil, err
	}
	cfg.Progress("starting NATS")
	if err := s.startNATS(ctx); err != nil {
		return nil, err
	}
	s.NATSURL = "nats://" + loopback(s.ports.NATS)
	s.NATSMonitor = "http://" + loopback(s.ports.NATSMonitor)

	cfg.Progress("starting the sig-server")
	if err := s.startSig(ctx, serveCtx, log.With("server", "sig")); err != nil {
		return nil, err
	}
	cfg.Progress("starting the chat-server")
	if err := s.startChat(ctx, serveCtx, log.With("server", "chat")); err != nil {
		return nil, err
	}
	rctx, rcancel := context.WithTimeout(ctx, readyTimeout)
	defer rcancel()
	if err := s.WaitReady(rctx); err != nil {
		return nil, err
	}
	if err := writePorts(dir, s.ports); err != nil {
		return nil, fmt.Errorf("devstack: keeping the ports: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, EnvFile), []byte(s.Env()), 0o600); err != nil {
		return nil, fmt.Errorf("devstack: writing the env file: %w", err)
	}
	return s, nil
}

// writeNATSConfig writes DIR/nats.conf: the chat-server's snippet for the
// stack's keys, as Config.EditNATSConfig changes it.
func (s *Stack) writeNATSConfig() error {
	conf, err := chatserver.NATSConfig(s.KeysDir, callout.ConfigOptions{})
	if err != nil {
		return err
	}
	if s.cfg.EditNATSConfig != nil {
		if conf, err = s.cfg.EditNATSConfig(conf); err != nil {
			return err
		}
	}
	s.NATSConfig = conf
	if err := writeFileAtomic(s.natsConf, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("devstack: writing %s: %w", NATSConfFile, err)
	}
	return nil
}

// startSig starts the sig-server: in this process, serving until serveCtx
// ends, or as a process.
func (s *Stack) startSig(ctx, serveCtx context.Context, log *slog.Logger) error {
	dbPath := filepath.Join(s.Dir, SigDB)
	if s.cfg.SigServer != "" {
		var err error
		args := []string{"--db", dbPath, "--log-checkpoint-interval", SigLogCheckpointInterval.String()}
		if s.cfg.SigNoLog {
			args = append(args, "--no-log")
		}
		args = append(args, s.cfg.SigArgs...)
		if s.sigProc, s.SigServerURL, err = s.startServer("sig-server", s.cfg.SigServer, &s.ports.SigServer, args, s.cfg.SigEnv, SigLogFile); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		return s.sigProc.waitHTTP(ctx, s.SigServerURL+"/readyz")
	}
	ln, err := listen("sig-server", &s.ports.SigServer)
	if err != nil {
		return err
	}
	s.SigServerURL = "http://" + ln.Addr().String()
	if s.chains, err = sqlitestore.Open(dbPath); err != nil {
		ln.Close()
		return fmt.Errorf("devstack: sig-server database: %w", err)
	}
	opts := []sigchain.HandlerOption{sigchain.WithLogger(log)}
	ready := s.chains.Ping
	if !s.cfg.SigNoLog {
		if s.SigLog, err = s.openSigLog(ctx, log); err != nil {
			ln.Close()
			return err
		}
		opts = append(opts, sigchain.WithLog(s.SigLog))
		ready = func(ctx context.Context) error {
			if err := s.chains.Ping(ctx); err != nil {
				return err
			}
			return s.SigLog.Ready(ctx)
		}
	}
	var h http.Handler = sigchain.NewHandler(s.chains, append(opts, s.cfg.SigOptions...)...)
	// The group API and the log's beside the chains, as kez-sig-server
	// mounts them.
	gh := group.NewHandler(groupstore.New(s.chains), s.chains, group.WithLogger(log), group.WithLimits(group.NoLimits()))
	lh := s.SigLog.Handler(logserver.Limits{ReadsPerIP: ratelimit.Unlimited}) // nil SigLog: "no log"
	mux := http.NewServeMux()
	mux.Handle(group.GroupsPath, gh)
	mux.Handle(group.GroupsPath+"/", gh)
	mux.Handle(logserver.InfoPath, lh)
	mux.Handle(logserver.LogPath, lh)
	mux.Handle("/", h)
	h = mux
	if s.cfg.WrapSigServer != nil {
		h = s.cfg.WrapSigServer(h)
	}
	s.serve(serveCtx, ln, httpserve.Wrap(h, httpserve.Options{Ready: ready, Logger: log}), log)
	return nil
}

// openSigLog opens the sig-server's transparency log in DIR/sig.db.log,
// its key made on first start and named after the stack's domain.
func (s *Stack) openSigLog(ctx context.Context, log *slog.Logger) (*logserver.Log, error) {
	dir := filepath.Join(s.Dir, SigLogDir)
	keyFile := filepath.Join(dir, "log.key")
	origin := s.Domain + "/sigchain-log"
	if _, err := os.Stat(keyFile); err == nil {
		origin = "" // an existing key keeps its name
	}
	signer, _, err := logserver.LoadOrCreateKey(keyFile, origin)
	if err != nil {
		return nil, fmt.Errorf("devstack: the sig-server's log key: %w", err)
	}
	lg, err := logserver.Open(ctx, logserver.Config{Dir: dir, Signer: signer, CheckpointInterval: SigLogCheckpointInterval, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("devstack: the sig-server's log: %w", err)
	}
	return lg, nil
}

// startChat starts the chat-server: in this process, serving until
// serveCtx ends, or as a process.
func (s *Stack) startChat(ctx, serveCtx context.Context, log *slog.Logger) error {
	dbPath := filepath.Join(s.Dir, ChatDB)
	if s.cfg.ChatServer != "" {
		var err error
		args := append([]string{
			"--domain", s.Domain, "--sig-server", s.SigServerURL, "--nats", s.NATSURL, "--db", dbPath, "--keys", s.KeysDir,
		}, s.cfg.ChatArgs...)
		s.chatProc, s.ServerURL, err = s.startServer("chat-server", s.cfg.ChatServer, &s.ports.ChatServer, args, s.cfg.ChatEnv, ChatLogFile)
		return err // WaitReady waits for /readyz
	}
	ln, err := listen("chat-server", &s.ports.ChatServer)
	if err != nil {
		return err
	}
	s.ServerURL = "http://" + ln.Addr().String()
	s.Chat = &chatserver.Server{
		Domain:       s.Domain,
		SigServerURL: s.SigServerURL,
		AllowLocal:   s.cfg.AllowLocal,
		NATSURL:      s.NATSURL,
		DBPath:       dbPath,
		KeysDir:      s.KeysDir,
		Logger:       log,
	}
	if s.cfg.EditChat != nil {
		s.cfg.EditChat(s.Chat)
	}
	if err := s.Chat.Start(ctx); err != nil {
		ln.Close()
		return err
	}
	s.serve(serveCtx, ln, s.Chat.Handler(), log)
	return nil
}

// startServer runs a KEZ server binary as a process with "--listen" on
// its kept port (or a free one) and args, its output in DIR/logFile, and
// returns it with its base URL.
func (s *Stack) startServer(name, bin string, port *int, args, env []string, logFile string) (*proc, string, error) {
	if err := pick(port); err != nil {
		return nil, "", err
	}
	p, err := startProc(name, bin, append([]string{"--listen", loopback(*port)}, args...), env, filepath.Join(s.Dir, logFile))
	return p, "http://" + loopback(*port), err
}

// serve serves h on ln until ctx ends.
func (s *Stack) serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) {
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := httpserve.Serve(ctx, ln, h, log); err != nil {
			log.Error("serving failed", "err", err)
		}
	}()
}

// Ready reports whether the chat-server is ready (see
// chatserver.Server.Ready; for a process, its /readyz).
func (s *Stack) Ready(ctx context.Context) error {
	if s.Chat != nil {
		return s.Chat.Ready(ctx)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.ServerURL+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("devstack: the chat-server's /readyz answers %s", resp.Status)
	}
	return nil
}

// WaitReady waits until the chat-server is ready, for instance after
// StartNATS, or until ctx ends.
func (s *Stack) WaitReady(ctx context.Context) error {
	if s.chatProc != nil {
		return s.chatProc.waitHTTP(ctx, s.ServerURL+"/readyz")
	}
	if err := s.Chat.WaitReady(ctx); err != nil {
		return fmt.Errorf("devstack: the chat-server is not ready: %w (see %s and %s)", err, filepath.Join(s.Dir, ServerLog), filepath.Join(s.Dir, NATSLogFile))
	}
	return nil
}

// ChatServerPID and SigServerPID return the process IDs of the
// chat-server and the sig-server running as processes, or 0.
func (s *Stack) ChatServerPID() int { return s.sigOrChatPID(s.chatProc) }

// SigServerPID: see [Stack.ChatServerPID].
func (s *Stack) SigServerPID() int { return s.sigOrChatPID(s.sigProc) }

func (s *Stack) sigOrChatPID(p *proc) int {
	if p == nil {
		return 0
	}
	return p.pid()
}

// Env returns the client environment, one "export NAME=value" line each
// for NATS_URL, KEZ_SERVER, KEZ_SIG_SERVER and KEZ_DOMAIN: what DIR/env
// holds, so ". DIR/env" prepares a shell for the kez CLI.
func (s *Stack) Env() string {
	var b strings.Builder
	for _, kv := range [][2]string{
		{"NATS_URL", s.NATSURL},
		{"KEZ_SERVER", s.ServerURL},
		{"KEZ_SIG_SERVER", s.SigServerURL},
		{"KEZ_DOMAIN", s.Domain},
	} {
		fmt.Fprintf(&b, "export %s=%s\n", kv[0], shellQuote(kv[1]))
	}
	return b.String()
}

// Close stops the chat-server, the sig-server and NATS (processes
// gracefully, then by force after 15 s), and removes DIR/env. It is
// idempotent and returns the first error met.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Stack) close() error {
	var errs []error
	os.Remove(filepath.Join(s.Dir, EnvFile))
	for _, p := range []*proc{s.chatProc, s.sigProc} {
		if p != nil {
			errs = append(errs, p.stop())
		}
	}
	if s.cancel != nil {
		s.cancel()
		s.serving.Wait()
	}
	if s.Chat != nil {
		errs = append(errs, s.Chat.Close())
	}
	if s.SigLog != nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		errs = append(errs, s.SigLog.Close(ctx))
		cancel()
	}
	if s.chains != nil {
		errs = append(errs, s.chains.Close())
	}
	errs = append(errs, s.StopNATS())
	if s.logFile != nil {
		s.logFile.Close()
	}
	return errors.Join(errs...)
}

// shellQuote quotes v for a POSIX shell when it holds anything beyond a
// safe set of characters.
func shellQuote(v string) string {
	safe := v != ""
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.:/@%+=,", c)) {
			safe = false
			break
		}
	}
	if safe {
		return v
	}
	return "'" + strings.ReplaceAll(v, "'", `'\''`) + "'"
}

func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
