// Package bench measures KEZ against its physical limits: every figure is
// measured beside its baseline in the same run, on the same machine, so
// the ratio means something on a shared machine whose absolute speed
// drifts.
//
// The figures (docs/performance.md explains each and its target):
//
//   - messaging: N senders → M receivers through the JetStream inbox
//     stream, sealed (chat.Seal, chat.Opener) against the crypto floor
//     (the same seals and opens without any network) and against the same
//     traffic raw; the same traffic in established sessions (format v2,
//     package session) against the same raw rounds, and the sessions'
//     crypto CPU per message; p50/p99 latency of one message at a time;
//     the CPU of a new session's hybrid handshake;
//   - devices: logical messages per second from a person with 3 devices
//     to one with 5 (a copy to each device, sent copies to the sender's
//     other devices) against one device to one device; the time to link a
//     device with 10,000 messages of history, and the transfer's size; the
//     time from a revocation to the revoked device's open connection
//     closed and its next login refused;
//   - connects: logins through the auth callout against plain nkey logins
//     of a key listed in nats.conf; registered users' logins during a
//     flood of bogus logins (1,000/s from 64 connections) against the same
//     logins without it: the share within 2 s, p50 and p99;
//   - sigchains: links verified (parse + sigchain.Verify) against raw
//     ed25519.Verify;
//   - log: the transparency log's inclusion proof a client checks per
//     chain fetch against the chain's own verification; a sig-server's
//     appends with its log against the same without it, and one
//     append's latency; an audit of that log (translog/audit) against
//     fetching its entry bundles unchecked;
//   - files: a verified P2P fetch (files.Node) against a raw libp2p stream
//     and raw TCP, a private (encrypted) fetch, and croc;
//   - sources: a fetch from 3 sources each capped at the same upload rate
//     against the same fetch from one of them;
//   - memory: the chat-server's RSS with 1,000 users logged in;
//   - groups: a 256 B message to a group of 100 (one sender-key envelope,
//     one multi-recipient send) against the same message sent one to one
//     to each member; the rekey of a group of 1,000 after a removal (time
//     and bytes of one sender's redistribution); the time for a new member
//     to read.
//
// Most programs call [StartStack] (or [ExternalStack]) and [Run], then
// print the [Report]; cmd/kez-bench is that program:
//
//	st, err := bench.StartStack(ctx, bench.StackConfig{Dir: dir})
//	defer st.Close()
//	rep, err := bench.Run(ctx, st, bench.Quick())
//	rep.WriteTable(os.Stdout)
//
// The package is a library so that a test runs the whole tool at a tiny
// size and it cannot rot. It execs nats-server and kez-chat-server; it
// never links nats-server.
package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog/logserver"
)

// Groups of figures, in the order Run measures them.
var Groups = []string{"sigchains", "log", "messaging", "devices", "connects", "memory", "files", "sources", "groups"}

