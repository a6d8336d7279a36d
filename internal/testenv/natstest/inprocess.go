package natstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds how long a server may take to accept clients.
const readyTimeout = 30 * time.Second

// Server is a nats-server running inside the test process. Its methods are
// safe for concurrent use; the server is shut down in t.Cleanup.
type Server struct {
	t        testing.TB
	confPath string          // set when started from configuration text
	template *server.Options // options of the first start, before defaults
	storeDir string
	logs     *logRing

	mu   sync.Mutex
	srv  *server.Server
	port int // the client port, fixed after the first start
}

// Run starts an in-process server from configuration text, parsed by
// server.ProcessConfigFile exactly as the nats-server binary parses it
// (accounts, authorization, auth_callout, …). Whatever the text says,
// the client listener is moved to a free port on 127.0.0.1, the monitor,
// cluster, gateway and leaf listeners are left as configured, JetStream is
// enabled with its store in t.TempDir(), and the server is stopped in
// t.Cleanup. A config error fails the test.
func Run(t testing.TB, conf string) *Server {
	t.Helper()
	s := &Server{t: t, confPath: WriteConfig(t, conf), storeDir: t.TempDir(), logs: newLogRing(500)}
	s.startOrFatal()
	t.Cleanup(s.cleanup)
	return s
}

// RunOptions starts an in-process server from opts like [Run] does: the
// client port becomes a free loopback port unless opts.Port is already
// set to a positive number, JetStream is enabled with its store in
// t.TempDir() unless opts.StoreDir is set, and the server is stopped in
// t.Cleanup. opts is copied; the caller may not change it afterwards.
// Accounts built in code still need JetStream enabled on them after start
// (acc.EnableJetStream) unless their options say so.
func RunOptions(t testing.TB, opts *server.Options) *Server {
	t.Helper()
	o := opts.Clone()
	dir := o.StoreDir
	if dir == "" {
		dir = t.TempDir()
	}
	s := &Server{t: t, template: o, storeDir: dir, logs: newLogRing(500)}
	if o.Port > 0 {
		s.port = o.Port
	}
	s.startOrFatal()
	t.Cleanup(s.cleanup)
	return s
}

func (s *Server) options() (*server.Options, error) {
	var o *server.Options
	if s.confPath != "" {
		var err error
		if o, err = server.ProcessConfigFile(s.confPath); err != nil {
			return nil, fmt.Errorf("natstest: config: %w", err)
		}
	} else {
		o = s.template.Clone()
	}
	o.Host = "127.0.0.1"
	o.Port = -1
	if s.port > 0 {
		o.Port = s.port
	}
	if o.HTTPPort != 0 {
		o.HTTPPort = -1 // a config's monitoring port moves to a free one too
	}
	o.JetStream = true
	o.StoreDir = s.storeDir
	o.NoSigs = true
	o.NoLog = false
	// Stopping goes through lame-duck mode (Shutdown): the listener closes
	// and the clients are closed before the server's system account goes,
	// so a client logging in while a test ends never reaches an auth
	// callout whose server is half shut down (nats-server 2.15 panics
	// there). A negative grace period is nats-server's own way to take a
	// short one; the clients are closed within the duration.
	o.LameDuckGracePeriod = -time.Millisecond
	o.LameDuckDuration = 50 * time.Millisecond
	return o, nil
}

func (s *Server) startOrFatal() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *Server) start() error {
	o, err := s.options()
	if err != nil {
		return err
	}
	srv, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("natstest: new server: %w", err)
	}
	srv.SetLoggerV2(s.logs, false, false, false)
	go srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return fmt.Errorf("natstest: server not ready after %s; its log:\n%s", readyTimeout, s.logs.String())
	}
	port := srv.Addr().(*net.TCPAddr).Port
	s.mu.Lock()
	s.srv = srv
	s.port = port
	s.mu.Unlock()
	return nil
}

// Server returns the running *server.Server (for Connz, Accountz, account
// lookups, …). After [Server.Restart] it is a new value.
func (s *Server) Server() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// ClientURL returns the nats:// URL clients connect to. It stays the same
// across restarts.
func (s *Server) ClientURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.Port()) }

// Port returns the client port.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// StoreDir returns the JetStream store folder.
func (s *Server) StoreDir() string { return s.storeDir }

// ConfigFile returns the path of the configuration file, or "" for a
// server started with [RunOptions].
func (s *Server) ConfigFile() string { return s.confPath }

// Logs returns the server's recent log lines (notices, warnings, errors),
// oldest first. Auth callout denials, for instance, are logged here.
func (s *Server) Logs() []string { return s.logs.Lines() }

// Shutdown stops the server and waits until it has stopped. It is
// idempotent; [Server.Restart] starts it again.
func (s *Server) Shutdown() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.LameDuckShutdown() // returns at once if the server is already stopping
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// Restart stops the server (if running) and starts it again on the same
// port with the same JetStream store, re-reading the configuration file.
// Clients with reconnects enabled reconnect by themselves.
func (s *Server) Restart() {
	s.t.Helper()
	s.Shutdown()
	s.startOrFatal()
}

func (s *Server) cleanup() {
	s.Shutdown()
	if s.t.Failed() {
		s.t.Logf("natstest: nats-server log (last lines):\n%s", s.logs.String())
	}
}

// logRing is a server.Logger keeping the last lines in memory. It never
// calls t.Log, so a late log line cannot panic after the test ended.
type logRing struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func newLogRing(max int) *logRing { return &logRing{max: max} }

func (l *logRing) add(level, format string, v []any) {
	line := time.Now().Format("15:04:05.000") + " " + level + " " + fmt.Sprintf(format, v...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) >= l.max {
		l.lines = append(l.lines[:0], l.lines[len(l.lines)-l.max+1:]...)
	}
	l.lines = append(l.lines, line)
}

func (l *logRing) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

func (l *logRing) String() string { return strings.Join(l.Lines(), "\n") }

func (l *logRing) Noticef(format string, v ...any) { l.add("[INF]", format, v) }
func (l *logRing) Warnf(format string, v ...any)   { l.add("[WRN]", format, v) }
func (l *logRing) Fatalf(format string, v ...any)  { l.add("[FTL]", format, v) }
func (l *logRing) Errorf(format string, v ...any)  { l.add("[ERR]", format, v) }
func (l *logRing) Debugf(format string, v ...any)  { l.add("[DBG]", format, v) }
func (l *logRing) Tracef(format string, v ...any)  { l.add("[TRC]", format, v) }
