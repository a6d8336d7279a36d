// Command kez-chat-server is the reference KEZ chat-server: the handle
// registry (claims, lookups, WebFinger) over HTTP and the NATS auth callout
// that lets registered keys log in to the operator's NATS. It is a thin
// wrapper around package chatserver.
//
//	kez-chat-server [--listen 127.0.0.1:8080] --domain DOMAIN --sig-server URL --nats URL
//	                [--store sqlite|jetstream] [--db kez-chat.db] [--replicas 1] [--registry-max-stale 10s] [--keys kez-chat-keys]
//	                [--public-url URL] [--public-sig-server URL] [--relay MULTIADDR]… [--log-format text|json] [--log-level info]
//	                [--claims-per-ip 10/1h] [--claims-per-key 10/1h] [--reads-per-ip 1200/1m]
//	                [--devices-per-ip 30/1h] [--devices-per-key 30/1h]
//	                [--trusted-proxies ADDR,…] [--limit-max-keys 50000]
//	                [--login-… limits of the auth callout under a login flood, see --help]
//	                [--send-…, --recipient-…, --pull-…, --ack-…, --max-unread-…, --inbox-max-…,
//	                 --remove-read-… limits and settings of the gate, see --help] [--drain-timeout 10s]
//	kez-chat-server nats-config [--keys kez-chat-keys] [--store sqlite|jetstream] [--sig-server-key U…]
//
// Every flag has an environment twin (KEZ_LISTEN, KEZ_DOMAIN,
// KEZ_SIG_SERVER, NATS_URL, KEZ_CHAT_STORE, KEZ_CHAT_DB, KEZ_CHAT_REPLICAS,
// KEZ_CHAT_REGISTRY_MAX_STALE,
// KEZ_CHAT_KEYS, KEZ_CHAT_PUBLIC_URL, KEZ_CHAT_PUBLIC_SIG_SERVER,
// KEZ_RELAYS (comma-separated),
// KEZ_CHAT_CLAIMS_PER_IP, KEZ_CHAT_CLAIMS_PER_KEY, KEZ_CHAT_READS_PER_IP,
// KEZ_CHAT_DEVICES_PER_IP, KEZ_CHAT_DEVICES_PER_KEY,
// KEZ_CHAT_TRUSTED_PROXIES, KEZ_CHAT_LIMIT_MAX_KEYS,
// KEZ_CHAT_DRAIN_TIMEOUT, KEZ_CHAT_LOG_FORMAT, KEZ_CHAT_LOG_LEVEL, KEZ_CHAT_LOGIN_… for the
// --login-… flags, and KEZ_CHAT_SEND_…, _RECIPIENT_…, _PULL_…, _ACK_…,
// _MAX_UNREAD_…, _INBOX_MAX_…, _REMOVE_READ_… for the gate's; for
// nats-config also
// KEZ_CHAT_SIG_SERVER_KEY); flags win. "nats-config" prints the nats.conf
// snippet for the keys folder, creating the keys on first use; add it to
// the NATS server's configuration and restart NATS (docs/operators.md).
// With --store jetstream the handle registry lives in the callout
// account's JetStream, shared by every replica, and "nats-config --store
// jetstream" gives that account JetStream; --sig-server-key adds the
// account of a sig-server that keeps its chains in JetStream. Requests
// over the rate limits are refused with 429 and Retry-After; the client
// address is the TCP peer unless it is one of --trusted-proxies
// (docs/operators.md, "Limits"). --relay names libp2p relays (kez-relay)
// that /v1/info offers the users for file sharing behind NAT. The server serves
// /healthz, /readyz and Prometheus /metrics, and shuts down gracefully on
// SIGTERM or SIGINT: /readyz answers 503 at once, the auth callout and
// the gate leave their queue groups (NATS gives new logins and requests to
// the other replicas) and answer what they took, and the HTTP server
// finishes its requests in flight, all within --drain-timeout; so
// replicas can be restarted one at a time without a refused login.
package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/jsstore"
	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/internal/servercmd"
)

