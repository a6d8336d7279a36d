// Package devstack runs a whole KEZ deployment on one machine for
// development: the real NATS server as a separate process (by default
// "go tool nats-server", the version pinned in go.mod), configured with the
// chat-server's auth callout, plus a sig-server and a chat-server in this
// process, all on free loopback ports, with their state in one folder.
//
//	st, err := devstack.Start(ctx, devstack.Config{Dir: dir})
//	defer st.Close()
//	// st.Env() is what a client needs: NATS_URL, KEZ_SERVER, KEZ_SIG_SERVER, KEZ_DOMAIN
//
// Start returns once the chat-server is ready (the callout answers and the
// inbox stream exists) and DIR/env is written. Close stops everything
// Start started and removes DIR/env. examples/devstack is the program
// around it; the quickstart embeds it.
//
// It is for development and tests, never the production recipe: an
// operator runs their own NATS (docs/operators.md). The package never
// links nats-server; it execs it.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// DefaultDomain is the handle domain of a dev stack (.test is reserved for
// testing, RFC 6761, so it never clashes with a real server).
const DefaultDomain = "kez.test"

// Files inside Config.Dir.
const (
	EnvFile      = "env"             // the client environment, written when ready
	NATSConfFile = "nats.conf"       // the generated NATS configuration
	NATSLogFile  = "nats-server.log" // NATS's output
	NATSPIDFile  = "nats-server.pid" // written by NATS itself (pid_file)
	ServerLog    = "servers.log"     // the chat-server's and sig-server's logs
	natsStore    = "nats"            // JetStream store folder
	keysFolder   = "keys"            // callout keys
	chatDB       = "chat.db"         // handle registry
	sigDB        = "sig.db"          // sigchains
	readyTimeout = 10 * time.Minute  // a cold "go tool" build of nats-server takes minutes on a small machine
	stopTimeout  = 15 * time.Second  // how long NATS may take to stop before it is killed
	pollInterval = 50 * time.Millisecond
)

// Config shapes a dev stack.
type Config struct {
	// Dir holds all state (keys, databases, NATS store, logs, env). It is
	// created if missing and may be reused: registered users survive a
	// restart. Required.
	Dir string
	// Domain is the handle domain the chat-server registers. Default
	// [DefaultDomain].
	Domain string
	// NATSServer is a nats-server binary to run. Empty: "go tool
	// nats-server", run in ModuleDir.
	NATSServer string
	// ModuleDir is a folder inside the kez-chat module, where "go tool"
	// finds the pinned nats-server. Empty: the working folder.
	ModuleDir string
	// Logger receives the servers' logs. nil: DIR/servers.log.
	Logger *slog.Logger
	// Progress, if set, is told what Start is waiting for (e.g. the first
	// build of nats-server).
	Progress func(msg string)
}

// Stack is a running dev stack. Its fields are set by Start; its methods
// are safe for concurrent use.
type Stack struct {
	Dir          string
	Domain       string
	NATSURL      string
	ServerURL    string // the chat-server (KEZ_SERVER)
	SigServerURL string // KEZ_SIG_SERVER
	NATSMonitor  string // NATS's HTTP monitoring base URL
	NATSCommand  string // how NATS was started, for people

	nats     *exec.Cmd
	natsDone chan struct{} // closed when the NATS process has exited
	natsErr  error         // its exit status, once natsDone is closed

	cancel  context.CancelFunc // stops the HTTP servers
	serving sync.WaitGroup
	chat    *chatserver.Server
	chains  *sqlitestore.Store
	logFile *os.File

	closeOnce sync.Once
	closeErr  error
}

