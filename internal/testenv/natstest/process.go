package natstest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EnvServerBinary names an environment variable that, when set, is the
// path of a nats-server binary to use instead of building one.
const EnvServerBinary = "NATSTEST_SERVER_BIN"

// Process is a nats-server running as a separate process, started by
// [StartProcess]. Its methods are safe for concurrent use; the process is
// stopped in t.Cleanup.
type Process struct {
	t           testing.TB
	bin         string
	confPath    string
	storeDir    string
	logPath     string
	port        int
	monitorPort int

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartProcess writes conf to a file and runs the nats-server binary with
// it as `nats-server -c FILE -a 127.0.0.1 -p PORT -m MONITOR -js -sd DIR`:
// the command-line flags override the file, so the client and monitor
// ports are free loopback ports and the JetStream store is in t.TempDir().
// It returns once /healthz on the monitor port answers 200 (JetStream
// ready), and stops the process in t.Cleanup. The server's output goes to
// a log file that is printed when the test fails.
func StartProcess(t testing.TB, conf string) *Process {
	t.Helper()
	dir := t.TempDir()
	p := &Process{
		t:           t,
		bin:         ServerBinary(t),
		confPath:    WriteConfig(t, conf),
		storeDir:    filepath.Join(dir, "store"),
		logPath:     filepath.Join(dir, "nats-server.log"),
		port:        FreePort(t),
		monitorPort: FreePort(t),
	}
	t.Cleanup(p.cleanup)
	p.startOrFatal()
	return p
}

// ClientURL returns the nats:// URL clients connect to; it stays the same
// across restarts.
func (p *Process) ClientURL() string { return fmt.Sprintf("nats://127.0.0.1:%d", p.port) }

// Port returns the client port.
func (p *Process) Port() int { return p.port }

// MonitorPort returns the HTTP monitoring port (/healthz, /varz, /connz…).
func (p *Process) MonitorPort() int { return p.monitorPort }

// MonitorURL returns the base http:// URL of the monitoring endpoint.
func (p *Process) MonitorURL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.monitorPort) }

// StoreDir returns the JetStream store folder.
func (p *Process) StoreDir() string { return p.storeDir }

// ConfigFile returns the path of the configuration file.
func (p *Process) ConfigFile() string { return p.confPath }

// Log returns everything the server has written to stdout and stderr.
func (p *Process) Log() string {
	b, _ := os.ReadFile(p.logPath)
	return string(b)
}

func (p *Process) startOrFatal() {
	p.t.Helper()
	if err := p.start(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *Process) start() error {
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("natstest: server log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(p.bin,
		"-c", p.confPath,
		"-a", "127.0.0.1",
		"-p", strconv.Itoa(p.port),
		"-m", strconv.Itoa(p.monitorPort),
		"-js", "-sd", p.storeDir,
	)
	cmd.Stdout = logf
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("natstest: starting %s: %w", p.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
	if err := waitHealthy(p.MonitorURL()+"/healthz", done, readyTimeout); err != nil {
		p.stop(false)
		return fmt.Errorf("natstest: nats-server on port %d: %w; its log:\n%s", p.port, err, p.Log())
	}
	return nil
}

// waitHealthy polls url until it answers 200, the process exits (done), or
// the deadline passes. Polling is the only way to learn when an external
// process is ready.
func waitHealthy(url string, done <-chan struct{}, timeout time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not healthy after %s", timeout)
		}
		select {
		case <-done:
			return errors.New("the process exited while starting")
		case <-tick.C:
		}
	}
}

// stop ends the process: with SIGKILL when kill is set, otherwise with an
// interrupt (graceful shutdown), escalating to SIGKILL after 10 s.
func (p *Process) stop(kill bool) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd, p.done = nil, nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	if kill || cmd.Process.Signal(os.Interrupt) != nil {
		_ = cmd.Process.Kill()
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it to
// exit. [Process.Restart] starts it again.
func (p *Process) Kill() { p.stop(true) }

// Stop shuts the server down gracefully and waits for it to exit. It is
// idempotent.
func (p *Process) Stop() { p.stop(false) }

// Restart stops the server if it runs and starts it again with the same
// configuration file, ports and JetStream store.
func (p *Process) Restart() {
	p.t.Helper()
	p.Stop()
	p.startOrFatal()
}

func (p *Process) cleanup() {
	p.Stop()
	if p.t.Failed() {
		p.t.Logf("natstest: nats-server log:\n%s", tail(p.Log(), 8000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// ServerBinary returns the path of a nats-server binary of the version in
// go.mod, building it on first use with `go build` into the user cache
// folder (kez-chat/natstest/nats-server-v<version>-<go version>-<os>-<arch>),
// so later test runs reuse it. The build goes to a temporary file that is
// renamed into place, so test binaries building at the same time do not
// clash. [EnvServerBinary] overrides the path.
func ServerBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() { binPath, binErr = buildServer() })
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

func buildServer() (string, error) {
	if p := os.Getenv(EnvServerBinary); p != "" {
		return p, nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	dir := filepath.Join(cache, "kez-chat", "natstest")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("natstest: cache folder: %w", err)
	}
	name := fmt.Sprintf("nats-server-v%s-%s-%s-%s", server.VERSION, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if runtime.GOOS == "windows" {
		name += ".exe"
	}
	final := filepath.Join(dir, name)
	if fi, err := os.Stat(final); err == nil && fi.Mode().IsRegular() {
		return final, nil
	}
	tmp, err := os.CreateTemp(dir, name+".tmp*")
	if err != nil {
		return "", fmt.Errorf("natstest: temporary binary: %w", err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name()) // a no-op after the rename
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", tmp.Name(), "github.com/nats-io/nats-server/v2")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("natstest: building nats-server: %w\n%s", err, out.String())
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", fmt.Errorf("natstest: installing nats-server binary: %w", err)
	}
	return final, nil
}
