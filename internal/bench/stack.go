package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nkeys"
)

// Domain is the handle domain of a stack the bench starts itself.
const Domain = devstack.DefaultDomain

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
// a chat-server. A stack the bench started itself (with the devstack
// launcher) runs NATS and the chat-server as separate processes (so their
// CPU and memory are theirs) and the sig-server inside the bench (it only
// serves registrations).
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

	dev *devstack.Stack // the stack the bench started, or nil
}

// ExternalStack describes a running deployment the bench does not own.
func ExternalStack(natsURL, serverURL, sigServerURL, domain string) *Stack {
	return &Stack{NATSURL: natsURL, ServerURL: serverURL, SigServerURL: sigServerURL, Domain: domain, External: true}
}

// StartStack starts NATS (as a process, configured with the chat-server's
// callout plus one plain nkey user), a sig-server (in this process) and a
// chat-server (the kez-chat-server binary, as a process), and returns once
// the chat-server is ready. On error everything started is stopped.
func StartStack(ctx context.Context, cfg StackConfig) (*Stack, error) {
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

	natsBin, chatBin := cfg.NATSServer, cfg.ChatServer
	if natsBin == "" || chatBin == "" {
		mod := cfg.ModuleDir
		if mod == "" {
			if mod, err = devstack.ModuleDir(); err != nil {
				return nil, fmt.Errorf("bench: nats-server and kez-chat-server are built from the module unless both binaries are given: %w", err)
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
			if err := devstack.Build(ctx, mod, filepath.Dir(chatBin), "./cmd/kez-chat-server"); err != nil {
				return nil, err
			}
		}
	}

	s := &Stack{Domain: Domain}
	if s.PlainNkey, err = nkeys.CreateUser(); err != nil {
		return nil, err
	}
	plain, _ := s.PlainNkey.PublicKey()
	s.dev, err = devstack.Start(ctx, devstack.Config{
		Dir:        dir,
		Domain:     Domain,
		NATSServer: natsBin,
		// The callout snippet plus one plain nkey user in the chat account
		// that bypasses the callout.
		EditNATSConfig: func(conf string) (string, error) {
			conf, err := addPlainUser(conf, plain)
			if err != nil {
				return "", err
			}
			conf += "server_name: kez-bench\n"
			if cfg.NATSProfPort != 0 {
				conf += "prof_port: " + strconv.Itoa(cfg.NATSProfPort) + "\n"
			}
			return conf, nil
		},
		// Limits off: the benchmark's users all come from loopback.
		SigOptions: []sigchain.HandlerOption{sigchain.WithLimits(sigchain.NoLimits())},
		ChatServer: chatBin,
		ChatArgs: []string{
			"--log-level", "warn", "--claims-per-ip", "off", "--claims-per-key", "off", "--reads-per-ip", "off",
			"--devices-per-ip", "off", "--devices-per-key", "off",
			// The bench's few users send far more than people do: the per-user
			// rate limits and the unread cap are off, the gate's path is not.
			"--send-rate", "-1", "--copy-rate", "-1", "--send-bytes-rate", "-1", "--recipient-rate", "-1", "--recipient-bytes-rate", "-1",
			"--pull-rate", "-1", "--ack-rate", "-1", "--max-unread-per-inbox", "1000000000", "--max-unread-per-sender", "-1", "--inbox-max-bytes", strconv.Itoa(8 << 30),
		},
		LogLevel: slog.LevelWarn,
		Progress: progress,
	})
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	s.NATSURL, s.ServerURL, s.SigServerURL = s.dev.NATSURL, s.dev.ServerURL, s.dev.SigServerURL
	s.NATSPID, s.ChatServerPID = s.dev.NATSPID(), s.dev.ChatServerPID()
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
	if s == nil || s.dev == nil {
		return nil
	}
	return s.dev.Close()
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
