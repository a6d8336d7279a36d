// Command kez-sig-server is the reference KEZ sig-server: it stores users'
// sigchains and their signed prekeys in a SQLite file, or in the
// operator's NATS JetStream so that several replicas share them, and
// serves them over HTTP, verifying every appended link and published
// prekey (docs/spec/sigchain.md §9).
//
//	kez-sig-server [--listen 127.0.0.1:8081] [--store sqlite|jetstream] [--db kez-sig.db]
//	               [--nats URL] [--nats-key kez-sig-nats.nk] [--replicas 1]
//	               [--log-format text|json] [--log-level info]
//	               [--appends-per-ip 600/1h] [--chains-per-ip 10/1h] [--appends-per-key 120/1h]
//	               [--reads-per-ip 1200/1m] [--max-chain-links 4096] [--max-chain-bytes 4194304]
//	               [--prekeys-per-ip 600/1h] [--prekeys-per-key 30/1h] [--prekey-reads-per-ip 1200/1m]
//	               [--link-requests-per-ip 30/1h] [--link-reads-per-ip 300/1m] [--device-reads-per-ip 1200/1m]
//	               [--max-pending-link-requests 10000]
//	               [--group-appends-per-ip 600/1h] [--group-reads-per-ip 1200/1m] [--groups-per-key 64]
//	               [--group-domains DOMAIN,…]
//	               [--log-dir DIR] [--no-log] [--log-key FILE] [--log-origin ORIGIN]
//	               [--log-checkpoint-interval 100ms] [--log-reads-per-ip 1200/1m]
//	               [--orphan-ttl 24h] [--gc-interval 1h] [--trusted-proxies ADDR,…] [--limit-max-keys 50000]
//	               [--drain-timeout 10s]
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
// KEZ_SIG_APPENDS_PER_IP, KEZ_SIG_CHAINS_PER_IP, KEZ_SIG_APPENDS_PER_KEY,
// KEZ_SIG_READS_PER_IP, KEZ_SIG_MAX_CHAIN_LINKS, KEZ_SIG_MAX_CHAIN_BYTES,
// KEZ_SIG_PREKEYS_PER_IP, KEZ_SIG_PREKEYS_PER_KEY, KEZ_SIG_PREKEY_READS_PER_IP,
// KEZ_SIG_LINK_REQUESTS_PER_IP, KEZ_SIG_LINK_READS_PER_IP,
// KEZ_SIG_DEVICE_READS_PER_IP, KEZ_SIG_MAX_PENDING_LINK_REQUESTS,
// KEZ_SIG_GROUP_APPENDS_PER_IP, KEZ_SIG_GROUP_READS_PER_IP,
// KEZ_SIG_GROUPS_PER_KEY, KEZ_SIG_GROUP_DOMAINS, KEZ_SIG_LOG_DIR,
// KEZ_SIG_NO_LOG, KEZ_SIG_LOG_KEY, KEZ_SIG_LOG_ORIGIN,
// KEZ_SIG_LOG_CHECKPOINT_INTERVAL, KEZ_SIG_LOG_READS_PER_IP,
// KEZ_SIG_ORPHAN_TTL, KEZ_SIG_GC_INTERVAL, KEZ_SIG_DRAIN_TIMEOUT, KEZ_SIG_TRUSTED_PROXIES,
// KEZ_SIG_LIMIT_MAX_KEYS, KEZ_SIG_LOG_FORMAT, KEZ_SIG_LOG_LEVEL); flags
// win. Requests over the rate limits are refused with 429 and
// Retry-After, appends past a chain's caps with 413; chains that never
// named a handle are deleted after --orphan-ttl (docs/operators.md,
// "Limits"). Beside the chain API it serves the groups' membership
// chains (package group, docs/spec/group.md §7) from the same store, and
// it serves /healthz, /readyz and Prometheus /metrics, and shuts down
// gracefully on SIGTERM or SIGINT: it stops accepting connections and
// finishes the requests in flight (an append is stored and answered)
// within --drain-timeout, so replicas sharing a JetStream store can be
// restarted one at a time.
//
// It logs every link it stores in a transparency log (package
// translog/logserver, docs/spec/translog.md) in --log-dir (default the
// --db file's name + ".log"; with --store jetstream only when given), signed
// with the key in --log-key (made on first start), and serves its
// /v1/info, checkpoints, tiles and consistency proofs; --no-log turns it
// off.
package main

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/httpserve"
	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/kez-lat/kez-chat/ratelimit"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/kez-lat/kez-chat/translog/logserver"
	"k8s.io/klog/v2"
)

