//go:build unix

package devstack

import (
	"os"
	"os/exec"
	"syscall"
)

// ownProcessGroup puts the NATS process (and, under "go tool", the
// nats-server it starts) in its own process group, so that a Ctrl-C in the
// terminal reaches only the dev stack, which then stops NATS in order.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminate asks p to stop. The go command passes SIGTERM on to the tool
// it runs and waits for it.
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

// killGroup kills p's whole process group.
func killGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		p.Kill()
	}
}
