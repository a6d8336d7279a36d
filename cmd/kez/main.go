// Command kez is the reference KEZ chat client: identity, contacts,
// messages and peer-to-peer file sharing from a terminal.
//
// Every command is a thin layer over the SDK packages. Run "kez help" for the
// list, "kez help COMMAND" for one command; "kez help" also lists the
// environment variables it reads (flags win over them).
//
// Bare "kez" on a terminal, in a state folder that holds keys, opens the
// full-screen client ("kez ui").
//
// Exit status: 0 on success, 1 when the command failed, 2 for a usage
// error (bare "kez" elsewhere included), 3 when "send --wait" sent the message but no delivery receipt came
// before the timeout (so a script must not send it again).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/term"
)

// command is one "kez" subcommand. Each lives in its own cmd_*.go file and
// registers itself in init.
type command struct {
	name    string // as typed
	args    string // argument synopsis, e.g. "HANDLE [TEXT]"
	summary string // one line for "kez help"
	help    string // paragraphs for "kez help NAME"
	// flags declares the command's flags on fs; the returned function runs
	// the command once flags are parsed.
	flags func(fs *flag.FlagSet, e *env) func(ctx context.Context, args []string) error
}

var commands = map[string]*command{}

func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("kez: command registered twice: " + c.name)
	}
	commands[c.name] = c
}

// env is what a command sees of the outside world, so tests can run the CLI
// in-process with their own streams and environment.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	// isTerminal reports whether stdin and stdout are a terminal.
	isTerminal bool
	// stdoutTerminal reports whether stdout is a terminal (what is drawn
	// for eyes only, as the QR code of "kez link", needs no more).
	stdoutTerminal bool
	// now is the clock of progress lines; nil: time.Now.
	now func() time.Time

	// What the command settled so far, for wording its errors: the
	// servers (settleServers) and the NATS URL it logs in to.
	srv     servers
	natsURL string
	// ownChainWarned: the warning of a rewritten own sigchain was shown.
	ownChainWarned atomic.Bool
	// closers are closed when the command ends (closeAll).
	closers []io.Closer
	// relays are the --relay flags of kez serve (see relayList).
	relays stringList
	// maxUploadRate is kez serve's --max-upload-rate (see uploadRate).
	maxUploadRate int64
}

// usageError marks an error caused by how the command was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// Exit statuses other than 0, 1 (failed) and 2 (usage), each documented in
// docs/cli.md.
const (
	// exitNoReceipt: "send --wait" sent the message, but no delivery
	// receipt came before the timeout.
	exitNoReceipt = 3
)

// exitError is a failure with its own exit status, for outcomes a script
// must tell apart from "it failed".
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// home returns the state folder: the flag value, else KEZ_HOME, else the
// user config dir + "/kez".
func (e *env) home(flagValue string) (string, error) {
	if flagValue != "" {
		return flagValue, nil
	}
	if h := e.getenv("KEZ_HOME"); h != "" {
		return h, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no state folder: set KEZ_HOME or pass --home (%v)", err)
	}
	return filepath.Join(dir, "kez"), nil
}

// envOr returns the flag value, else the environment twin.
func (e *env) envOr(flagValue, name string) string {
	if flagValue != "" {
		return flagValue
	}
	return e.getenv(name)
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, isTerminal: isTerminal(os.Stdin) && isTerminal(os.Stdout), stdoutTerminal: isTerminal(os.Stdout)}
	os.Exit(run(ctx, e, os.Args[1:]))
}

// isTerminal reports whether f is an interactive terminal. A character
// device is not enough: /dev/null is one too, and "kez init --yes
// </dev/null" must not wait for a passphrase.
func isTerminal(f *os.File) bool {
	return term.IsTerminal(int(f.Fd()))
}

// run executes one command line and returns the exit status.
func run(ctx context.Context, e *env, args []string) int {
	if len(args) == 0 {
		if !e.isTerminal || !e.homeHoldsKeys() {
			printHelp(e.stderr)
			return 2
		}
		args = []string{"ui"} // bare kez on a terminal, with keys: the UI
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				printCommandHelp(e.stdout, c)
				return 0
			}
			fmt.Fprintf(e.stderr, "kez: there is no command %q; run \"kez help\" for the list\n", args[1])
			return 2
		}
		printHelp(e.stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "kez: there is no command %q; run \"kez help\" for the list\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("kez "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runFn := c.flags(fs, e)
	pos, err := interleaved(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(e.stdout, c)
			return 0
		}
		fmt.Fprintf(e.stderr, "kez %s: %s\nusage: kez %s %s\n", c.name, flagSentence(err), c.name, c.args)
		return 2
	}
	defer e.closeAll()
	if err := runFn(ctx, pos); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(e.stderr, "kez %s: %v\nusage: kez %s %s\n", c.name, err, c.name, c.args)
			return 2
		}
		fmt.Fprintf(e.stderr, "kez %s: %s\n", c.name, e.sentence(err))
		var xe *exitError
		if errors.As(err, &xe) {
			return xe.code
		}
		return 1
	}
	return 0
}

