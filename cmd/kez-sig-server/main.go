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
	"io"
	"net"
	"os"

	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/natsconn"
)

func main() {
	servercmd.Main("kez-sig-server", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
	})
}

// run is the whole program; onListen (may be nil) receives the bound
// address, for tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, onListen func(net.Addr)) error {
	env := servercmd.Env(getenv)
	if len(args) > 0 && args[0] == "nats-key" {
		return natsKeyCommand(args[1:], env, stdout, stderr)
	}
	fs := servercmd.NewFlagSet("kez-sig-server", "usage: kez-sig-server [flags]\n       kez-sig-server nats-key [--nats-key FILE]", stderr)
	listen := fs.String("listen", env.Or("KEZ_SIG_LISTEN", "127.0.0.1:8081"), "address to listen on (env KEZ_SIG_LISTEN)")
	backend := fs.String("store", env.Or("KEZ_SIG_STORE", storeSQLite), "where chains live: sqlite (--db) or jetstream (--nats), shared by replicas (env KEZ_SIG_STORE)")
	dbPath := fs.String("db", env.Or("KEZ_SIG_DB", "kez-sig.db"), "SQLite database file, with --store sqlite (env KEZ_SIG_DB)")
	natsURL := fs.String("nats", env.Or("NATS_URL", ""), "URL of the operator's NATS, with --store jetstream (env NATS_URL)")
	natsKey := fs.String("nats-key", env.Or("KEZ_SIG_NATS_KEY", defaultNATSKey), "file of the sig-server's NATS nkey seed, made on first use, with --store jetstream (env KEZ_SIG_NATS_KEY)")
	replicas := fs.Int("replicas", 1, "JetStream replicas of the chain stream when this server creates it: 3 in a cluster (env KEZ_SIG_REPLICAS)")
	var lf servercmd.LogFlags
	lf.Declare(fs, env, "KEZ_SIG")
	if ok, err := servercmd.Parse(fs, args, "the only subcommand is nats-key; see --help"); !ok {
		return err
	}
	if err := env.Int(fs, "replicas", "KEZ_SIG_REPLICAS", replicas); err != nil {
		return err
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		return err
	}

	storeCtx, stopStore := context.WithCancel(ctx)
	defer stopStore()
	chains, err := openChains(storeCtx, storeConfig{backend: *backend, dbPath: *dbPath, natsURL: *natsURL, natsKey: *natsKey, replicas: *replicas}, log)
	if err != nil {
		return err
	}
	defer chains.close()

	h := httpserve.Wrap(chains.handler, httpserve.Options{Ready: chains.ready, Registry: servercmd.NewRegistry(), Logger: log})
	if *backend == storeJetStream {
		log.Info("kez-sig-server starting", "store", *backend, "nats", natsconn.RedactURL(*natsURL), "nats_key", *natsKey)
	} else {
		log.Info("kez-sig-server starting", "store", *backend, "db", *dbPath)
	}
	return httpserve.ListenAndServe(ctx, *listen, h, log, onListen)
}
