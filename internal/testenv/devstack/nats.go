package devstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// errInProcess: KillNATS on NATS running in this process.
var errInProcess = errors.New("devstack: NATS runs in this process")

// startNATS runs NATS with DIR/nats.conf, on the kept ports (or free
// ones, which it records in s.ports), with its JetStream store in DIR,
// and returns once it takes clients. The caller holds s.mu or is Start.
func (s *Stack) startNATS(ctx context.Context) error {
	if s.cfg.NATSServer == "" {
		return s.startNATSInProcess(ctx)
	}
	return s.startNATSProcess(ctx)
}

// startNATSInProcess runs nats-server's server package in this process.
// The configuration file is parsed exactly as the nats-server binary
// parses it; listen addresses and the store folder are set on top.
func (s *Stack) startNATSInProcess(ctx context.Context) error {
	o, err := server.ProcessConfigFile(s.natsConf)
	if err != nil {
		return fmt.Errorf("devstack: NATS configuration: %w", err)
	}
	o.Host, o.Port = "127.0.0.1", s.ports.NATS
	if o.Port == 0 {
		o.Port = server.RANDOM_PORT
	}
	o.HTTPHost, o.HTTPPort = "127.0.0.1", s.ports.NATSMonitor
	if o.HTTPPort == 0 {
		o.HTTPPort = server.RANDOM_PORT
	}
	o.JetStream = true
	o.StoreDir = filepath.Join(s.Dir, NATSStore)
	o.NoSigs = true // the program decides what a signal means
	srv, err := server.NewServer(o)
	if err != nil {
		return fmt.Errorf("devstack: NATS: %w", err)
	}
	log, err := openNATSLog(filepath.Join(s.Dir, NATSLogFile))
	if err != nil {
		return err
	}
	srv.SetLoggerV2(log, false, false, false)
	go srv.Start()
	deadline := time.Now().Add(natsReadyTimeout)
	for !srv.ReadyForConnections(pollInterval) {
		fatal := log.fatal()
		if fatal == "" && ctx.Err() == nil && time.Now().Before(deadline) {
			continue
		}
		srv.Shutdown()
		srv.WaitForShutdown()
		log.close()
		if fatal != "" {
			return fmt.Errorf("devstack: NATS failed: %s", fatal)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("devstack: starting NATS: %w", ctx.Err())
		}
		return fmt.Errorf("devstack: NATS did not take clients within %s; the end of %s:\n%s", natsReadyTimeout, NATSLogFile, tailFile(filepath.Join(s.Dir, NATSLogFile), 4000))
	}
	s.ports.NATS = srv.Addr().(*net.TCPAddr).Port
	s.ports.NATSMonitor = srv.MonitorAddr().Port
	done := make(chan struct{})
	go func() {
		srv.WaitForShutdown()
		log.close()
		close(done)
	}()
	s.natsSrv, s.natsDone = srv, done
	s.NATSCommand = "in this process, nats-server v" + server.VERSION
	return nil
}

// startNATSProcess runs the nats-server binary Config.NATSServer with the
// configuration file, overriding listen addresses and the store folder on
// its command line, and waits until its /healthz answers.
func (s *Stack) startNATSProcess(ctx context.Context) error {
	if err := pick(&s.ports.NATS, &s.ports.NATSMonitor); err != nil {
		return err
	}
	args := []string{
		"-c", s.natsConf,
		"-a", "127.0.0.1", "-p", strconv.Itoa(s.ports.NATS), "-m", strconv.Itoa(s.ports.NATSMonitor),
		"-js", "-sd", filepath.Join(s.Dir, NATSStore),
	}
	p, err := startProc("NATS", s.cfg.NATSServer, args, nil, filepath.Join(s.Dir, NATSLogFile))
	if err != nil {
		return err
	}
	s.natsProc, s.natsDone = p, p.done
	s.NATSCommand = s.cfg.NATSServer + " -c " + s.natsConf
	ctx, cancel := context.WithTimeout(ctx, natsReadyTimeout)
	defer cancel()
	if err := p.waitHTTP(ctx, "http://"+loopback(s.ports.NATSMonitor)+"/healthz"); err != nil {
		p.stop()
		s.natsProc = nil
		return err
	}
	return nil
}