// Config sizes a run. [Default] is the full run; [Quick] finishes in under
// a minute; [Smoke] is for tests.
type Config struct {
	// Only lists the groups to run (see [Groups]); empty runs all.
	Only []string `json:"only,omitempty"`

	Senders         int   `json:"senders"`          // messaging: N senders
	Receivers       int   `json:"receivers"`        // messaging: M receivers
	Sizes           []int `json:"sizes"`            // messaging: message body sizes
	Messages        int   `json:"messages"`         // messaging: per size and kind, over all rounds
	LatencyMessages int   `json:"latency_messages"` // messaging: one at a time, per size and kind
	Handshakes      int   `json:"handshakes"`       // messaging: new sessions (and each comparison) timed

	ConnectWorkers int           `json:"connect_workers"` // logins at once (connects, memory)
	Duration       time.Duration `json:"duration_ns"`     // each timed round of connects and sigchains
	Rounds         int           `json:"rounds"`          // figure and baseline alternate this many times; each is the median

	FloodRate     float64       `json:"flood_rate"`        // connects: bogus logins/s offered during the flood
	FloodConns    int           `json:"flood_conns"`       // connects: the flood's connections at once
	FloodDuration time.Duration `json:"flood_duration_ns"` // connects: how long the flood (and its baseline) lasts
	FloodUsers    int           `json:"flood_users"`       // connects: registered users logging in meanwhile

	ChainLinks int `json:"chain_links"` // sigchains: links in the verified chain (and in the chain whose head proof log checks)

	LogEntries            int           `json:"log_entries"`                    // log: entries in the log the head proof is checked against
	LogAppenders          int           `json:"log_appenders"`                  // log: appenders at once, each on its own chain
	LogLinks              int           `json:"log_links"`                      // log: links each appender appends per round
	LogLatencyAppends     int           `json:"log_latency_appends"`            // log: appends timed one at a time, with the log and without
	LogCheckpointInterval time.Duration `json:"log_checkpoint_interval_ns"`     // log: the log's checkpoint interval (0: the sig-server's default)
	LogBatchMaxAge        time.Duration `json:"log_batch_max_age_ns,omitempty"` // log: the log's batch age (0: the sig-server's default)

	SenderDevices    int           `json:"sender_devices"`    // devices: the sending person's devices
	RecipientDevices int           `json:"recipient_devices"` // devices: the recipient person's devices
	DeviceMessages   int           `json:"device_messages"`   // devices: logical messages, over all rounds, of the fan-out and of its baseline each
	HistoryMessages  int           `json:"history_messages"`  // devices: messages of history a linked device receives
	Revocations      int           `json:"revocations"`       // devices: revocations timed (each figure the median)
	RevokeWait       time.Duration `json:"revoke_wait_ns"`    // devices: how long a revoked device may keep its connection or logins before the run fails

	BlobSize int64  `json:"blob_size"` // files: bytes of the blob
	Croc     string `json:"croc,omitempty"`
	CrocSkip string `json:"-"` // why Croc is empty

	SourcesBlob int64 `json:"sources_blob"` // sources: bytes of the blob fetched from 1 and from 3 sources
	SourcesRate int64 `json:"sources_rate"` // sources: each source's upload cap, bytes/s

	Users int `json:"users"` // memory: users logged in at once

	GroupSize     int `json:"group_size"`     // groups: members (1 device each) the measured message goes to
	GroupMessages int `json:"group_messages"` // groups: messages of each kind, over all rounds
	RekeyMembers  int `json:"rekey_members"`  // groups: the group's size (the owner included) when one member is removed

	// Progress is told what is being measured; nil: nothing.
	Progress func(string) `json:"-"`
}

// Default is the full run (a few minutes on 2 vCPUs).
func Default() Config {
	return Config{
		Senders: 4, Receivers: 2, Sizes: []int{256, 4096}, Messages: 30000, LatencyMessages: 400, Handshakes: 400,
		ConnectWorkers: 4, Duration: 2 * time.Second, Rounds: 5,
		FloodRate: 1000, FloodConns: 64, FloodDuration: 10 * time.Second, FloodUsers: 20,
		ChainLinks: 100, BlobSize: 256 << 20, Users: 1000, SourcesBlob: 64 << 20, SourcesRate: 20e6,
		LogEntries: 100_000, LogAppenders: 1024, LogLinks: 4, LogLatencyAppends: 10,
		SenderDevices: 3, RecipientDevices: 5, DeviceMessages: 3000, HistoryMessages: 10000, Revocations: 5, RevokeWait: 30 * time.Second,
		GroupSize: 100, GroupMessages: 50, RekeyMembers: 1000,
	}
}

// Quick is a run that finishes in about a minute, at smaller sizes.
func Quick() Config {
	c := Default()
	c.Messages, c.LatencyMessages, c.Handshakes = 4000, 100, 100
	c.Duration, c.Rounds = 500*time.Millisecond, 3
	c.FloodDuration = 4 * time.Second
	c.BlobSize = 64 << 20
	c.DeviceMessages, c.HistoryMessages, c.Revocations = 600, 2000, 3
	c.GroupMessages = 15
	c.LogLinks, c.LogLatencyAppends = 2, 5
	return c
}