func main() {
	servercmd.Main("kez-chat-server", func(ctx context.Context) error {
		return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr, nil)
	})
}

// run is the whole program; onListen (may be nil) receives the bound
// address, for tests.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, onListen func(net.Addr)) error {
	env := servercmd.Env(getenv)
	if len(args) > 0 && args[0] == "nats-config" {
		return natsConfig(args[1:], env, stdout, stderr)
	}

	fs := servercmd.NewFlagSet("kez-chat-server", "usage: kez-chat-server [flags]\n       kez-chat-server nats-config [--keys DIR]", stderr)
	listen := fs.String("listen", env.Or("KEZ_LISTEN", "127.0.0.1:8080"), "address to listen on (env KEZ_LISTEN)")
	domain := fs.String("domain", env.Or("KEZ_DOMAIN", ""), "handle domain this server registers: alice@DOMAIN, required (env KEZ_DOMAIN)")
	sigServer := fs.String("sig-server", env.Or("KEZ_SIG_SERVER", ""), "base URL of the sig-server, required (env KEZ_SIG_SERVER)")
	natsURL := fs.String("nats", env.Or("NATS_URL", ""), "URL of the operator's NATS, required (env NATS_URL)")
	backend := fs.String("store", env.Or("KEZ_CHAT_STORE", chatserver.StoreSQLite), "where the handle registry lives: sqlite (--db) or jetstream (NATS, shared by replicas) (env KEZ_CHAT_STORE)")
	dbPath := fs.String("db", env.Or("KEZ_CHAT_DB", chatserver.DefaultDBPath), "SQLite file of the handle registry, with --store sqlite (env KEZ_CHAT_DB)")
	maxStale := fs.Duration("registry-max-stale", jsstore.DefaultMaxStale, "with --store jetstream: the longest logins are answered from the in-memory view of the registry after it last confirmed it is current, which keeps logins flowing while the registry's stream elects a leader; also how long a suspended handle or revoked device may still log in then; 0 turns the view off (env KEZ_CHAT_REGISTRY_MAX_STALE)")
	replicas := fs.Int("replicas", 1, "JetStream replicas of the inbox stream (and, with --store jetstream, the registry bucket): 3 in a cluster (env KEZ_CHAT_REPLICAS)")
	keysDir := fs.String("keys", env.Or("KEZ_CHAT_KEYS", chatserver.DefaultKeysDir), "folder of the callout keys, made on first use (env KEZ_CHAT_KEYS)")
	publicURL := fs.String("public-url", env.Or("KEZ_CHAT_PUBLIC_URL", ""), "this server's base URL as clients reach it, if a proxy changes Host (env KEZ_CHAT_PUBLIC_URL)")
	publicSig := fs.String("public-sig-server", env.Or("KEZ_CHAT_PUBLIC_SIG_SERVER", ""), "the sig-server's base URL as clients reach it, if not --sig-server (env KEZ_CHAT_PUBLIC_SIG_SERVER)")
	var relays []string
	fs.Func("relay", "a libp2p relay (kez-relay) /v1/info offers for file sharing behind NAT: its multiaddr ending in /p2p/<peer id>; repeat for more, up to 8 (env KEZ_RELAYS, comma-separated)", func(s string) error {
		relays = append(relays, s)
		return nil
	})
	var limits handles.Limits
	d := handles.DefaultLimits
	limitFlags := []servercmd.LimitFlag{
		{Name: "claims-per-ip", Env: "KEZ_CHAT_CLAIMS_PER_IP", Limit: &limits.ClaimsPerIP, Default: d.ClaimsPerIP, Usage: "handle claims (registrations, renewals) one client address may send"},
		{Name: "claims-per-key", Env: "KEZ_CHAT_CLAIMS_PER_KEY", Limit: &limits.ClaimsPerKey, Default: d.ClaimsPerKey, Usage: "handle claims one key may make, counted once the signature verifies"},
		{Name: "reads-per-ip", Env: "KEZ_CHAT_READS_PER_IP", Limit: &limits.ReadsPerIP, Default: d.ReadsPerIP, Usage: "lookups, WebFinger and /v1/info requests one client address may send"},
		{Name: "devices-per-ip", Env: "KEZ_CHAT_DEVICES_PER_IP", Limit: &limits.DevicesPerIP, Default: d.DevicesPerIP, Usage: "device links (POST /v1/devices) one client address may send"},
		{Name: "devices-per-key", Env: "KEZ_CHAT_DEVICES_PER_KEY", Limit: &limits.DevicesPerKey, Default: d.DevicesPerKey, Usage: "device links one person's key may sign, counted once the signature verifies"},
	}
	servercmd.DeclareLimits(fs, limitFlags)
	var cf servercmd.ClientIPFlags
	cf.Declare(fs, env, "KEZ_CHAT")
	logins := declareLoginFlags(fs)
	var lf servercmd.LogFlags
	lf.Declare(fs, env, "KEZ_CHAT")
	lim := chatserver.DefaultMailLimits
	inbox := callout.InboxConfig{MaxMsgsPerSubject: 1_000, MaxBytes: 1 << 30}
	maxUnread, inboxBytes := int(inbox.MaxMsgsPerSubject), int(inbox.MaxBytes)
	floats := []struct {
		flag, env string
		v         *float64
		usage     string
	}{
		{"send-rate", "KEZ_CHAT_SEND_RATE", &lim.SenderRate, "messages per second one user may send, on average; -1 turns the limit off"},
		{"send-burst", "KEZ_CHAT_SEND_BURST", &lim.SenderBurst, "messages one user may send at once"},
		{"copy-rate", "KEZ_CHAT_COPY_RATE", &lim.SenderCopyRate, "copies per second one user may have stored, on average (one per recipient device of a multi-recipient send, one per send); -1 turns the limit off"},
		{"copy-burst", "KEZ_CHAT_COPY_BURST", &lim.SenderCopyBurst, "copies one user may have stored at once"},
		{"send-bytes-rate", "KEZ_CHAT_SEND_BYTES_RATE", &lim.SenderBytesRate, "bytes per second one user may send, on average; -1 turns the limit off"},
		{"send-bytes-burst", "KEZ_CHAT_SEND_BYTES_BURST", &lim.SenderBytesBurst, "bytes one user may send at once"},
		{"recipient-rate", "KEZ_CHAT_RECIPIENT_RATE", &lim.RecipientRate, "messages per second one sender may store for one recipient; -1 turns the limit off"},
		{"recipient-burst", "KEZ_CHAT_RECIPIENT_BURST", &lim.RecipientBurst, "messages one sender may store for one recipient at once"},
		{"recipient-bytes-rate", "KEZ_CHAT_RECIPIENT_BYTES_RATE", &lim.RecipientBytesRate, "bytes per second one sender may store for one recipient; -1 turns the limit off"},
		{"recipient-bytes-burst", "KEZ_CHAT_RECIPIENT_BYTES_BURST", &lim.RecipientBytesBurst, "bytes one sender may store for one recipient at once"},
		{"pull-rate", "KEZ_CHAT_PULL_RATE", &lim.APIRate, "pull and consumer requests per second of one user; -1 turns the limit off"},
		{"pull-burst", "KEZ_CHAT_PULL_BURST", &lim.APIBurst, "pull and consumer requests of one user at once"},
		{"ack-rate", "KEZ_CHAT_ACK_RATE", &lim.AckRate, "acknowledgements per second of one user, on average (lines of its batches; those over are dropped and redelivered later); -1 turns the limit off"},
		{"ack-burst", "KEZ_CHAT_ACK_BURST", &lim.AckBurst, "acknowledgements of one user at once"},
		{"remove-read-rate", "KEZ_CHAT_REMOVE_READ_RATE", &lim.RemoveReadRate, "removals of read mail per second, all users together (each purges one user's acknowledged messages); -1 turns the limit off"},
	}
	for _, f := range floats {
		fs.Float64Var(f.v, f.flag, *f.v, f.usage+" (env "+f.env+")")
	}
	fs.IntVar(&maxUnread, "max-unread-per-inbox", maxUnread, "unread messages one sender may leave in one inbox (env KEZ_CHAT_MAX_UNREAD_PER_INBOX)")
	fs.IntVar(&lim.SenderUnread, "max-unread-per-sender", lim.SenderUnread, "unread messages one sender may have in all inboxes together; -1 turns the limit off (env KEZ_CHAT_MAX_UNREAD_PER_SENDER)")
	fs.IntVar(&inboxBytes, "inbox-max-bytes", inboxBytes, "bytes the inbox stream holds in all; when full it refuses new mail and evicts none (env KEZ_CHAT_INBOX_MAX_BYTES)")
	fs.IntVar(&inbox.MaxConsumers, "inbox-max-consumers", callout.DefaultMaxConsumers, "consumers the inbox stream holds: one per user (env KEZ_CHAT_INBOX_MAX_CONSUMERS)")
	fs.IntVar(&lim.CopiesInFlight, "copies-in-flight", lim.CopiesInFlight, "copies of multi-recipient sends the gate waits for the stream to store at once, all users together (env KEZ_CHAT_COPIES_IN_FLIGHT)")
	fs.IntVar(&lim.RemoveReadAfter, "remove-read-after", lim.RemoveReadAfter, "acknowledgements of one user after which the gate removes its read mail at once (env KEZ_CHAT_REMOVE_READ_AFTER)")
	fs.DurationVar(&lim.RemoveReadEvery, "remove-read-every", lim.RemoveReadEvery, "the longest read mail waits for removal (env KEZ_CHAT_REMOVE_READ_EVERY)")
	drainTimeout := fs.Duration("drain-timeout", httpserve.ShutdownTimeout, "on SIGTERM, the longest to wait for the logins, gate requests and HTTP requests in flight; new logins go to the other replicas at once (env KEZ_CHAT_DRAIN_TIMEOUT)")
	if ok, err := servercmd.Parse(fs, args, "the only subcommand is nats-config; see --help"); !ok {
		return err
	}
	loginLimits, loginWorkers, lerr := logins.limits(fs, env)
	if lerr != nil {
		return lerr
	}
	if err := env.Int(fs, "replicas", "KEZ_CHAT_REPLICAS", replicas); err != nil {
		return err
	}
	if err := env.Duration(fs, "registry-max-stale", "KEZ_CHAT_REGISTRY_MAX_STALE", maxStale); err != nil {
		return err
	}
	if *maxStale < 0 || *maxStale > 0 && *maxStale < 10*time.Millisecond {
		return servercmd.Usagef("--registry-max-stale %s: want at least 10ms, or 0 to turn the view off", *maxStale)
	}
	if *maxStale == 0 {
		*maxStale = -1 // chatserver: a negative RegistryMaxStale turns the view off
	}
	for _, f := range floats {
		if err := env.Float(fs, f.flag, f.env, f.v); err != nil {
			return err
		}
		if *f.v == 0 || *f.v < -1 {
			return servercmd.Usagef("--%s %v: want a positive number (or -1 for a rate: no limit)", f.flag, *f.v)
		}
	}
	if err := env.Int(fs, "max-unread-per-inbox", "KEZ_CHAT_MAX_UNREAD_PER_INBOX", &maxUnread); err != nil {
		return err
	}
	if err := env.Int(fs, "max-unread-per-sender", "KEZ_CHAT_MAX_UNREAD_PER_SENDER", &lim.SenderUnread); err != nil {
		return err
	}
	if err := env.Int(fs, "inbox-max-bytes", "KEZ_CHAT_INBOX_MAX_BYTES", &inboxBytes); err != nil {
		return err
	}
	if err := env.Int(fs, "inbox-max-consumers", "KEZ_CHAT_INBOX_MAX_CONSUMERS", &inbox.MaxConsumers); err != nil {
		return err
	}
	if err := env.Int(fs, "remove-read-after", "KEZ_CHAT_REMOVE_READ_AFTER", &lim.RemoveReadAfter); err != nil {
		return err
	}
	if err := env.Int(fs, "copies-in-flight", "KEZ_CHAT_COPIES_IN_FLIGHT", &lim.CopiesInFlight); err != nil {
		return err
	}
	if lim.CopiesInFlight <= 0 {
		return servercmd.Usagef("--copies-in-flight %d: want a positive number", lim.CopiesInFlight)
	}
	if err := env.Duration(fs, "remove-read-every", "KEZ_CHAT_REMOVE_READ_EVERY", &lim.RemoveReadEvery); err != nil {
		return err
	}
	if err := env.Duration(fs, "drain-timeout", "KEZ_CHAT_DRAIN_TIMEOUT", drainTimeout); err != nil {
		return err
	}
	if *drainTimeout <= 0 {
		return servercmd.Usagef("--drain-timeout %v: want a positive duration", *drainTimeout)
	}
	if inbox.MaxConsumers < 1 || lim.RemoveReadAfter < 1 || lim.RemoveReadEvery <= 0 {
		return servercmd.Usagef("--inbox-max-consumers and --remove-read-after must be at least 1, --remove-read-every positive")
	}
	if maxUnread < 1 || inboxBytes < 1<<20 || lim.SenderUnread == 0 || lim.SenderUnread < -1 {
		return servercmd.Usagef("--max-unread-per-inbox and --max-unread-per-sender must be at least 1 (or -1: off, for the latter), --inbox-max-bytes at least 1 MiB")
	}
	inbox.MaxMsgsPerSubject, inbox.MaxBytes, inbox.Replicas = int64(maxUnread), int64(inboxBytes), *replicas
	if err := env.Limits(fs, limitFlags); err != nil {
		return err
	}
	var err error
	if limits.ClientIP, limits.MaxTracked, err = cf.Parse(fs); err != nil {
		return err
	}
	if *backend != chatserver.StoreSQLite && *backend != chatserver.StoreJetStream {
		return servercmd.Usagef("--store %q: want %s or %s", *backend, chatserver.StoreSQLite, chatserver.StoreJetStream)
	}
	if *replicas < 1 || *replicas > 5 {
		return servercmd.Usagef("--replicas %d: want 1 to 5", *replicas)
	}
	if *domain == "" {
		return servercmd.Usagef("--domain (or KEZ_DOMAIN) is required: the handle domain this server registers, e.g. example.org for alice@example.org")
	}
	if *sigServer == "" {
		return servercmd.Usagef("--sig-server (or KEZ_SIG_SERVER) is required: the base URL of the sig-server, e.g. http://127.0.0.1:8081")
	}
	if *natsURL == "" {
		return servercmd.Usagef("--nats (or NATS_URL) is required: the URL of your NATS server, e.g. nats://127.0.0.1:4222")
	}
	if relays, err = relayFlags(relays, env); err != nil {
		return err
	}
	log, err := lf.Logger(stderr)
	if err != nil {
		return err
	}

	srv := &chatserver.Server{
		Domain:             *domain,
		SigServerURL:       *sigServer,
		PublicSigServerURL: *publicSig,
		PublicURL:          *publicURL,
		Relays:             relays,
		NATSURL:            *natsURL,
		StoreBackend:       *backend,
		StoreReplicas:      *replicas,
		RegistryMaxStale:   *maxStale,
		Inbox:              inbox,
		MailLimits:         lim,
		HTTPLimits:         limits,
		DBPath:             *dbPath,
		KeysDir:            *keysDir,
		LoginLimits:        loginLimits,
		LoginWorkers:       loginWorkers,
		Logger:             log,
		Registry:           servercmd.NewRegistry(),
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	log.Info("rate limits", "claims_per_ip", limits.ClaimsPerIP, "claims_per_key", limits.ClaimsPerKey, "reads_per_ip", limits.ReadsPerIP,
		"devices_per_ip", limits.DevicesPerIP, "devices_per_key", limits.DevicesPerKey,
		"trusted_proxies", servercmd.ProxiesString(limits.ClientIP.TrustedProxies))
	defer srv.Close()
	return serve(ctx, srv, *listen, *drainTimeout, log, onListen)
}