// stopNATS stops NATS gracefully (a process by force after stopTimeout)
// and waits until it is gone. The caller holds s.mu.
func (s *Stack) stopNATS() error {
	switch {
	case s.natsSrv != nil:
		s.natsSrv.Shutdown()
		s.natsSrv.WaitForShutdown()
		s.natsSrv = nil
	case s.natsProc != nil:
		err := s.natsProc.stop()
		s.natsProc = nil
		return err
	}
	return nil
}

// StopNATS stops NATS gracefully and waits until it is gone, leaving the
// sig-server and chat-server running (the chat-server is then not ready).
// It is idempotent; [Stack.StartNATS] starts NATS again.
func (s *Stack) StopNATS() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopNATS()
}

// KillNATS ends a NATS process with SIGKILL, as a crash would, and waits
// for it to exit. NATS running in this process cannot be killed: that is
// an error.
func (s *Stack) KillNATS() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.natsSrv != nil {
		return fmt.Errorf("%w; it cannot be killed", errInProcess)
	}
	if s.natsProc != nil {
		s.natsProc.kill()
		s.natsProc = nil
	}
	return nil
}

// StartNATS starts NATS again after [Stack.StopNATS] or [Stack.KillNATS],
// with the same configuration file (read again), ports and JetStream
// store, and returns once it takes clients. Clients with reconnects
// enabled come back by themselves; [Stack.WaitReady] waits for the
// chat-server. Starting a running NATS is an error.
func (s *Stack) StartNATS(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.natsSrv != nil || s.natsProc != nil {
		return errors.New("devstack: NATS is running")
	}
	return s.startNATS(ctx)
}

// NATS returns the NATS server running in this process (for Connz,
// account lookups…), or nil when NATS runs as a process or is stopped.
// After [Stack.StartNATS] it is a new value.
func (s *Stack) NATS() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.natsSrv
}

// NATSPID returns the process ID of NATS running as a process, or 0.
func (s *Stack) NATSPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.natsProc == nil {
		return 0
	}
	return s.natsProc.pid()
}

// NATSExited is closed when the NATS started last exits: on its own, or
// by StopNATS, KillNATS or Close.
func (s *Stack) NATSExited() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.natsDone
}

// natsLog is the server.Logger of NATS in this process: it appends lines
// to DIR/nats-server.log as the binary would, and never exits the program
// (nats-server's own logger does on Fatalf); the first fatal message is
// kept for Start to report.
type natsLog struct {
	mu       sync.Mutex
	f        *os.File // nil once closed
	firstFtl string
}

func openNATSLog(path string) (*natsLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("devstack: NATS log: %w", err)
	}
	return &natsLog{f: f}, nil
}

func (l *natsLog) logf(level, format string, v []any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	defer l.mu.Unlock()
	if level == "[FTL]" && l.firstFtl == "" {
		l.firstFtl = msg
	}
	if l.f != nil {
		fmt.Fprintf(l.f, "%s %s %s\n", time.Now().Format("2006/01/02 15:04:05.000000"), level, msg)
	}
}

func (l *natsLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.firstFtl
}

func (l *natsLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

func (l *natsLog) Noticef(format string, v ...any) { l.logf("[INF]", format, v) }
func (l *natsLog) Warnf(format string, v ...any)   { l.logf("[WRN]", format, v) }
func (l *natsLog) Fatalf(format string, v ...any)  { l.logf("[FTL]", format, v) }
func (l *natsLog) Errorf(format string, v ...any)  { l.logf("[ERR]", format, v) }
func (l *natsLog) Debugf(format string, v ...any)  { l.logf("[DBG]", format, v) }
func (l *natsLog) Tracef(format string, v ...any)  { l.logf("[TRC]", format, v) }
