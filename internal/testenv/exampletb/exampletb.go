// Package exampletb lets a testable example, which has no *testing.T,
// start the harnesses that take a testing.TB (natstest, stacktest): a
// [TB] keeps its own temporary folders and cleanups, runs them at
// [TB.Close], and panics on a fatal failure (the example then fails with
// the message).
//
//	tb := exampletb.New()
//	defer tb.Close()
//	srv := natstest.Run(tb, conf)
package exampletb

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
)

// TB implements the testing.TB methods the harnesses call: Helper,
// TempDir, Cleanup, Fatal, Fatalf, Error, Errorf, Log, Logf, Failed and
// Name. Any other method panics. It is safe for concurrent use.
type TB struct {
	testing.TB // nil: only the methods below are implemented

	mu       sync.Mutex
	cleanups []func()
	failed   bool
	errs     []string
}

// New returns a TB; Close it when the example is done.
func New() *TB { return &TB{} }

// Close runs the cleanups, the last registered first, and panics if an
// error was reported meanwhile.
func (tb *TB) Close() {
	tb.mu.Lock()
	cs := tb.cleanups
	tb.cleanups = nil
	tb.mu.Unlock()
	for _, f := range slices.Backward(cs) {
		f()
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if tb.failed {
		panic(fmt.Sprintf("exampletb: %v", tb.errs))
	}
}

// Helper does nothing.
func (tb *TB) Helper() {}

// Name returns "example".
func (tb *TB) Name() string { return "example" }

// TempDir makes a temporary folder, removed by Close.
func (tb *TB) TempDir() string {
	dir, err := os.MkdirTemp("", "kez-example-")
	if err != nil {
		panic(fmt.Sprintf("exampletb: %v", err))
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Cleanup registers f to run at Close.
func (tb *TB) Cleanup(f func()) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.cleanups = append(tb.cleanups, f)
}

// Fatal panics with the message.
func (tb *TB) Fatal(args ...any) { panic(fmt.Sprint(args...)) }

// Fatalf panics with the message.
func (tb *TB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

// Error records the message; Close panics with it.
func (tb *TB) Error(args ...any) { tb.fail(fmt.Sprint(args...)) }

// Errorf records the message; Close panics with it.
func (tb *TB) Errorf(format string, args ...any) { tb.fail(fmt.Sprintf(format, args...)) }

func (tb *TB) fail(msg string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.failed = true
	tb.errs = append(tb.errs, msg)
}

// Log discards the message: an example's output is what it prints.
func (tb *TB) Log(...any) {}

// Logf discards the message.
func (tb *TB) Logf(string, ...any) {}

// Failed reports whether Error or Errorf was called.
func (tb *TB) Failed() bool {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return tb.failed
}
