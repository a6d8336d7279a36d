// Command devstack runs a KEZ deployment on this machine for development:
// the real NATS server (the version pinned in go.mod, inside this program)
// with the chat-server's auth callout configured, a sig-server and a
// chat-server, all on loopback ports, with their state in DIR.
//
//	go run ./examples/devstack --dir DIR     # runs until Ctrl-C or SIGTERM
//
// Built, the program runs from any folder; it needs neither the module nor
// the go command. Once everything is ready it writes DIR/env, one
// "export NAME=value" line each for NATS_URL, KEZ_SERVER, KEZ_SIG_SERVER
// and KEZ_DOMAIN, so that ". DIR/env" prepares a shell for the kez CLI. On
// SIGINT or SIGTERM it stops everything it started, removes DIR/env and
// exits 0. The state (keys, databases, the NATS store) stays in DIR for
// the next run.
//
// The first run picks free ports and keeps them in DIR/ports.json; later
// runs on the same DIR listen on the same ports, so a kez profile made
// against one run keeps working after a restart. If another program holds
// one of them now, it says which and exits 1.
//
// Flags: --dir DIR (required), --domain (the handle domain, default
// kez.test), --nats-server PATH (run this nats-server binary as a process
// instead).
//
// This is for development only; docs/operators.md is the production
// recipe.
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
	"strings"
	"syscall"

	"github.com/kez-lat/kez-chat/internal/testenv/devstack"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "state folder: keys, databases, NATS store, logs and the env file (required)")
	domain := fs.String("domain", devstack.DefaultDomain, "handle domain the chat-server registers")
	natsBin := fs.String("nats-server", "", "nats-server binary to run as a process (default: NATS runs inside this program)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: go run ./examples/devstack --dir DIR [--domain kez.test] [--nats-server PATH]\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *dir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "devstack: give the state folder with --dir DIR (and nothing else)")
		fs.Usage()
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, err := devstack.Start(ctx, devstack.Config{
		Dir:        *dir,
		Domain:     *domain,
		NATSServer: *natsBin,
		Progress:   func(msg string) { fmt.Fprintln(stdout, "devstack:", msg) },
	})
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(stderr, "devstack: stopped while starting")
			return 0
		}
		fmt.Fprintln(stderr, "devstack:", sentence(err, *dir))
		return 1
	}
	printSummary(stdout, st)

	code := 0
	select {
	case <-ctx.Done():
		fmt.Fprintln(stdout, "devstack: stopping…")
	case <-st.NATSExited():
		fmt.Fprintf(stderr, "devstack: NATS exited unexpectedly; see %s\n", filepath.Join(st.Dir, devstack.NATSLogFile))
		code = 1
	}
	if err := st.Close(); err != nil {
		fmt.Fprintln(stderr, "devstack:", err)
		code = 1
	}
	if code == 0 {
		fmt.Fprintln(stdout, "devstack: stopped")
	}
	return code
}

// sentence words a start error for the person at the terminal.
func sentence(err error, dir string) string {
	ports := filepath.Join(dir, devstack.PortsFile)
	var pe *devstack.PortError
	switch {
	case errors.As(err, &pe):
		return fmt.Sprintf("the %s port %d, kept in %s from an earlier run, is taken by another program (%v). "+
			"Stop that program (another dev stack on the same --dir?), or delete %s to start on new ports; "+
			"kez profiles made against the old ports then need the new URLs from the env file.",
			pe.Service, pe.Port, ports, pe.Err, ports)
	case errors.Is(err, devstack.ErrBadPorts):
		return fmt.Sprintf("%s; delete %s to start on new ports.", strings.TrimPrefix(err.Error(), "devstack: "), ports)
	}
	return strings.TrimPrefix(err.Error(), "devstack: ")
}

func printSummary(w io.Writer, st *devstack.Stack) {
	env := filepath.Join(st.Dir, devstack.EnvFile)
	fmt.Fprintf(w, `
KEZ dev stack is ready. State: %s

  NATS         %s   (%s; log %s)
  chat-server  %s   (handles are @NAME@%s; log %s)
  sig-server   %s

In another shell:

  . %s
  export KEZ_HOME=%s      # one state folder per user
  go run ./cmd/kez init --yes
  go run ./cmd/kez register alice
  go run ./cmd/kez whois alice

Ctrl-C stops everything (the state stays for the next run, which uses
the same ports: they are kept in %s).
`, st.Dir, st.NATSURL, st.NATSCommand, filepath.Join(st.Dir, devstack.NATSLogFile),
		st.ServerURL, st.Domain, filepath.Join(st.Dir, devstack.ServerLog), st.SigServerURL, env, filepath.Join(st.Dir, "alice"),
		filepath.Join(st.Dir, devstack.PortsFile))
}
