//go:build unix

package devstack

import (
	"os"
	"os/exec"
	"syscall"
)

// ownProcessGroup puts a server process in its own process group, so that
// a Ctrl-C in the terminal reaches only the program that started the
// stack, which then stops the servers in order.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}

// terminate asks p to stop.
func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }

// killGroup kills p's whole process group.
func killGroup(p *os.Process) {
	if err := syscall.Kill(-p.Pid, syscall.SIGKILL); err != nil {
		p.Kill()
	}
}
