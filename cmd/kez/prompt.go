package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// errInterrupted ends a prompt the user stopped with Ctrl-C.
var errInterrupted = errors.New("interrupted, so nothing was changed")

// interruptible prints a prompt (prompt) and returns what read (a
// blocking read of standard input) returns, or errInterrupted as soon as
// the process gets SIGINT (Ctrl-C) or SIGTERM after the prompt was
// printed. main catches these signals for the command's context, which
// cannot stop a read that waits for a line: without this a prompt would
// ignore Ctrl-C. The signals are watched before the prompt is printed, so
// a Ctrl-C the user presses on seeing it is never missed. An interrupted
// read goes on in the background and its result is dropped: the command
// is about to end.
func interruptible[T any](prompt func(), read func() (T, error)) (T, error) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	prompt()
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := read()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-sig:
		var zero T
		return zero, errInterrupted
	}
}

// askLine prints a prompt to w and reads one line of the answer, giving up
// on Ctrl-C.
func askLine(w io.Writer, in *bufio.Reader, format string, a ...any) (string, error) {
	return interruptible(func() { fmt.Fprintf(w, format, a...) }, func() (string, error) { return in.ReadString('\n') })
}
