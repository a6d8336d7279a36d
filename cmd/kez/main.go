// Command kez is the reference KEZ chat client: identity, contacts,
// messages and peer-to-peer file sharing from a terminal.
//
// Every command is a thin layer over the SDK packages. Run "kez help" for the
// list, "kez help COMMAND" for one command. Every flag has an environment
// twin (KEZ_HOME, KEZ_SERVER, KEZ_SIG_SERVER, NATS_URL, KEZ_P2P_LISTEN);
// flags win.
//
// Exit status: 0 on success, 1 when the command failed, 2 for a usage
// error, 3 when "send --wait" sent the message but no delivery receipt came
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
	"syscall"

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
	e := &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, isTerminal: isTerminal(os.Stdin) && isTerminal(os.Stdout)}
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
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			if c, ok := commands[args[1]]; ok {
				printCommandHelp(e.stdout, c)
				return 0
			}
			fmt.Fprintf(e.stderr, "kez: no command %q; run \"kez help\" for the list\n", args[1])
			return 2
		}
		printHelp(e.stdout)
		return 0
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "kez: no command %q; run \"kez help\" for the list\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("kez "+c.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	runFn := c.flags(fs, e)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(e.stdout, c)
			return 0
		}
		fmt.Fprintf(e.stderr, "kez %s: %v\nusage: kez %s %s\n", c.name, err, c.name, c.args)
		return 2
	}
	if err := runFn(ctx, fs.Args()); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(e.stderr, "kez %s: %v\nusage: kez %s %s\n", c.name, err, c.name, c.args)
			return 2
		}
		fmt.Fprintf(e.stderr, "kez %s: %v\n", c.name, err)
		var xe *exitError
		if errors.As(err, &xe) {
			return xe.code
		}
		return 1
	}
	return 0
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "kez — end-to-end encrypted chat and peer-to-peer file sharing")
	fmt.Fprintln(w, "\nusage: kez COMMAND [flags] [args]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nenvironment: KEZ_HOME, KEZ_SERVER, KEZ_SIG_SERVER, NATS_URL, KEZ_P2P_LISTEN (flags win)")
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