// serve serves srv's HTTP API on addr until ctx ends (SIGTERM), then
// drains within drainTimeout: the callout and the gate hand new requests
// to the other replicas and answer those they took, while the HTTP
// server stops accepting and finishes its requests in flight.
func serve(ctx context.Context, srv *chatserver.Server, addr string, drainTimeout time.Duration, log *slog.Logger, onListen func(net.Addr)) error {
	httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHTTP()
	served := make(chan error, 1)
	go func() {
		served <- httpserve.ListenAndServeTimeout(httpCtx, addr, srv.Handler(), log, onListen, drainTimeout)
	}()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Info("draining", "timeout", drainTimeout.String())
	dctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	stopHTTP()
	drained := srv.Drain(dctx)
	return errors.Join(<-served, drained)
}

// relayFlags returns the --relay flags, else the relays of KEZ_RELAYS,
// checked: a bad or repeated address, or more than handles.MaxRelays, is
// a usage error.
func relayFlags(flags []string, env servercmd.Env) ([]string, error) {
	name := "--relay"
	if len(flags) == 0 {
		name = "KEZ_RELAYS"
		for _, r := range strings.Split(env("KEZ_RELAYS"), ",") {
			if r = strings.TrimSpace(r); r != "" {
				flags = append(flags, r)
			}
		}
	}
	if len(flags) > handles.MaxRelays {
		return nil, servercmd.Usagef("%s: %d relays, at most %d", name, len(flags), handles.MaxRelays)
	}
	var out []string
	for _, r := range flags {
		c, err := handles.ParseRelay(r)
		if err != nil {
			return nil, servercmd.Usagef("%s %q: want a relay's multiaddr ending in /p2p/<peer id>, as kez-relay prints it at start", name, r)
		}
		if slices.Contains(out, c) {
			return nil, servercmd.Usagef("%s %q: given twice", name, r)
		}
		out = append(out, c)
	}
	return out, nil
}

