//go:build unix

package files

import (
	"syscall"
	"time"
)

// processCPU returns the CPU time (user + system) the whole process has
// used: both ends of an in-process transfer. On a shared machine it
// measures work done, not time spent waiting for a core.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
