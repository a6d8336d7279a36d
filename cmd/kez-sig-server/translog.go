package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/kez-lat/kez-chat/internal/servercmd"
	"github.com/kez-lat/kez-chat/translog/logserver"
	"github.com/prometheus/client_golang/prometheus"
)

// logFlags are the flags of the transparency log (docs/operators.md,
// "Transparency log").
type logFlags struct {
	dir, key, origin string
	off              bool
	interval         time.Duration
}

// defaultLogKey is the key file's name inside the log folder.
const defaultLogKey = "log.key"

func (f *logFlags) declare(fs *flag.FlagSet, env servercmd.Env) {
	fs.StringVar(&f.dir, "log-dir", env("KEZ_SIG_LOG_DIR"), "folder of the transparency log of every link; default the --db file's name + \".log\"; required with --store jetstream to keep a log (env KEZ_SIG_LOG_DIR)")
	fs.BoolVar(&f.off, "no-log", false, "keep no transparency log (env KEZ_SIG_NO_LOG)")
	fs.StringVar(&f.key, "log-key", env("KEZ_SIG_LOG_KEY"), "file of the log's signing key, made on first start (mode 0600); default log.key in the log folder (env KEZ_SIG_LOG_KEY)")
	fs.StringVar(&f.origin, "log-origin", env("KEZ_SIG_LOG_ORIGIN"), "the log's origin, the name of its key, for a new key; default the first --group-domains value (or localhost) + \"/sigchain-log\" (env KEZ_SIG_LOG_ORIGIN)")
	fs.DurationVar(&f.interval, "log-checkpoint-interval", logserver.DefaultCheckpointInterval, "how often the log publishes a checkpoint; an append waits for the next (env KEZ_SIG_LOG_CHECKPOINT_INTERVAL)")
}

// parse reads the environment twins the flag package cannot (flags win)
// and checks the values.
func (f *logFlags) parse(fs *flag.FlagSet, env servercmd.Env) error {
	if err := env.Bool(fs, "no-log", "KEZ_SIG_NO_LOG", &f.off); err != nil {
		return err
	}
	if err := env.Duration(fs, "log-checkpoint-interval", "KEZ_SIG_LOG_CHECKPOINT_INTERVAL", &f.interval); err != nil {
		return err
	}
	if f.interval < logserver.MinCheckpointInterval {
		return servercmd.Usagef("--log-checkpoint-interval %v: want at least %v", f.interval, logserver.MinCheckpointInterval)
	}
	return nil
}

// open opens the log the flags say, or returns nil when the server keeps
// none: --no-log, or --store jetstream without --log-dir.
func (f *logFlags) open(ctx context.Context, backend, dbPath string, domains []string, log *slog.Logger, reg prometheus.Registerer) (*logserver.Log, error) {
	if f.off {
		log.Info("no transparency log (--no-log)")
		return nil, nil
	}
	dir := f.dir
	if dir == "" {
		if backend != storeSQLite { // an unknown store is refused next
			if backend == storeJetStream {
				log.Warn("no transparency log: with --store jetstream, give one replica --log-dir (or say --no-log)")
			}
			return nil, nil
		}
		dir = dbPath + ".log"
	}
	keyFile := f.key
	if keyFile == "" {
		keyFile = filepath.Join(dir, defaultLogKey)
	}
	origin := f.origin
	if origin == "" {
		origin = "localhost"
		if len(domains) > 0 {
			origin = domains[0]
		}
		origin += "/sigchain-log"
		// An existing key keeps its name: the default names only a new one.
		if _, err := os.Stat(keyFile); err == nil {
			origin = ""
		}
	}
	signer, _, err := logserver.LoadOrCreateKey(keyFile, origin)
	if errors.Is(err, logserver.ErrBadKey) {
		return nil, servercmd.Usagef("--log-key %s: %v", keyFile, err)
	}
	if err != nil {
		return nil, err
	}
	lg, err := logserver.Open(ctx, logserver.Config{Dir: dir, Signer: signer, CheckpointInterval: f.interval, Logger: log, Registerer: reg})
	if errors.Is(err, logserver.ErrKeyMismatch) {
		return nil, fmt.Errorf("the transparency log in %s was signed by another key than the one in %s; a log's key must never change, so give the key it was made with (--log-key): %w", dir, keyFile, err)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the transparency log in %s: %w", dir, err)
	}
	info := lg.Info()
	log.Info("transparency log open", "dir", dir, "origin", info.Origin, "key", info.Key, "checkpoint_interval", f.interval)
	return lg, nil
}
