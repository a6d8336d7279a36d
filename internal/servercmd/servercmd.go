// Package servercmd is the command-line plumbing the KEZ server binaries
// (cmd/kez-chat-server, cmd/kez-sig-server) share, so each main.go holds
// only its own flags and parts:
//
//	func main() { servercmd.Main("kez-sig-server", func(ctx context.Context) error { return run(ctx, …) }) }
//
//	env := servercmd.Env(getenv)
//	fs := servercmd.NewFlagSet("kez-sig-server", "usage: kez-sig-server [flags]", stderr)
//	listen := fs.String("listen", env.Or("KEZ_SIG_LISTEN", "127.0.0.1:8081"), "…")
//	var lf servercmd.LogFlags
//	lf.Declare(fs, env, "KEZ_SIG")
//	if ok, err := servercmd.Parse(fs, args, "see --help"); !ok {
//		return err // nil after --help
//	}
//	log, err := lf.Logger(stderr)
//
// [Main] cancels the context on SIGTERM or SIGINT and turns the error into
// an exit status: 0, 2 for a [UsageError], 1 otherwise. Every flag takes its
// default from its environment twin ([Env]); flags win. It holds no global
// state beyond what Main reads from the process.
package servercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Main runs run with a context that is cancelled on SIGTERM or SIGINT (so
// the server shuts down gracefully), then exits the process with the
// status [Report] gives, printing the error on stderr.
func Main(name string, run func(ctx context.Context) error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	err := run(ctx)
	stop()
	os.Exit(Report(os.Stderr, name, err))
}

// Report writes a non-nil err to w as "name: err" and returns the exit
// status: 0 for nil, 2 for a [UsageError] in err's chain, 1 otherwise.
func Report(w io.Writer, name string, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(w, name+":", err)
	if errors.As(err, new(UsageError)) {
		return 2
	}
	return 1
}

// UsageError marks an error in how the program was called (a bad flag, a
// missing setting): [Report] gives exit status 2 for it.
type UsageError struct{ Err error }

// Error is the wrapped error's text.
func (e UsageError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e UsageError) Unwrap() error { return e.Err }

// Usagef returns a [UsageError] with a formatted message (%w wraps).
func Usagef(format string, a ...any) error { return UsageError{fmt.Errorf(format, a...)} }

// Env is the program's environment, e.g. os.Getenv: the environment twins
// the flags take their defaults from.
type Env func(name string) string

// Or returns the variable name, or def if it is empty or unset.
func (e Env) Or(name, def string) string {
	if v := e(name); v != "" {
		return v
	}
	return def
}

// Int sets *v from the variable name unless the flag flagName was given on
// the command line (flags win) or the variable is empty. Call it after
// parsing. A value that is not a number is a [UsageError].
func (e Env) Int(fs *flag.FlagSet, flagName, name string, v *int) error {
	return envValue(e, fs, flagName, name, v, strconv.Atoi, "a number")
}

// envValue sets *v from the variable name, read with parse, unless the
// flag flagName was given or the variable is empty; a value parse refuses
// is a [UsageError] saying it wants want.
func envValue[T any](e Env, fs *flag.FlagSet, flagName, name string, v *T, parse func(string) (T, error), want string) error {
	s := e(name)
	if given(fs, flagName) || s == "" {
		return nil
	}
	x, err := parse(s)
	if err != nil {
		return Usagef("%s %q: want %s", name, s, want)
	}
	*v = x
	return nil
}

// Bool is [Env.Int] for a bool flag (strconv.ParseBool's values).
func (e Env) Bool(fs *flag.FlagSet, flagName, name string, v *bool) error {
	return envValue(e, fs, flagName, name, v, strconv.ParseBool, "true or false")
}

// Float is [Env.Int] for a float64 flag.
func (e Env) Float(fs *flag.FlagSet, flagName, name string, v *float64) error {
	s := e(name)
	if given(fs, flagName) || s == "" {
		return nil
	}
	n, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return Usagef("%s %q: want a number", name, s)
	}
	*v = n
	return nil
}

// given reports whether the flag flagName was set on the command line.
func given(fs *flag.FlagSet, flagName string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == flagName })
	return found
}

// NewFlagSet returns a flag set named name that reports its errors, and
// for -h or --help usage followed by the flags, on stderr.
func NewFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "%s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses args into fs, which takes flags only. It returns ok=true
// when the program should go on; ok=false with a nil error after -h or
// --help (the usage was printed: exit 0); and a [UsageError] for a bad
// flag, or for arguments left after the flags (its message ends with hint,
// e.g. "the only subcommand is nats-key; see --help").
func Parse(fs *flag.FlagSet, args []string, hint string) (ok bool, err error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, nil
		}
		return false, UsageError{err}
	}
	if fs.NArg() > 0 {
		return false, Usagef("unexpected arguments %q; %s", fs.Args(), hint)
	}
	return true, nil
}

// LogFlags are the --log-format (text or json) and --log-level (debug,
// info, warn or error) flags of a server.
type LogFlags struct {
	Format, Level string
}

// Declare declares the flags on fs, with defaults from the environment
// twins prefix+"_LOG_FORMAT" and prefix+"_LOG_LEVEL" (else text and info).
func (l *LogFlags) Declare(fs *flag.FlagSet, env Env, prefix string) {
	fs.StringVar(&l.Format, "log-format", env.Or(prefix+"_LOG_FORMAT", "text"), "log format: text or json (env "+prefix+"_LOG_FORMAT)")
	fs.StringVar(&l.Level, "log-level", env.Or(prefix+"_LOG_LEVEL", "info"), "log level: debug, info, warn or error (env "+prefix+"_LOG_LEVEL)")
}

// Logger returns the structured logger the flags ask for, writing to w. An
// unknown format or level is a [UsageError].
func (l *LogFlags) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, Usagef("--log-format %q: want text or json", l.Format)
}

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors, for a server's /metrics.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
