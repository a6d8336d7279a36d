// Command embedserver shows how a Go program hosts a whole KEZ chat domain
// inside its own HTTP server: one http.Server on one port serves the
// program's own page, the handle registry and WebFinger (chatserver.Server,
// which also runs the NATS auth callout and provisions the inbox stream) and
// the sigchain API (sigchain.NewHandler over a sigchain/sqlitestore file).
// It connects to the operator's NATS like an application to its database.
//
// Try it on one machine (NATS from the module, no container engine):
//
//	go run ./examples/embedserver --dir /tmp/kez-embed --nats-config > /tmp/kez-embed.conf
//	go tool nats-server -c /tmp/kez-embed.conf &
//	go run ./examples/embedserver --dir /tmp/kez-embed
//	KEZ_SERVER=http://127.0.0.1:8080 KEZ_HOME=/tmp/alice go run ./cmd/kez register alice
//
// --nats-config prints a development nats.conf (listen 127.0.0.1:4222,
// JetStream under DIR) trusting the callout keys in DIR/keys; against a
// production NATS print the snippet with "kez-chat-server nats-config --keys
// DIR/keys" instead (docs/operators.md).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// config is what the program needs; main fills it from flags.
type config struct {
	Listen    string // host:port of the one HTTP server
	PublicURL string // base URL clients use; "" means http://<Listen>
	Domain    string // handles are @NAME@Domain
	NATSURL   string // the operator's NATS
	Dir       string // state: chat.db, sig.db, keys/
	Log       *slog.Logger
}

func main() {
	fs := flag.NewFlagSet("embedserver", flag.ExitOnError)
	var c config
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:8080", "address of the HTTP server")
	fs.StringVar(&c.PublicURL, "public-url", "", "base URL clients reach this server at (default http://LISTEN)")
	fs.StringVar(&c.Domain, "domain", "kez.test", "handle domain: users are @NAME@DOMAIN")
	fs.StringVar(&c.NATSURL, "nats", envOr("NATS_URL", "nats://127.0.0.1:4222"), "the operator's NATS (env NATS_URL)")
	fs.StringVar(&c.Dir, "dir", "kez-embed", "state folder: databases and callout keys")
	printConf := fs.Bool("nats-config", false, "print a development nats.conf for the keys in DIR/keys and exit")
	fs.Parse(os.Args[1:])

	if *printConf {
		conf, err := chatserver.NATSConfig(filepath.Join(c.Dir, "keys"), callout.ConfigOptions{
			Standalone: true, StoreDir: filepath.Join(c.Dir, "nats"), HTTPListen: "127.0.0.1:8222"})
		if err != nil {
			fmt.Fprintln(os.Stderr, "embedserver:", err)
			os.Exit(1)
		}
		fmt.Print(conf)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, c, func(url string) { c.Log.Info("ready: clients use KEZ_SERVER=" + url) }); err != nil {
		fmt.Fprintln(os.Stderr, "embedserver:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends. ready, if not nil, is called with the base
// URL once the server is ready (the callout answers logins and the inbox
// stream exists).
func run(ctx context.Context, c config, ready func(baseURL string)) error {
	if err := os.MkdirAll(c.Dir, 0o700); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	// The chat-server checks claims against the sigchain API, which is this
	// same server; it reaches it on loopback.
	self := "http://" + loopback(ln.Addr().(*net.TCPAddr))
	public := c.PublicURL
	if public == "" {
		public = self
	}

	chains, err := sqlitestore.Open(filepath.Join(c.Dir, "sig.db"))
	if err != nil {
		return err
	}
	defer chains.Close()

	chat := &chatserver.Server{
		Domain:             c.Domain,
		SigServerURL:       self,
		PublicSigServerURL: public,
		PublicURL:          public,
		NATSURL:            c.NATSURL,
		DBPath:             filepath.Join(c.Dir, "chat.db"),
		KeysDir:            filepath.Join(c.Dir, "keys"),
		Logger:             c.Log,
	}
	if err := chat.Start(ctx); err != nil { // returns at once; NATS is joined in the background
		return err
	}
	defer chat.Close()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "This program hosts the KEZ domain %s.\n", chat.Domain)
	})
	mux.Handle(sigchain.ChainsPath, sigchain.NewHandler(chains, sigchain.WithLogger(c.Log)))
	// /v1/handles, /.well-known/webfinger, /v1/info, /healthz, /readyz, /metrics
	mux.Handle("/", chat.Handler())

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	go func() {
		if chat.WaitReady(ctx) == nil && ready != nil {
			ready(public)
		}
	}()
	select {
	case <-ctx.Done():
	case err := <-served:
		return err
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// loopback turns a listener address on all interfaces into one on loopback.
func loopback(a *net.TCPAddr) string {
	if a.IP.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", fmt.Sprint(a.Port))
	}
	return a.String()
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
