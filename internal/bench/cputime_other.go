//go:build !unix

package bench

import (
	"os"
	"time"
)

// selfCPU returns the CPU time this process has used so far, as well as
// [processCPU] can tell (0 where it cannot).
func selfCPU() time.Duration { return processCPU(os.Getpid()) }
