//go:build !unix

package devstack

import (
	"os"
	"os/exec"
)

func ownProcessGroup(*exec.Cmd) {}

// terminate stops p; without POSIX signals that means killing it.
func terminate(p *os.Process) error { return p.Kill() }

func killGroup(p *os.Process) { p.Kill() }