// natsConfig prints the nats.conf snippet for the keys folder.
func natsConfig(args []string, env servercmd.Env, stdout, stderr io.Writer) error {
	fs := servercmd.NewFlagSet("kez-chat-server nats-config", "usage: kez-chat-server nats-config [--keys DIR] [--store sqlite|jetstream] [--sig-server-key U…]\n\n"+
		"Prints the nats.conf snippet that sends every NATS login to this chat-server's\n"+
		"auth callout, for the keys in DIR (made on first use, mode 0600). Add it to\n"+
		"your NATS configuration and restart NATS. It holds public keys only. It also\n"+
		"lists your two logins for the nats CLI, DIR/admin.nk (nats account info) and\n"+
		"DIR/system.nk (nats server report), which reach no user's mail.", stderr)
	keysDir := fs.String("keys", env.Or("KEZ_CHAT_KEYS", chatserver.DefaultKeysDir), "folder of the callout keys (env KEZ_CHAT_KEYS)")
	backend := fs.String("store", env.Or("KEZ_CHAT_STORE", chatserver.StoreSQLite), "the chat-server's --store: jetstream gives the callout account JetStream (env KEZ_CHAT_STORE)")
	sigKey := fs.String("sig-server-key", env.Or("KEZ_CHAT_SIG_SERVER_KEY", ""), "NATS key (U…) of a sig-server with --store jetstream, as \"kez-sig-server nats-key\" prints it (env KEZ_CHAT_SIG_SERVER_KEY)")
	if ok, err := servercmd.Parse(fs, args, "nats-config takes flags only"); !ok {
		return err
	}
	if *backend != chatserver.StoreSQLite && *backend != chatserver.StoreJetStream {
		return servercmd.Usagef("nats-config: --store %q: want %s or %s", *backend, chatserver.StoreSQLite, chatserver.StoreJetStream)
	}
	conf, err := chatserver.NATSConfig(*keysDir, callout.ConfigOptions{
		AuthJetStream: *backend == chatserver.StoreJetStream,
		SigServerKey:  *sigKey,
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(stdout, conf)
	return err
}
