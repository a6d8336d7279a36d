//go:build unix

package bench

import (
	"syscall"
	"time"
)

// selfCPU returns the CPU time (user and system) this process has used so
// far, to the microsecond: the figures of a few milliseconds of work
// (a session's seal and open) need more than /proc's clock ticks.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
