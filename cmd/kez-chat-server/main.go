// Command kez-chat-server is the reference KEZ chat-server: the handle
// registry (claims, lookups, WebFinger) over HTTP and the NATS auth callout
// that lets registered keys log in to the operator's NATS. It is a thin
// wrapper around package chatserver.
//
//	kez-chat-server [--listen 127.0.0.1:8080] [--domain kez.lat] --sig-server URL --nats URL
//	                [--db kez-chat.db] [--keys kez-chat-keys] [--public-url URL] [--public-sig-server URL]
//	                [--log-format text|json] [--log-level info]
//	kez-chat-server nats-config [--keys kez-chat-keys]
//
// Every flag has an environment twin (KEZ_LISTEN, KEZ_DOMAIN,
// KEZ_SIG_SERVER, NATS_URL, KEZ_CHAT_DB, KEZ_CHAT_KEYS, KEZ_CHAT_PUBLIC_URL,
// KEZ_CHAT_PUBLIC_SIG_SERVER, KEZ_CHAT_LOG_FORMAT, KEZ_CHAT_LOG_LEVEL);
// flags win. "nats-config" prints the nats.conf snippet for the keys
// folder, creating the keys on first use; add it to the NATS server's
// configuration and restart NATS (docs/operators.md). The server serves
// /healthz, /readyz and Prometheus /metrics, and shuts down gracefully on
// SIGTERM or SIGINT.
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

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "kez-chat-server:", err)
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
	if len(args) > 0 && args[0] == "nats-config" {
		return natsConfig(args[1:], envOr, stdout, stderr)
	}

	fs := flag.NewFlagSet("kez-chat-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: kez-chat-server [flags]\n       kez-chat-server nats-config [--keys DIR]\n\nflags:\n")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", envOr("KEZ_LISTEN", "127.0.0.1:8080"), "address to listen on (env KEZ_LISTEN)")
	domain := fs.String("domain", envOr("KEZ_DOMAIN", chatserver.DefaultDomain), "handle domain this server registers: alice@DOMAIN (env KEZ_DOMAIN)")
	sigServer := fs.String("sig-server", envOr("KEZ_SIG_SERVER", ""), "base URL of the sig-server, required (env KEZ_SIG_SERVER)")
	natsURL := fs.String("nats", envOr("NATS_URL", ""), "URL of the operator's NATS, required (env NATS_URL)")
	dbPath := fs.String("db", envOr("KEZ_CHAT_DB", chatserver.DefaultDBPath), "SQLite file of the handle registry (env KEZ_CHAT_DB)")
	keysDir := fs.String("keys", envOr("KEZ_CHAT_KEYS", chatserver.DefaultKeysDir), "folder of the callout keys, made on first use (env KEZ_CHAT_KEYS)")
	publicURL := fs.String("public-url", envOr("KEZ_CHAT_PUBLIC_URL", ""), "this server's base URL as clients reach it, if a proxy changes Host (env KEZ_CHAT_PUBLIC_URL)")
	publicSig := fs.String("public-sig-server", envOr("KEZ_CHAT_PUBLIC_SIG_SERVER", ""), "the sig-server's base URL as clients reach it, if not --sig-server (env KEZ_CHAT_PUBLIC_SIG_SERVER)")
	logFormat := fs.String("log-format", envOr("KEZ_CHAT_LOG_FORMAT", "text"), "log format: text or json (env KEZ_CHAT_LOG_FORMAT)")
	logLevel := fs.String("log-level", envOr("KEZ_CHAT_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env KEZ_CHAT_LOG_LEVEL)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments %q; the only subcommand is nats-config; see --help", fs.Args())}
	}
	if *sigServer == "" {
		return usageError{errors.New("--sig-server (or KEZ_SIG_SERVER) is required: the base URL of the sig-server, e.g. http://127.0.0.1:8081")}
	}
	if *natsURL == "" {
		return usageError{errors.New("--nats (or NATS_URL) is required: the URL of your NATS server, e.g. nats://127.0.0.1:4222")}
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		return err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	srv := &chatserver.Server{
		Domain:             *domain,
		SigServerURL:       *sigServer,
		PublicSigServerURL: *publicSig,
		PublicURL:          *publicURL,
		NATSURL:            *natsURL,
		DBPath:             *dbPath,
		KeysDir:            *keysDir,
		Logger:             log,
		Registry:           reg,
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	defer srv.Close()
	return httpserve.ListenAndServe(ctx, *listen, srv.Handler(), log, onListen)
}

// natsConfig prints the nats.conf snippet for the keys folder.
func natsConfig(args []string, envOr func(string, string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kez-chat-server nats-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: kez-chat-server nats-config [--keys DIR]\n\n"+
			"Prints the nats.conf snippet that sends every NATS login to this chat-server's\n"+
			"auth callout, for the keys in DIR (made on first use, mode 0600). Add it to\n"+
			"your NATS configuration and restart NATS. It holds public keys only.\n\nflags:\n")
		fs.PrintDefaults()
	}
	keysDir := fs.String("keys", envOr("KEZ_CHAT_KEYS", chatserver.DefaultKeysDir), "folder of the callout keys (env KEZ_CHAT_KEYS)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("nats-config: unexpected arguments %q", fs.Args())}
	}
	conf, err := chatserver.NATSConfig(*keysDir, callout.ConfigOptions{})
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, conf)
	return err
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Errorf("--log-level %q: want debug, info, warn or error", level)}
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usageError{fmt.Errorf("--log-format %q: want text or json", format)}
}
