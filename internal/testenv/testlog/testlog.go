// Package testlog is a log sink for tests: a [Buffer] that servers and
// clients write their logs to from their own goroutines while the test
// reads it.
//
//	logs := &testlog.Buffer{}
//	log := slog.New(slog.NewTextHandler(logs, nil))
//	… // run something with log
//	if !strings.Contains(logs.String(), "reconnected") { … }
package testlog

import (
	"bytes"
	"sync"
)

// Buffer collects what is written to it. The zero value is ready; it is
// safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it never fails.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Tail returns the last n bytes written, after "…" if there were more:
// the end of a long log, for a failure message.
func (b *Buffer) Tail(n int) string {
	s := b.String()
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
