// Command kez-bench measures KEZ against its physical limits and prints
// each figure beside its baseline, measured in the same run: sealed
// messaging (format v1, and v2 in established sessions) against the
// crypto floor and raw JetStream, a session handshake's CPU, messages from
// a person with several devices to another against one device to one, the
// time to link a device with its history and from a revocation to the
// revoked device's refusal, callout logins
// against plain nkey logins, registered users' logins during a bogus-login
// flood against the same logins without it, sigchain verification against raw
// ed25519.Verify, the transparency log (a head's inclusion proof against
// the chain's verification, a sig-server's appends with its log against
// the same without, an audit of the log against fetching it unchecked),
// verified P2P fetches against a raw libp2p stream, raw
// TCP and croc, and the chat-server's memory with 1,000 users logged in.
//
//	go run ./cmd/kez-bench            # full run, a few minutes on 2 vCPUs
//	go run ./cmd/kez-bench --quick    # about a minute
//	go run ./cmd/kez-bench --json     # the report as JSON on stdout
//
// Unless pointed at a running deployment (--nats, --server, --sig-server),
// it starts its own on loopback: nats-server (go tool nats-server) as a
// process configured with the chat-server's auth callout plus one plain
// nkey user, kez-chat-server (built from ./cmd/kez-chat-server) as a
// process, and a sig-server inside kez-bench. Run it from inside the
// module. docs/performance.md describes the method and the latest table.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/kez-lat/kez-chat/internal/bench"
	"k8s.io/klog/v2"
)

