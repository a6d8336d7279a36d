//go:build unix

// Package cputime reads the CPU time the process has used, for the
// benchmarks and tests that report CPU per operation beside wall time.
package cputime

import (
	"syscall"
	"time"
)

// Process returns the CPU time (user and system) the process has used so
// far, and false where it cannot be read. On a shared machine it measures
// work done, not time spent waiting for a core.
func Process() (time.Duration, bool) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, false
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
}