// Start brings up NATS, the sig-server and the chat-server, waits until
// the chat-server is ready and writes DIR/env. If anything fails it stops
// what it started and returns the error. ctx bounds the start (a cold
// build of nats-server included).
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
	os.Remove(filepath.Join(dir, EnvFile)) // a stale one points at dead ports
	if cfg.Domain == "" {
		cfg.Domain = DefaultDomain
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	s := &Stack{Dir: dir, Domain: cfg.Domain, natsDone: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	log := cfg.Logger
	if log == nil {
		f, err := os.OpenFile(filepath.Join(dir, ServerLog), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("devstack: server log: %w", err)
		}
		s.logFile = f
		log = slog.New(slog.NewTextHandler(f, nil))
	}

	if err := s.startNATS(ctx, cfg, progress); err != nil {
		return nil, err
	}

	serveCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel

	s.chains, err = sqlitestore.Open(filepath.Join(dir, sigDB))
	if err != nil {
		return nil, fmt.Errorf("devstack: sig-server database: %w", err)
	}
	sigLog := log.With("server", "sig")
	sigApp := sigchain.NewHandler(s.chains, sigchain.WithLogger(sigLog))
	if s.SigServerURL, err = s.serve(serveCtx, httpserve.Wrap(sigApp, httpserve.Options{Ready: s.chains.Ping, Logger: sigLog}), sigLog); err != nil {
		return nil, err
	}

	s.chat = &chatserver.Server{
		Domain:       cfg.Domain,
		SigServerURL: s.SigServerURL,
		AllowLocal:   true,
		NATSURL:      s.NATSURL,
		DBPath:       filepath.Join(dir, chatDB),
		KeysDir:      filepath.Join(dir, keysFolder),
		Logger:       log.With("server", "chat"),
	}
	if err := s.chat.Start(ctx); err != nil {
		return nil, err
	}
	if s.ServerURL, err = s.serve(serveCtx, s.chat.Handler(), log.With("server", "chat")); err != nil {
		return nil, err
	}
	rctx, rcancel := context.WithTimeout(ctx, time.Minute)
	defer rcancel()
	if err := s.chat.WaitReady(rctx); err != nil {
		return nil, fmt.Errorf("devstack: the chat-server did not get ready: %w (see %s and %s)", err, filepath.Join(dir, ServerLog), filepath.Join(dir, NATSLogFile))
	}
	if err := writeFileAtomic(filepath.Join(dir, EnvFile), []byte(s.Env()), 0o600); err != nil {
		return nil, fmt.Errorf("devstack: writing the env file: %w", err)
	}
	return s, nil
}

// startNATS writes the NATS config (the chat-server's callout snippet in a
// standalone development config), runs the server and waits until its
// /healthz answers.
func (s *Stack) startNATS(ctx context.Context, cfg Config, progress func(string)) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	listen, monitor := "127.0.0.1:"+strconv.Itoa(ports[0]), "127.0.0.1:"+strconv.Itoa(ports[1])
	conf, err := chatserver.NATSConfig(filepath.Join(s.Dir, keysFolder), callout.ConfigOptions{
		Standalone: true,
		Listen:     listen,
		HTTPListen: monitor,
		StoreDir:   filepath.Join(s.Dir, natsStore),
	})
	if err != nil {
		return err
	}
	conf += "pid_file: " + strconv.Quote(filepath.Join(s.Dir, NATSPIDFile)) + "\n"
	confPath := filepath.Join(s.Dir, NATSConfFile)
	if err := writeFileAtomic(confPath, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("devstack: writing %s: %w", confPath, err)
	}
	os.Remove(filepath.Join(s.Dir, NATSPIDFile))

	var cmd *exec.Cmd
	if cfg.NATSServer != "" {
		cmd = exec.Command(cfg.NATSServer, "-c", confPath)
		s.NATSCommand = cfg.NATSServer + " -c " + confPath
	} else {
		goBin, err := exec.LookPath("go")
		if err != nil {
			return errors.New("devstack: the go command is not on PATH; it runs the pinned nats-server (go tool nats-server), or pass a nats-server binary")
		}
		cmd = exec.Command(goBin, "tool", "nats-server", "-c", confPath)
		cmd.Dir = cfg.ModuleDir
		s.NATSCommand = "go tool nats-server -c " + confPath
	}
	logf, err := os.OpenFile(filepath.Join(s.Dir, NATSLogFile), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("devstack: NATS log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd.Stdout, cmd.Stderr = logf, logf
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("devstack: starting NATS (%s): %w", s.NATSCommand, err)
	}
	s.nats = cmd
	go func() {
		s.natsErr = cmd.Wait()
		close(s.natsDone)
	}()
	s.NATSURL = "nats://" + listen
	s.NATSMonitor = "http://" + monitor

	progress("starting NATS (" + s.NATSCommand + "; the first run builds it, which takes a while)")
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		// Polling is the only way to learn when another process is ready.
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.NATSMonitor+"/healthz", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.natsDone:
			return fmt.Errorf("devstack: NATS exited while starting (%v); its output:\n%s", s.natsErr, tailFile(filepath.Join(s.Dir, NATSLogFile), 4000))
		case <-ctx.Done():
			return fmt.Errorf("devstack: NATS is not healthy at %s: %w; its output:\n%s", s.NATSMonitor, ctx.Err(), tailFile(filepath.Join(s.Dir, NATSLogFile), 4000))
		case <-time.After(pollInterval):
		}
	}
}