// interleaved parses the flags of a command line wherever they are, before,
// between or after its arguments ("kez whois bob --json", "kez register
// dave --server URL"), and returns the arguments in order. After "--"
// everything is an argument, so a message may start with a dash. run
// parses every command's flags with it; a command that parses a further
// part of its line itself may call it too.
func interleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	return pos, nil
}

// flagSentence words an error of package flag (whose errors are not
// typed, only text) as the CLI speaks: flags with their dashes, a
// sentence that names what is wrong.
func flagSentence(err error) string {
	msg := err.Error()
	dashes := func(name string) string {
		name = strings.TrimLeft(name, "-")
		if len(name) == 1 {
			return "-" + name
		}
		return "--" + name
	}
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
		return fmt.Sprintf("there is no %s flag", dashes(name))
	}
	if name, ok := strings.CutPrefix(msg, "flag needs an argument: "); ok {
		return fmt.Sprintf("%s needs a value", dashes(name))
	}
	if rest, ok := strings.CutPrefix(msg, "invalid value "); ok {
		// invalid value "x" for flag -name: why
		if val, after, ok := strings.Cut(rest, " for flag "); ok {
			name, why, _ := strings.Cut(after, ": ")
			return fmt.Sprintf("%s is not a valid value for %s (%s)", val, dashes(name), why)
		}
	}
	if rest, ok := strings.CutPrefix(msg, "invalid boolean value "); ok {
		if val, after, ok := strings.Cut(rest, " for "); ok {
			name, _, _ := strings.Cut(after, ": ")
			return fmt.Sprintf("%s takes no value (or =true, =false), not %s", dashes(name), val)
		}
	}
	return msg
}

// environment is every variable the CLI reads, for "kez help" and
// docs/cli.md; a test checks that no getenv in the commands is missing.
var environment = []struct{ name, flag, meaning string }{
	{"KEZ_HOME", "--home", "your state folder (default: the user config folder + /kez)"},
	{"KEZ_SERVER", "--server", "your chat-server's base URL (default: your profile's)"},
	{"KEZ_SIG_SERVER", "--sig-server", "the sig-server's base URL (default: the one the chat-server names)"},
	{"KEZ_DOMAIN", "", "your home domain, which completes bare names (default: the chat-server's)"},
	{"KEZ_LOCAL_DOMAINS", "", "handle domains whose servers may be plain http at private addresses, comma-separated"},
	{"KEZ_DNS_SERVER", "", "the DNS server (host:port) asked for the TXT records of dns claims (default: the system's)"},
	{"NATS_URL", "--nats", "your operator's NATS"},
	{"KEZ_P2P_LISTEN", "--listen", "libp2p listen multiaddrs, comma-separated (fetch, serve, ui)"},
	{"KEZ_RELAYS", "--relay", "relays kez serve keeps a slot with, comma-separated multiaddrs, or none (default: the chat-server's)"},
	{"KEZ_MAX_UPLOAD_RATE", "--max-upload-rate", "bytes per second kez serve sends at most, e.g. 2M (default: no cap)"},
	{"KEZ_RESHARE", "--reshare", "1 re-serves the public files you fetched (serve)"},
	{"KEZ_TICKET_LOCAL", "", "1 lets kez fetch TICKET contact this machine or its network (default: public addresses only)"},
	{"KEZ_PASSPHRASE_FILE", "--passphrase-file", "a file whose first line is your identity's passphrase"},
	{"KEZ_PASSPHRASE", "", "the passphrase itself (prefer the file)"},
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "kez — end-to-end encrypted chat and peer-to-peer file sharing")
	fmt.Fprintln(w, "\nusage: kez COMMAND [args] [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nenvironment (a flag given wins over its variable, a variable over your profile):")
	for _, v := range environment {
		fmt.Fprintf(w, "  %-20s %-18s %s\n", v.name, v.flag, v.meaning)
	}
	fmt.Fprintln(w, "\nflags go before or after the arguments; \"--\" ends them.")
	fmt.Fprintln(w, "run \"kez help COMMAND\" for one command's flags")
}

func printCommandHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: kez %s %s\n\n%s\n", c.name, c.args, strings.TrimSpace(c.help))
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.flags(fs, &env{getenv: func(string) string { return "" }})
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nflags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}
