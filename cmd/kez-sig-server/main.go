// Command kez-sig-server is the reference KEZ sig-server: it stores users'
// sigchains in a SQLite file and serves them over HTTP, verifying every
// appended link (docs/spec/sigchain.md §9).
//
//	kez-sig-server [--listen 127.0.0.1:8081] [--db kez-sig.db] [--log-format text|json] [--log-level info]
//
// Every flag has an environment twin (KEZ_SIG_LISTEN, KEZ_SIG_DB,
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
	"syscall"

	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil); err != nil {
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
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, onListen func(net.Addr)) error {
	fs := flag.NewFlagSet("kez-sig-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envOr := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	listen := fs.String("listen", envOr("KEZ_SIG_LISTEN", "127.0.0.1:8081"), "address to listen on (env KEZ_SIG_LISTEN)")
	dbPath := fs.String("db", envOr("KEZ_SIG_DB", "kez-sig.db"), "SQLite database file (env KEZ_SIG_DB)")
	logFormat := fs.String("log-format", envOr("KEZ_SIG_LOG_FORMAT", "text"), "log format: text or json (env KEZ_SIG_LOG_FORMAT)")
	logLevel := fs.String("log-level", envOr("KEZ_SIG_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env KEZ_SIG_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q; see --help", fs.Args())}
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

	store, err := sqlitestore.Open(*dbPath)
	if err != nil {
		return err
	}
	defer store.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	app := sigchain.NewHandler(store, sigchain.WithLogger(log))
	h := httpserve.Wrap(app, httpserve.Options{Ready: store.Ping, Registry: reg, Logger: log})
	log.Info("kez-sig-server starting", "db", *dbPath)
	return httpserve.ListenAndServe(ctx, *listen, h, log, onListen)
}