// serve serves h on a free loopback port until ctx ends and returns its
// base URL.
func (s *Stack) serve(ctx context.Context, h http.Handler, log *slog.Logger) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("devstack: listening: %w", err)
	}
	s.serving.Add(1)
	go func() {
		defer s.serving.Done()
		if err := httpserve.Serve(ctx, ln, h, log); err != nil {
			log.Error("serving failed", "err", err)
		}
	}()
	return "http://" + ln.Addr().String(), nil
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

// NATSPID returns the process ID of the NATS server as it wrote it to
// DIR/nats-server.pid (under "go tool" it is a child of the go command),
// or 0 if it is not known. NATS leaves the file behind when it stops.
func (s *Stack) NATSPID() int {
	b, err := os.ReadFile(filepath.Join(s.Dir, NATSPIDFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Ready reports whether the chat-server is ready (see chatserver.Server.Ready).
func (s *Stack) Ready() error { return s.chat.Ready(context.Background()) }

// NATSExited is closed if the NATS process exits (on its own, or by
// Close).
func (s *Stack) NATSExited() <-chan struct{} { return s.natsDone }

// Close stops the chat-server, the sig-server and NATS (gracefully, then
// by force after 15 s), and removes DIR/env. It is idempotent and returns
// the first error met.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.close() })
	return s.closeErr
}

func (s *Stack) close() error {
	var errs []error
	os.Remove(filepath.Join(s.Dir, EnvFile))
	if s.cancel != nil {
		s.cancel()
		s.serving.Wait()
	}
	if s.chat != nil {
		if err := s.chat.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.chains != nil {
		if err := s.chains.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.nats != nil {
		if err := s.stopNATS(); err != nil {
			errs = append(errs, err)
		}
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
	return errors.Join(errs...)
}

// stopNATS asks the NATS process to stop (the go command passes the
// signal on to nats-server and waits for it), and kills its whole process
// group if it is not gone in time.
func (s *Stack) stopNATS() error {
	select {
	case <-s.natsDone:
		return nil // already gone
	default:
	}
	if err := terminate(s.nats.Process); err != nil {
		killGroup(s.nats.Process)
	}
	select {
	case <-s.natsDone:
		return nil
	case <-time.After(stopTimeout):
	}
	killGroup(s.nats.Process)
	<-s.natsDone
	return fmt.Errorf("devstack: NATS did not stop within %s and was killed", stopTimeout)
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("devstack: finding a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
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

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		return "…" + string(b[len(b)-n:])
	}
	return string(b)
}
