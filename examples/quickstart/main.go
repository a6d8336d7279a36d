// Command quickstart is KEZ chat in one run: it starts a dev stack on this
// machine (the real NATS server with the auth callout, a chat-server and a
// sig-server, in a temporary folder), then plays alice and bob (and carol,
// who only looks) through the SDK: identities, registration, contacts with
// pinned keys, messages both ways (one while bob is offline, with its
// delivery receipt), and files shared publicly and privately, browsed and
// fetched peer to peer.
//
//	go run ./examples/quickstart
//
// It prints a short transcript, removes everything it made, and exits 0,
// or 1 naming the step that failed. NATS runs inside the program (the
// version pinned in go.mod), so nothing else needs installing.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

func main() {
	// The dev stack's sig-server keeps a transparency log with tessera,
	// which logs through klog; the transcript is the quickstart's output.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "\nquickstart failed:", err)
		os.Exit(1)
	}
}

// run plays the whole quickstart, writing the transcript to out.
func run(ctx context.Context, out io.Writer) error {
	return play(ctx, out, options{})
}

// options are the knobs a test turns; the zero value is what "go run" does.
type options struct {
	natsServer string // a nats-server binary to run as a process; "" runs NATS in this process
	tempRoot   string // where the temporary folder is made; "" means os.TempDir()
}

// step is one numbered part of the transcript.
type step struct {
	title string
	do    func(q *quick, ctx context.Context) error
}

var steps = []step{
	{"Start the dev stack", (*quick).startStack},
	{"alice, bob and carol make their identities", (*quick).makeIdentities},
	{"They register their handles", (*quick).register},
	{"They add each other as contacts (resolve, verify the sigchain, pin the key)", (*quick).addContacts},
	{"They chat", (*quick).chat},
	{"bob is offline; alice writes anyway", (*quick).offline},
	{"alice shares two files: one public, one only for bob", (*quick).share},
	{"bob and carol browse alice's files", (*quick).browse},
	{"bob fetches both files from alice, peer to peer", (*quick).fetch},
}

// play runs the steps in order and stops at the first failure. Whatever
// happens, it stops what it started and removes the temporary folder.
func play(ctx context.Context, out io.Writer, o options) (err error) {
	start := time.Now()
	q := &quick{out: out, opts: o}
	defer func() {
		if cerr := q.cleanup(); cerr != nil && err == nil {
			err = fmt.Errorf("cleaning up: %w", cerr)
		}
		if err == nil {
			q.say("\nDone in %.1fs: NATS stopped, servers stopped, temporary files removed.\n", time.Since(start).Seconds())
		}
	}()
	q.say("KEZ chat quickstart: a dev stack and three users, alice, bob and carol, on this machine.\n")
	for i, s := range steps {
		q.say("\n[%d/%d] %s\n", i+1, len(steps), s.title)
		if err := s.do(q, ctx); err != nil {
			return fmt.Errorf("step %d/%d (%s): %w", i+1, len(steps), s.title, err)
		}
	}
	return nil
}
