// Command kez-sig-server is the reference KEZ sig-server: it stores users'
// sigchains in a SQLite file, or in the operator's NATS JetStream so that
// several replicas share them, and serves them over HTTP, verifying every
// appended link (docs/spec/sigchain.md §9).
//
//	kez-sig-server [--listen 127.0.0.1:8081] [--store sqlite|jetstream] [--db kez-sig.db]
//	               [--nats URL] [--nats-key kez-sig-nats.nk] [--replicas 1]
//	               [--log-format text|json] [--log-level info]
//	kez-sig-server nats-key [--nats-key kez-sig-nats.nk]
//
// With --store jetstream the chains live in one JetStream stream
// (package sigchain/jsstore) reached with --nats; the server logs in with
// the nkey in the --nats-key file (made on first use, mode 0600), which
// the NATS configuration names ("kez-sig-server nats-key" prints it for
// "kez-chat-server nats-config --sig-server-key"; docs/operators.md).
//
// Every flag has an environment twin (KEZ_SIG_LISTEN, KEZ_SIG_STORE,
// KEZ_SIG_DB, NATS_URL, KEZ_SIG_NATS_KEY, KEZ_SIG_REPLICAS,
// KEZ_SIG_LOG_FORMAT, KEZ_SIG_LOG_LEVEL); flags win. Besides the chain API
// it serves /healthz, /readyz and Prometheus /metrics, and shuts down
// gracefully on SIGTERM or SIGINT.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "kez-sig-server:", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type usageError struct{ error }

// run is the whole program; onListen (may be nil) receives the bound
// address, for tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, onListen func(net.Addr)) error {
	envOr := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	if len(args) > 0 && args[0] == "nats-key" {
		return natsKeyCommand(args[1:], envOr, stdout, stderr)
	}
	fs := flag.NewFlagSet("kez-sig-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: kez-sig-server [flags]\n       kez-sig-server nats-key [--nats-key FILE]\n\nflags:\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", envOr("KEZ_SIG_LISTEN", "127.0.0.1:8081"), "address to listen on (env KEZ_SIG_LISTEN)")
	backend := fs.String("store", envOr("KEZ_SIG_STORE", storeSQLite), "where chains live: sqlite (--db) or jetstream (--nats), shared by replicas (env KEZ_SIG_STORE)")
	dbPath := fs.String("db", envOr("KEZ_SIG_DB", "kez-sig.db"), "SQLite database file, with --store sqlite (env KEZ_SIG_DB)")
	natsURL := fs.String("nats", envOr("NATS_URL", ""), "URL of the operator's NATS, with --store jetstream (env NATS_URL)")
	natsKey := fs.String("nats-key", envOr("KEZ_SIG_NATS_KEY", defaultNATSKey), "file of the sig-server's NATS nkey seed, made on first use, with --store jetstream (env KEZ_SIG_NATS_KEY)")
	replicas := fs.Int("replicas", 1, "JetStream replicas of the chain stream when this server creates it: 3 in a cluster (env KEZ_SIG_REPLICAS)")
	logFormat := fs.String("log-format", envOr("KEZ_SIG_LOG_FORMAT", "text"), "log format: text or json (env KEZ_SIG_LOG_FORMAT)")
	logLevel := fs.String("log-level", envOr("KEZ_SIG_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env KEZ_SIG_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q; the only subcommand is nats-key; see --help", fs.Args())}
	}
	if v := getenv("KEZ_SIG_REPLICAS"); v != "" && !flagSet(fs, "replicas") {
		n, err := strconv.Atoi(v)
		if err != nil {
			return usageError{fmt.Errorf("KEZ_SIG_REPLICAS %q: want a number", v)}
		}
		*replicas = n
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)}
	}
	hopts := &slog.HandlerOptions{Level: level}
	var log *slog.Logger
	switch *logFormat {
	case "text":
		log = slog.New(slog.NewTextHandler(stderr, hopts))
	case "json":
		log = slog.New(slog.NewJSONHandler(stderr, hopts))
	default:
		return usageError{fmt.Errorf("--log-format %q: want text or json", *logFormat)}
	}

	storeCtx, stopStore := context.WithCancel(ctx)
	defer stopStore()
	chains, err := openChains(storeCtx, storeConfig{backend: *backend, dbPath: *dbPath, natsURL: *natsURL, natsKey: *natsKey, replicas: *replicas}, log)
	if err != nil {
		return err
	}
	defer chains.close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := httpserve.Wrap(chains.handler, httpserve.Options{Ready: chains.ready, Registry: reg, Logger: log})
	if *backend == storeJetStream {
		log.Info("kez-sig-server starting", "store", *backend, "nats", redactURL(*natsURL), "nats_key", *natsKey)
	} else {
		log.Info("kez-sig-server starting", "store", *backend, "db", *dbPath)
	}
	return httpserve.ListenAndServe(ctx, *listen, h, log, onListen)
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// redactURL drops user information from NATS URLs for logs.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		scheme, rest, ok := strings.Cut(strings.TrimSpace(p), "://")
		if !ok {
			continue
		}
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			rest = "redacted@" + rest[at+1:]
		}
		parts[i] = scheme + "://" + rest
	}
	return strings.Join(parts, ",")
}