// Smoke is the smallest run that still produces every figure, for tests.
func Smoke() Config {
	c := Default()
	c.Senders, c.Receivers = 2, 1
	c.Messages, c.LatencyMessages, c.Handshakes = 60, 5, 5
	c.ConnectWorkers, c.Duration, c.Rounds = 2, 100*time.Millisecond, 1
	c.FloodRate, c.FloodConns, c.FloodDuration, c.FloodUsers = 100, 8, 500*time.Millisecond, 3
	c.ChainLinks, c.BlobSize, c.Users = 5, 2<<20, 20
	c.SourcesBlob, c.SourcesRate = 12<<20, 20e6
	c.DeviceMessages, c.HistoryMessages, c.Revocations = 20, 30, 1
	c.GroupSize, c.GroupMessages, c.RekeyMembers = 3, 2, 5
	c.LogEntries, c.LogAppenders, c.LogLinks, c.LogLatencyAppends = 1000, 4, 2, 2
	return c
}

func (c Config) runs(group string) bool { return len(c.Only) == 0 || slices.Contains(c.Only, group) }

func (c Config) check() error {
	for _, g := range c.Only {
		if !slices.Contains(Groups, g) {
			return fmt.Errorf("bench: unknown group %q; the groups are %v", g, Groups)
		}
	}
	switch {
	case c.Senders < 1 || c.Receivers < 1:
		return errors.New("bench: messaging needs at least one sender and one receiver")
	case len(c.Sizes) == 0:
		return errors.New("bench: messaging needs at least one message size")
	case c.Messages < 1 || c.LatencyMessages < 1 || c.Handshakes < 1:
		return errors.New("bench: messaging needs at least one message of each kind and one handshake")
	case c.ConnectWorkers < 1 || c.Duration <= 0 || c.Rounds < 1:
		return errors.New("bench: workers, duration and rounds must be positive")
	case c.FloodRate <= 0 || c.FloodConns < 1 || c.FloodDuration < floodInterval || c.FloodUsers < 1:
		return fmt.Errorf("bench: the login flood needs a rate, connections, users and a duration of at least %s", floodInterval)
	case c.ChainLinks < 2:
		return errors.New("bench: a measured chain needs at least 2 links")
	case c.LogEntries < 1 || c.LogAppenders < 1 || c.LogLinks < 1 || c.LogLatencyAppends < 1:
		return errors.New("bench: log needs at least one entry, one appender, one link a round and one timed append")
	case max(c.Rounds*c.LogLinks, c.LogLatencyAppends) > sigchain.MaxClaims:
		return fmt.Errorf("bench: log: a chain takes at most %d claims: the rounds' links (%d×%d) and the timed appends (%d) each make one a link", sigchain.MaxClaims, c.Rounds, c.LogLinks, c.LogLatencyAppends)
	case c.LogCheckpointInterval != 0 && c.LogCheckpointInterval < logserver.MinCheckpointInterval || c.LogBatchMaxAge < 0:
		return fmt.Errorf("bench: log: the checkpoint interval is at least %s and the batch age is not negative", logserver.MinCheckpointInterval)
	case c.SenderDevices < 1 || c.RecipientDevices < 1 || c.SenderDevices > sigchain.MaxDevices || c.RecipientDevices > sigchain.MaxDevices:
		return fmt.Errorf("bench: devices: a person has 1 to %d devices", sigchain.MaxDevices)
	case c.DeviceMessages < 1 || c.HistoryMessages < 1 || c.Revocations < 1 || c.RevokeWait <= 0:
		return errors.New("bench: devices needs at least one message, one message of history, one revocation and a wait")
	case c.BlobSize < 1:
		return errors.New("bench: the blob must not be empty")
	case c.SourcesBlob < 1 || c.SourcesRate < 1:
		return errors.New("bench: sources needs a blob and an upload rate")
	case c.Users < 1:
		return errors.New("bench: memory needs at least one user")
	case c.GroupSize < 1 || c.GroupMessages < 1 || c.RekeyMembers < c.GroupSize+2 || c.RekeyMembers > group.MaxMembers:
		return fmt.Errorf("bench: groups: a group of at least one member, one message, and a rekeyed group of %d+2 to %d", c.GroupSize, group.MaxMembers)
	}
	for _, s := range c.Sizes {
		if s < 1 || s > 48<<10 {
			return fmt.Errorf("bench: message size %d: use 1 B to 48 KiB (the envelope's body limit)", s)
		}
	}
	return nil
}