func main() {
	// The log group's sig-servers keep tessera logs, which log through
	// klog; the report is the output.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kez-bench:", err)
	}
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("kez-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := bench.Default()
	quick := fs.Bool("quick", false, "smaller sizes: finishes in about a minute")
	asJSON := fs.Bool("json", false, "print the report as JSON instead of a table")
	only := fs.String("only", "", "comma-separated groups to run: "+strings.Join(bench.Groups, ","))
	failOnTarget := fs.Bool("fail-on-target", false, "exit 3 when a figure misses its target")

	natsURL := fs.String("nats", "", "measure this running NATS instead of starting a stack (needs --server and --sig-server)")
	server := fs.String("server", "", "the running stack's chat-server base URL")
	sigServer := fs.String("sig-server", "", "the running stack's sig-server base URL")
	domain := fs.String("domain", bench.Domain, "the running stack's handle domain")
	plainSeed := fs.String("plain-nkey-seed", "", "file holding the seed (SU…) of a user listed in the running NATS's config and auth_users: the connects baseline")
	chatPID := fs.Int("chat-server-pid", 0, "process ID of the running chat-server, for the memory figure")
	dir := fs.String("dir", "", "folder for the stack's state (default: a new temporary folder, removed at the end)")
	natsBin := fs.String("nats-server-bin", "", "nats-server binary to run (default: the one go tool nats-server runs)")
	chatBin := fs.String("chat-server-bin", "", "kez-chat-server binary to run (default: built from ./cmd/kez-chat-server)")

	senders := fs.Int("senders", def.Senders, "messaging: senders")
	receivers := fs.Int("receivers", def.Receivers, "messaging: receivers")
	sizes := fs.String("sizes", "256,4096", "messaging: message body sizes in bytes, comma-separated")
	msgs := fs.Int("msgs", 0, "messaging: messages per size and kind (default 30000; --quick 4000)")
	latMsgs := fs.Int("latency-msgs", 0, "messaging: one-at-a-time messages per size and kind (default 400; --quick 100)")
	handshakes := fs.Int("handshakes", 0, "messaging: session handshakes timed, and as many of each comparison (default 400; --quick 100)")
	workers := fs.Int("workers", def.ConnectWorkers, "logins at once")
	duration := fs.Duration("duration", 0, "each timed round of connects and sigchains (default 2s; --quick 500ms)")
	rounds := fs.Int("rounds", 0, "rounds alternating figure and baseline, each figure the median (default 5; --quick 3)")
	floodRate := fs.Float64("flood-rate", def.FloodRate, "connects: bogus logins/s offered during the login flood")
	floodConns := fs.Int("flood-conns", def.FloodConns, "connects: the login flood's connections at once")
	floodDur := fs.Duration("flood-duration", 0, "connects: how long the login flood, and the same logins without it, last (default 10s; --quick 4s)")
	floodUsers := fs.Int("flood-users", def.FloodUsers, "connects: registered users logging in during the flood")
	links := fs.Int("chain-links", def.ChainLinks, "sigchains: links in the verified chain (and in the chain whose head proof log checks)")
	logEntries := fs.Int("log-entries", def.LogEntries, "log: entries in the log the head proof is checked against")
	logAppenders := fs.Int("log-appenders", def.LogAppenders, "log: appenders at once, each on its own chain")
	logLinks := fs.Int("log-links", 0, "log: links each appender appends per round (default 4; --quick 2)")
	logLatency := fs.Int("log-latency-appends", 0, "log: appends timed one at a time, with the log and without (default 10; --quick 5)")
	logInterval := fs.Duration("log-checkpoint-interval", 0, "log: the log's checkpoint interval (default: the sig-server's, 100ms)")
	logBatchAge := fs.Duration("log-batch-age", 0, "log: how long an entry waits to be sequenced with others (default: the sig-server's, 25ms)")
	blobMiB := fs.Int("blob-mib", 0, "files: blob size in MiB (default 256; --quick 64)")
	sourcesMiB := fs.Int("sources-mib", 0, "sources: blob size in MiB (default 64)")
	sourcesRate := fs.Float64("sources-rate", 0, "sources: each source's upload cap in MB/s (default 20)")
	users := fs.Int("users", def.Users, "memory: users logged in at once")
	senderDevs := fs.Int("sender-devices", def.SenderDevices, "devices: the sending person's devices")
	recipientDevs := fs.Int("recipient-devices", def.RecipientDevices, "devices: the recipient person's devices")
	deviceMsgs := fs.Int("device-msgs", 0, "devices: logical messages of the fan-out, and as many of its baseline (default 3000; --quick 600)")
	historyMsgs := fs.Int("history-msgs", 0, "devices: messages of history a linked device receives (default 10000; --quick 2000)")
	revocations := fs.Int("revocations", 0, "devices: revocations timed (default 5; --quick 3)")
	revokeWait := fs.Duration("revoke-wait", def.RevokeWait, "devices: how long a revoked device may keep its connection or logins before the run fails")
	groupSize := fs.Int("group-size", def.GroupSize, "groups: members (1 device each) a measured group message goes to")
	groupMsgs := fs.Int("group-msgs", 0, "groups: group messages, and as many rounds of one-to-one sends (default 50; --quick 15)")
	rekeyMembers := fs.Int("rekey-members", def.RekeyMembers, "groups: the group's size (owner included) when a member is removed and the sender rekeys")
	croc := fs.String("croc", "", `croc binary (default: croc on PATH); "off" skips croc`)
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of kez-bench itself to this file")
	natsProf := fs.Int("nats-prof-port", 0, "serve nats-server's pprof endpoints on this port (own stack only)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, nil
		}
		return 2, err
	}
	if fs.NArg() > 0 {
		return 2, fmt.Errorf("unexpected arguments %q; see --help", fs.Args())
	}

	cfg := def
	if *quick {
		cfg = bench.Quick()
	}
	cfg.Senders, cfg.Receivers, cfg.ConnectWorkers, cfg.ChainLinks, cfg.Users = *senders, *receivers, *workers, *links, *users
	setIf(&cfg.Messages, *msgs)
	setIf(&cfg.LatencyMessages, *latMsgs)
	setIf(&cfg.Handshakes, *handshakes)
	setIf(&cfg.Rounds, *rounds)
	cfg.SenderDevices, cfg.RecipientDevices, cfg.RevokeWait = *senderDevs, *recipientDevs, *revokeWait
	setIf(&cfg.DeviceMessages, *deviceMsgs)
	setIf(&cfg.HistoryMessages, *historyMsgs)
	setIf(&cfg.Revocations, *revocations)
	cfg.GroupSize, cfg.RekeyMembers = *groupSize, *rekeyMembers
	cfg.LogEntries, cfg.LogAppenders = *logEntries, *logAppenders
	setIf(&cfg.LogLinks, *logLinks)
	setIf(&cfg.LogLatencyAppends, *logLatency)
	cfg.LogCheckpointInterval, cfg.LogBatchMaxAge = *logInterval, *logBatchAge
	setIf(&cfg.GroupMessages, *groupMsgs)
	if *duration > 0 {
		cfg.Duration = *duration
	}
	cfg.FloodRate, cfg.FloodConns, cfg.FloodUsers = *floodRate, *floodConns, *floodUsers
	if *floodDur > 0 {
		cfg.FloodDuration = *floodDur
	}
	if *sourcesMiB > 0 {
		cfg.SourcesBlob = int64(*sourcesMiB) << 20
	}
	if *sourcesRate > 0 {
		cfg.SourcesRate = int64(*sourcesRate * 1e6)
	}
	if *blobMiB > 0 {
		cfg.BlobSize = int64(*blobMiB) << 20
	}
	cfg.Sizes = nil
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			return 2, fmt.Errorf("--sizes: %q is not a number of bytes", s)
		}
		cfg.Sizes = append(cfg.Sizes, n)
	}
	if *only != "" {
		cfg.Only = strings.Split(*only, ",")
	}
	switch *croc {
	case "off":
		cfg.CrocSkip = "turned off (--croc off)"
	case "":
		cfg.Croc, cfg.CrocSkip = bench.FindCroc()
	default:
		cfg.Croc = *croc
	}
	cfg.Progress = func(s string) { fmt.Fprintln(stderr, "kez-bench:", s) }

	var st *bench.Stack
	if *natsURL != "" {
		if *server == "" || *sigServer == "" {
			return 2, errors.New("--nats needs --server and --sig-server too (the stack to register users at)")
		}
		st = bench.ExternalStack(*natsURL, *server, *sigServer, *domain)
		st.ChatServerPID = *chatPID
		if *plainSeed != "" {
			b, err := os.ReadFile(*plainSeed)
			if err != nil {
				return 2, err
			}
			if st.PlainNkey, err = bench.PlainNkeyFromSeed(strings.TrimSpace(string(b))); err != nil {
				return 2, err
			}
		}
	} else if needsStack(cfg) {
		d := *dir
		if d == "" {
			var err error
			if d, err = bench.TempDir(); err != nil {
				return 1, err
			}
			defer os.RemoveAll(d)
		}
		var err error
		st, err = bench.StartStack(ctx, bench.StackConfig{Dir: d, NATSServer: *natsBin, ChatServer: *chatBin, NATSProfPort: *natsProf, Progress: cfg.Progress})
		if err != nil {
			return 1, err
		}
		defer st.Close()
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return 1, err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return 1, err
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(ctx, st, cfg)
	if rep != nil {
		var werr error
		if *asJSON {
			werr = rep.WriteJSON(stdout)
		} else {
			werr = rep.WriteTable(stdout)
		}
		if err == nil {
			err = werr
		}
	}
	if err != nil {
		return 1, err
	}
	if *failOnTarget && len(rep.Failed()) > 0 {
		return 3, fmt.Errorf("%d figures miss their targets", len(rep.Failed()))
	}
	return 0, nil
}

func setIf(dst *int, v int) {
	if v > 0 {
		*dst = v
	}
}

func needsStack(cfg bench.Config) bool {
	if len(cfg.Only) == 0 {
		return true
	}
	for _, g := range cfg.Only {
		if g == "messaging" || g == "devices" || g == "connects" || g == "memory" || g == "groups" {
			return true
		}
	}
	return false
}
