//go:build !linux

package ptytest

import (
	"os"
	"syscall"
)

// Available reports whether pseudo-terminals can be opened here: this
// package opens them only on Linux.
func Available() error { return ErrUnsupported }

func openPty() (master, slave *os.File, err error) { return nil, nil, ErrUnsupported }

func setSize(*os.File, int, int) error { return ErrUnsupported }

func sessionAttr() *syscall.SysProcAttr { return nil }
