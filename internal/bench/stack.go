package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/nats-io/nkeys"
)

// Domain is the handle domain of a stack the bench starts itself.
const Domain = "kez.test"

// module is the module path ModuleDir must hold.
const module = "github.com/kez-lat/kez-chat"

// StackConfig shapes a stack the bench starts itself.
type StackConfig struct {
	// Dir holds everything (keys, databases, the JetStream store, logs,
	// built binaries). Required.
	Dir string
	// NATSServer is a nats-server binary. Empty: the one "go tool
	// nats-server" runs (the version pinned in go.mod), built if needed.
	NATSServer string
	// ChatServer is a kez-chat-server binary. Empty: built from
	// ./cmd/kez-chat-server in ModuleDir.
	ChatServer string
	// ModuleDir is the kez-chat module's folder, for building what is not
	// given. Empty: found from the working folder upwards.
	ModuleDir string
	// NATSProfPort, if set, serves nats-server's pprof endpoints on this
	// loopback port (nats.conf prof_port), for profiling the broker's side.
	NATSProfPort int
	// Progress is told what is happening; nil: nothing.
	Progress func(string)
}

// Stack is a running deployment the bench measures: NATS, a sig-server and
// a chat-server. A stack the bench started itself runs NATS and the
// chat-server as separate processes (so their CPU and memory are theirs)
// and the sig-server inside the bench (it only serves registrations).
type Stack struct {
	NATSURL      string
	ServerURL    string // the chat-server (KEZ_SERVER)
	SigServerURL string // KEZ_SIG_SERVER
	Domain       string

	// PlainNkey is a user listed in nats.conf (and in the callout's
	// auth_users), the baseline of a login without the callout. nil
	// when unknown (an external stack without Config.PlainNkeySeed).
	PlainNkey nkeys.KeyPair
	// ChatServerPID and NATSPID are the process IDs of the chat-server and
	// of NATS, 0 when unknown.
	ChatServerPID, NATSPID int
	// External is set for a stack the bench did not start.
	External bool

	procs  []*proc
	cancel context.CancelFunc
	served chan struct{}
	chains *sqlitestore.Store
	logf   *os.File
}

// ExternalStack describes a running deployment the bench does not own.
func ExternalStack(natsURL, serverURL, sigServerURL, domain string) *Stack {
	return &Stack{NATSURL: natsURL, ServerURL: serverURL, SigServerURL: sigServerURL, Domain: domain, External: true}
}

// StartStack starts NATS (as a process, configured with the chat-server's
// callout plus one plain nkey user), a sig-server (in this process) and a
// chat-server (the kez-chat-server binary, as a process), and returns once
// the chat-server is ready. On error everything started is stopped.
func StartStack(ctx context.Context, cfg StackConfig) (s *Stack, err error) {
	if cfg.Dir == "" {
		return nil, errors.New("bench: StackConfig.Dir is required")
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o700); err != nil {
		return nil, err
	}
	s = &Stack{Domain: Domain}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.logf, err = os.Create(filepath.Join(dir, "servers.log")); err != nil {
		return nil, err
	}

	natsBin, chatBin := cfg.NATSServer, cfg.ChatServer
	if natsBin == "" || chatBin == "" {
		mod := cfg.ModuleDir
		if mod == "" {
			if mod, err = findModule(); err != nil {
				return nil, err
			}
		}
		if natsBin == "" {
			progress("building nats-server (go tool nats-server)")
			if natsBin, err = goToolBinary(ctx, mod, "nats-server"); err != nil {
				return nil, err
			}
		}
		if chatBin == "" {
			progress("building kez-chat-server")
			chatBin = filepath.Join(dir, "bin", "kez-chat-server")
			if err := goBuild(ctx, mod, chatBin, "./cmd/kez-chat-server"); err != nil {
				return nil, err
			}
		}
	}

	// NATS, with the callout snippet for the chat-server's keys and one
	// plain nkey user in the chat account that bypasses the callout.
	progress("starting nats-server")
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	keysDir := filepath.Join(dir, "keys")
	listen, monitor := "127.0.0.1:"+strconv.Itoa(ports[0]), "127.0.0.1:"+strconv.Itoa(ports[1])
	conf, err := chatserver.NATSConfig(keysDir, callout.ConfigOptions{
		Standalone: true, Listen: listen, HTTPListen: monitor,
		StoreDir: filepath.Join(dir, "jetstream"), ServerName: "kez-bench",
	})
	if err != nil {
		return nil, err
	}
	if s.PlainNkey, err = nkeys.CreateUser(); err != nil {
		return nil, err
	}
	plain, _ := s.PlainNkey.PublicKey()
	if conf, err = addPlainUser(conf, plain); err != nil {
		return nil, err
	}
	if cfg.NATSProfPort != 0 {
		conf += "prof_port: " + strconv.Itoa(cfg.NATSProfPort) + "\n"
	}
	confPath := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	np, err := startProc(natsBin, []string{"-c", confPath}, filepath.Join(dir, "nats-server.log"), nil)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, np)
	s.NATSPID = np.cmd.Process.Pid
	s.NATSURL = "nats://" + listen
	if err := waitHTTP(ctx, "http://"+monitor+"/healthz", np, time.Minute); err != nil {
		return nil, fmt.Errorf("bench: nats-server did not become healthy: %w", err)
	}

	// The sig-server, in this process.
	serveCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if s.chains, err = sqlitestore.Open(filepath.Join(dir, "sig.db")); err != nil {
		return nil, err
	}
	sigLog := slog.New(slog.NewTextHandler(s.logf, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.SigServerURL = "http://" + ln.Addr().String()
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		// Limits off: the benchmark's users all come from loopback.
		h := httpserve.Wrap(sigchain.NewHandler(s.chains, sigchain.WithLogger(sigLog), sigchain.WithLimits(sigchain.NoLimits())), httpserve.Options{Ready: s.chains.Ping, Logger: sigLog})
		httpserve.Serve(serveCtx, ln, h, sigLog)
	}()

	// The chat-server, as a process.
	progress("starting kez-chat-server")
	chatListen := "127.0.0.1:" + strconv.Itoa(ports[2])
	cp, err := startProc(chatBin, []string{
		"--listen", chatListen, "--domain", Domain, "--sig-server", s.SigServerURL,
		"--nats", s.NATSURL, "--db", filepath.Join(dir, "chat.db"), "--keys", keysDir,
		"--log-level", "warn", "--claims-per-ip", "off", "--claims-per-key", "off", "--reads-per-ip", "off",
		// The bench's few users send far more than people do: the per-user
		// rate limits and the unread cap are off, the gate's path is not.
		"--send-rate", "-1", "--send-bytes-rate", "-1", "--recipient-rate", "-1", "--recipient-bytes-rate", "-1",
		"--pull-rate", "-1", "--max-unread-per-inbox", "1000000000", "--max-unread-per-sender", "-1", "--inbox-max-bytes", strconv.Itoa(8 << 30),
	}, filepath.Join(dir, "chat-server.log"), nil)
	if err != nil {
		return nil, err
	}
	s.procs = append(s.procs, cp)
	s.ChatServerPID = cp.cmd.Process.Pid
	s.ServerURL = "http://" + chatListen
	if err := waitHTTP(ctx, s.ServerURL+"/readyz", cp, time.Minute); err != nil {
		return nil, fmt.Errorf("bench: kez-chat-server did not become ready: %w", err)
	}
	return s, nil
}

