// Command devstack runs a KEZ deployment on this machine for development:
// the real NATS server (go tool nats-server, the version pinned in go.mod)
// with the chat-server's auth callout configured, a sig-server and a
// chat-server, all on free loopback ports, with their state in DIR.
//
//	go run ./examples/devstack --dir DIR     # from the module root; runs until Ctrl-C or SIGTERM
//
// Once everything is ready it writes DIR/env, one "export NAME=value" line
// each for NATS_URL, KEZ_SERVER, KEZ_SIG_SERVER and KEZ_DOMAIN, so that
// ". DIR/env" prepares a shell for the kez CLI. On SIGINT or SIGTERM it
// stops everything it started, removes DIR/env and exits 0. The state
// (keys, databases, the NATS store) stays in DIR for the next run.
//
// Flags: --dir DIR (required), --domain (the handle domain, default
// kez.test), --nats-server PATH (a nats-server binary instead of go tool).
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
	natsBin := fs.String("nats-server", "", "nats-server binary to run (default: go tool nats-server, from the module)")
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
		fmt.Fprintln(stderr, "devstack:", err)
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

Ctrl-C stops everything (the state stays for the next run).
`, st.Dir, st.NATSURL, st.NATSCommand, filepath.Join(st.Dir, devstack.NATSLogFile),
		st.ServerURL, st.Domain, filepath.Join(st.Dir, devstack.ServerLog), st.SigServerURL, env, filepath.Join(st.Dir, "alice"))
}