// routeLibraryLog, set by main only, hands the server's logger to the
// libraries that log through a process-wide logger of their own
// (tessera's klog), so that their lines come in the server's format.
// Tests run the server in process and leave it nil: setting that global
// logger is not safe while other goroutines log.
var routeLibraryLog func(*slog.Logger)

func main() {
	routeLibraryLog = klog.SetSlogLogger
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
	var limits sigchain.Limits
	var glimits group.Limits
	d, gd := sigchain.DefaultLimits, group.DefaultLimits
	limitFlags := []servercmd.LimitFlag{
		{Name: "appends-per-ip", Env: "KEZ_SIG_APPENDS_PER_IP", Limit: &limits.AppendsPerIP, Default: d.AppendsPerIP, Usage: "links one client address may send"},
		{Name: "chains-per-ip", Env: "KEZ_SIG_CHAINS_PER_IP", Limit: &limits.ChainsPerIP, Default: d.ChainsPerIP, Usage: "new chains one client address may start"},
		{Name: "appends-per-key", Env: "KEZ_SIG_APPENDS_PER_KEY", Limit: &limits.AppendsPerKey, Default: d.AppendsPerKey, Usage: "links stored in one chain, counting valid new links only"},
		{Name: "reads-per-ip", Env: "KEZ_SIG_READS_PER_IP", Limit: &limits.ReadsPerIP, Default: d.ReadsPerIP, Usage: "chain reads one client address may send"},
		{Name: "prekeys-per-ip", Env: "KEZ_SIG_PREKEYS_PER_IP", Limit: &limits.PrekeysPerIP, Default: d.PrekeysPerIP, Usage: "prekey records one client address may send"},
		{Name: "prekeys-per-key", Env: "KEZ_SIG_PREKEYS_PER_KEY", Limit: &limits.PrekeysPerKey, Default: d.PrekeysPerKey, Usage: "prekey records stored for one key, counting valid new records only"},
		{Name: "prekey-reads-per-ip", Env: "KEZ_SIG_PREKEY_READS_PER_IP", Limit: &limits.PrekeyReadsPerIP, Default: d.PrekeyReadsPerIP, Usage: "prekey reads one client address may send"},
		{Name: "link-requests-per-ip", Env: "KEZ_SIG_LINK_REQUESTS_PER_IP", Limit: &limits.LinkRequestsPerIP, Default: d.LinkRequestsPerIP, Usage: "device link requests one client address may send"},
		{Name: "link-reads-per-ip", Env: "KEZ_SIG_LINK_READS_PER_IP", Limit: &limits.LinkReadsPerIP, Default: d.LinkReadsPerIP, Usage: "link request reads (by code) one client address may send"},
		{Name: "device-reads-per-ip", Env: "KEZ_SIG_DEVICE_READS_PER_IP", Limit: &limits.DeviceReadsPerIP, Default: d.DeviceReadsPerIP, Usage: "device index reads one client address may send"},
		{Name: "group-appends-per-ip", Env: "KEZ_SIG_GROUP_APPENDS_PER_IP", Limit: &glimits.AppendsPerIP, Default: gd.AppendsPerIP, Usage: "group links one client address may send"},
		{Name: "group-reads-per-ip", Env: "KEZ_SIG_GROUP_READS_PER_IP", Limit: &glimits.ReadsPerIP, Default: gd.ReadsPerIP, Usage: "group chain reads one client address may send"},
	}
	maxLinks := fs.Int("max-chain-links", d.MaxLinks, "links one chain may hold; -1: no cap (env KEZ_SIG_MAX_CHAIN_LINKS)")
	maxBytes := fs.Int("max-chain-bytes", int(d.MaxBytes), "bytes one chain's links may take together; -1: no cap (env KEZ_SIG_MAX_CHAIN_BYTES)")
	maxPending := fs.Int("max-pending-link-requests", d.MaxPendingLinkRequests, "device link requests stored and not expired, from all addresses; -1: no cap (env KEZ_SIG_MAX_PENDING_LINK_REQUESTS)")
	groupsPerKey := fs.Int("groups-per-key", gd.GroupsPerKey, "groups one person may create here; -1: no cap (env KEZ_SIG_GROUPS_PER_KEY)")
	groupDomains := fs.String("group-domains", env.Or("KEZ_SIG_GROUP_DOMAINS", ""), "comma-separated handle domains whose groups this server keeps; empty: the domain of each creator's handle here (env KEZ_SIG_GROUP_DOMAINS)")
	orphanTTL := fs.Duration("orphan-ttl", 24*time.Hour, "delete chains that never named a handle this long after they were started; 0: never (env KEZ_SIG_ORPHAN_TTL)")
	gcInterval := fs.Duration("gc-interval", time.Hour, "how often to look for such chains (env KEZ_SIG_GC_INTERVAL)")
	drainTimeout := fs.Duration("drain-timeout", httpserve.ShutdownTimeout, "on SIGTERM, the longest to wait for the requests in flight (appends finish) (env KEZ_SIG_DRAIN_TIMEOUT)")
	logReads := servercmd.LimitFlag{Name: "log-reads-per-ip", Env: "KEZ_SIG_LOG_READS_PER_IP", Limit: new(ratelimit.Limit), Default: logserver.DefaultLimits.ReadsPerIP, Usage: "transparency log reads (/v1/info, /v1/log/…) one client address may send"}
	limitFlags = append(limitFlags, logReads)
	servercmd.DeclareLimits(fs, limitFlags)
	var tf logFlags
	tf.declare(fs, env)
	var cf servercmd.ClientIPFlags
	cf.Declare(fs, env, "KEZ_SIG")
	var lf servercmd.LogFlags
	lf.Declare(fs, env, "KEZ_SIG")
	if ok, err := servercmd.Parse(fs, args, "the only subcommand is nats-key; see --help"); !ok {
		return err
	}
	if err := env.Int(fs, "replicas", "KEZ_SIG_REPLICAS", replicas); err != nil {
		return err
	}
	if err := env.Limits(fs, limitFlags); err != nil {
		return err
	}
	if err := parseCaps(fs, env, &limits, maxLinks, maxBytes, maxPending, orphanTTL, gcInterval); err != nil {
		return err
	}
	domains, err := parseGroups(fs, env, &glimits, groupsPerKey, *groupDomains)
	if err != nil {
		return err
	}
	if err := tf.parse(fs, env); err != nil {
		return err
	}
	if err := env.Duration(fs, "drain-timeout", "KEZ_SIG_DRAIN_TIMEOUT", drainTimeout); err != nil {
		return err
	}
	if *drainTimeout <= 0 {
		return servercmd.Usagef("--drain-timeout %v: want a positive duration", *drainTimeout)
	}
	if limits.ClientIP, limits.MaxTracked, err = cf.Parse(fs); err != nil {
		return err
	}
	logLimits := logserver.Limits{ReadsPerIP: *logReads.Limit, ClientIP: limits.ClientIP, MaxTracked: limits.MaxTracked}
	glimits.ClientIP, glimits.MaxTracked = limits.ClientIP, limits.MaxTracked
	log, err := lf.Logger(stderr)
	if err != nil {
		return err
	}
	if routeLibraryLog != nil {
		routeLibraryLog(log)
	}

	reg := servercmd.NewRegistry()
	lg, err := tf.open(ctx, *backend, *dbPath, domains, log, reg)
	if err != nil {
		return err
	}
	sc := storeConfig{backend: *backend, dbPath: *dbPath, natsURL: *natsURL, natsKey: *natsKey, replicas: *replicas, limits: limits, groupLimits: glimits, groupDomains: domains}
	if lg != nil {
		// Closed last, once the HTTP server has stopped: every append it
		// took is published.
		defer lg.Close(context.WithoutCancel(ctx))
		sc.linkLog = lg
	}
	storeCtx, stopStore := context.WithCancel(ctx)
	defer stopStore()
	chains, err := openChains(storeCtx, sc, log)
	if err != nil {
		return err
	}
	defer chains.close()

	logH := lg.Handler(logLimits) // a nil lg: /v1/info says there is no log
	gc := &collector{chains: chains, ttl: *orphanTTL, interval: *gcInterval, now: time.Now, log: log}
	sw := &sweeper{chains: chains, interval: linkSweepInterval, now: time.Now, log: log}
	registerMetrics(reg, chains, gc, sw, logH.Stats)
	if *orphanTTL > 0 {
		go gc.run(storeCtx)
	}
	go sw.run(storeCtx)
	ready := chains.ready
	if lg != nil {
		ready = func(ctx context.Context) error {
			if err := chains.ready(ctx); err != nil {
				return err
			}
			return lg.Ready(ctx)
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/", chains.handler)
	mux.Handle(logserver.InfoPath, logH)
	mux.Handle(logserver.LogPath, logH)
	h := httpserve.Wrap(mux, httpserve.Options{Ready: ready, Registry: reg, Logger: log})
	log.Info("limits", "appends_per_ip", limits.AppendsPerIP, "chains_per_ip", limits.ChainsPerIP, "appends_per_key", limits.AppendsPerKey,
		"reads_per_ip", limits.ReadsPerIP, "max_chain_links", limits.MaxLinks, "max_chain_bytes", limits.MaxBytes,
		"prekeys_per_ip", limits.PrekeysPerIP, "prekeys_per_key", limits.PrekeysPerKey, "prekey_reads_per_ip", limits.PrekeyReadsPerIP,
		"link_requests_per_ip", limits.LinkRequestsPerIP, "link_reads_per_ip", limits.LinkReadsPerIP, "device_reads_per_ip", limits.DeviceReadsPerIP,
		"max_pending_link_requests", limits.MaxPendingLinkRequests,
		"group_appends_per_ip", glimits.AppendsPerIP, "group_reads_per_ip", glimits.ReadsPerIP, "groups_per_key", glimits.GroupsPerKey,
		"group_domains", strings.Join(domains, ","),
		"log_reads_per_ip", logH.Limits().ReadsPerIP,
		"orphan_ttl", *orphanTTL, "trusted_proxies", servercmd.ProxiesString(limits.ClientIP.TrustedProxies))
	if *backend == storeJetStream {
		log.Info("kez-sig-server starting", "store", *backend, "nats", natsconn.RedactURL(*natsURL), "nats_key", *natsKey)
	} else {
		log.Info("kez-sig-server starting", "store", *backend, "db", *dbPath)
	}
	return httpserve.ListenAndServeTimeout(ctx, *listen, h, log, onListen, *drainTimeout)
}

// parseGroups reads the environment twin of --groups-per-key (the flag
// wins), checks it and the domains of --group-domains, and returns those.
func parseGroups(fs *flag.FlagSet, env servercmd.Env, l *group.Limits, perKey *int, domains string) ([]string, error) {
	if err := env.Int(fs, "groups-per-key", "KEZ_SIG_GROUPS_PER_KEY", perKey); err != nil {
		return nil, err
	}
	if *perKey == 0 || *perKey < -1 {
		return nil, servercmd.Usagef("--groups-per-key %d: want a positive number, or -1 for no cap", *perKey)
	}
	l.GroupsPerKey = *perKey
	var out []string
	for d := range strings.SplitSeq(domains, ",") {
		if d = strings.TrimSpace(d); d == "" {
			continue
		}
		h, err := handles.Rules{AllowLocal: true}.Parse("kez@" + d)
		if err != nil || h.Domain != d {
			return nil, servercmd.Usagef("--group-domains: %q is not a handle domain in lower case", d)
		}
		out = append(out, d)
	}
	return out, nil
}

// parseCaps reads the environment twins of the caps and the collection
// (flags win) and checks the values.
func parseCaps(fs *flag.FlagSet, env servercmd.Env, l *sigchain.Limits, maxLinks, maxBytes, maxPending *int, orphanTTL, gcInterval *time.Duration) error {
	for _, f := range []struct {
		flag, env string
		v         *int
	}{{"max-chain-links", "KEZ_SIG_MAX_CHAIN_LINKS", maxLinks}, {"max-chain-bytes", "KEZ_SIG_MAX_CHAIN_BYTES", maxBytes},
		{"max-pending-link-requests", "KEZ_SIG_MAX_PENDING_LINK_REQUESTS", maxPending}} {
		if err := env.Int(fs, f.flag, f.env, f.v); err != nil {
			return err
		}
		if *f.v == 0 || *f.v < -1 {
			return servercmd.Usagef("--%s %d: want a positive number, or -1 for no cap", f.flag, *f.v)
		}
	}
	if *maxBytes > 0 && *maxBytes < sigchain.MaxLinkSize {
		return servercmd.Usagef("--max-chain-bytes %d: want at least %d, the size of one link", *maxBytes, sigchain.MaxLinkSize)
	}
	l.MaxLinks, l.MaxBytes, l.MaxPendingLinkRequests = *maxLinks, int64(*maxBytes), *maxPending
	if err := env.Duration(fs, "orphan-ttl", "KEZ_SIG_ORPHAN_TTL", orphanTTL); err != nil {
		return err
	}
	if err := env.Duration(fs, "gc-interval", "KEZ_SIG_GC_INTERVAL", gcInterval); err != nil {
		return err
	}
	if *orphanTTL < 0 || *gcInterval <= 0 {
		return servercmd.Usagef("--orphan-ttl %v, --gc-interval %v: want a TTL of 0 (never) or more and a positive interval", *orphanTTL, *gcInterval)
	}
	return nil
}