// addPlainUser adds a user with nkey pub to the user account of a config
// NATSConfig rendered (where KEZ users land), and to the callout's
// auth_users so that it logs in without the callout.
func addPlainUser(conf, pub string) (string, error) {
	users := "  " + callout.DefaultUserAccount + " {\n"
	if !strings.Contains(conf, users) || !strings.Contains(conf, "auth_users: [ ") {
		return "", errors.New("bench: the NATS config has an unexpected form; cannot add the plain nkey user")
	}
	conf = strings.Replace(conf, users, users+"    users: [ { nkey: "+pub+" } ]\n", 1)
	conf = strings.Replace(conf, "auth_users: [ ", "auth_users: [ "+pub+", ", 1)
	return conf, nil
}

// Close stops everything the stack started. It is safe to call more than
// once and on an external stack (which it leaves running).
func (s *Stack) Close() error {
	if s == nil {
		return nil
	}
	var errs []error
	for i := len(s.procs) - 1; i >= 0; i-- {
		if err := s.procs[i].stop(); err != nil {
			errs = append(errs, err)
		}
	}
	s.procs = nil
	if s.cancel != nil {
		s.cancel()
		<-s.served
		s.cancel = nil
	}
	if s.chains != nil {
		errs = append(errs, s.chains.Close())
		s.chains = nil
	}
	if s.logf != nil {
		s.logf.Close()
		s.logf = nil
	}
	return errors.Join(errs...)
}

// proc is a child process with its output in a log file.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(bin string, args []string, logPath string, env []string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if env != nil {
		cmd.Env = env
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: starting %s: %w", bin, err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// stop sends SIGTERM, waits up to 15 s, then kills the process group.
func (p *proc) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(15 * time.Second):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
	return fmt.Errorf("bench: %s did not stop within 15 s and was killed", filepath.Base(p.cmd.Path))
}

// tail returns the end of the process's log.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// waitHTTP polls url until it answers 200, the process exits or the time
// is up. Polling is the only way to learn when another process is ready.
func waitHTTP(ctx context.Context, url string, p *proc, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v); its log ends:\n%s", filepath.Base(p.cmd.Path), p.err, p.tail())
		case <-ctx.Done():
			return fmt.Errorf("%s: %w; its log ends:\n%s", url, ctx.Err(), p.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// findModule returns the kez-chat module folder containing the working
// folder.
func findModule() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			sc.Scan()
			f.Close()
			if strings.TrimSpace(sc.Text()) == "module "+module {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("bench: run inside the kez-chat module (it builds nats-server and kez-chat-server from it), or pass both binaries")
		}
		dir = parent
	}
}

// goToolBinary returns the binary "go tool NAME" runs, building it into
// the Go build cache if it is not there yet.
func goToolBinary(ctx context.Context, moduleDir, name string) (string, error) {
	for range 2 {
		cmd := exec.CommandContext(ctx, "go", "tool", "-n", name)
		cmd.Dir = moduleDir
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("bench: go tool -n %s: %w", name, err)
		}
		path := strings.TrimSpace(string(out))
		if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
			return path, nil
		}
		// Not built yet: running it once builds and caches it.
		run := exec.CommandContext(ctx, "go", "tool", name, "--version")
		run.Dir = moduleDir
		if out, err := run.CombinedOutput(); err != nil {
			return "", fmt.Errorf("bench: go tool %s --version: %w\n%s", name, err, out)
		}
	}
	return "", fmt.Errorf("bench: go tool %s ran but left no binary in the build cache; pass --nats-server-bin BIN", name)
}

func goBuild(ctx context.Context, moduleDir, out, pkg string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = moduleDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("bench: go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