// Run measures every group cfg selects against st (which may be nil when
// only sigchains, log, files and sources run) and returns the report. It stops at the
// first group that fails, returning the figures so far with the error.
func Run(ctx context.Context, st *Stack, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	progress := cfg.Progress
	if progress == nil {
		progress = func(string) {}
	}
	rep := &Report{Started: time.Now(), Machine: thisMachine(), Config: cfg, Stack: "own"}
	defer func() { rep.Duration = time.Since(rep.Started) }()
	needStack := cfg.runs("messaging") || cfg.runs("devices") || cfg.runs("connects") || cfg.runs("memory") || cfg.runs("groups")
	if needStack && st == nil {
		return nil, errors.New("bench: messaging, devices, connects, memory and groups need a stack")
	}
	if st != nil && st.External {
		rep.Stack = "external"
	}
	add := func(figs []Figure) {
		for i := range figs {
			figs[i].finish()
		}
		rep.Figures = append(rep.Figures, figs...)
	}

	var idle float64
	if st != nil && st.ChatServerPID != 0 {
		var err error
		if idle, _, err = ProcessMemory(st.ChatServerPID); err != nil {
			return rep, err
		}
	}
	var users []*User
	if cfg.runs("messaging") || cfg.runs("connects") {
		progress("registering users")
		var err error
		if users, err = st.Register(ctx, "kbm", cfg.Senders+cfg.Receivers, min(8, cfg.Senders+cfg.Receivers)); err != nil {
			return rep, err
		}
	}
	for _, g := range Groups {
		if !cfg.runs(g) {
			continue
		}
		progress("measuring " + g)
		var figs []Figure
		var err error
		switch g {
		case "sigchains":
			figs, err = measureSigchains(cfg)
		case "log":
			figs, err = measureLog(ctx, cfg)
		case "messaging":
			figs, err = measureMessaging(ctx, st, cfg, users)
		case "devices":
			figs, err = measureDevices(ctx, st, cfg)
		case "connects":
			if figs, err = measureConnects(ctx, st, cfg, users); err == nil {
				var fusers []*User
				if fusers, err = st.Register(ctx, "kbf", cfg.FloodUsers, min(8, cfg.FloodUsers)); err == nil {
					var ff []Figure
					ff, err = measureFlood(ctx, st, cfg, fusers)
					figs = append(figs, ff...)
				}
			}
		case "memory":
			figs, err = measureMemory(ctx, st, cfg, idle)
		case "groups":
			figs, err = measureGroups(ctx, st, cfg)
		case "files":
			dir, cleanup, derr := memDir()
			if derr != nil {
				return rep, derr
			}
			figs, err = measureFiles(ctx, cfg, dir)
			cleanup()
		case "sources":
			dir, cleanup, derr := memDir()
			if derr != nil {
				return rep, derr
			}
			figs, err = measureSources(ctx, cfg, dir)
			cleanup()
		}
		add(figs)
		if err != nil {
			return rep, fmt.Errorf("bench: %s: %w", g, err)
		}
	}
	return rep, nil
}

// TempDir makes a fresh folder for a stack under os.TempDir.
func TempDir() (string, error) { return os.MkdirTemp("", "kez-bench-") }
