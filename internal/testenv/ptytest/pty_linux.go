package ptytest

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Available reports whether pseudo-terminals can be opened here: nil, or
// an error wrapping [ErrUnsupported] saying why not.
func Available() error {
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		return fmt.Errorf("%w: %v", ErrUnsupported, err)
	}
	return nil
}

// openPty opens a new pseudo-terminal: its master from /dev/ptmx, the
// slave unlocked (TIOCSPTLCK) and opened by the number TIOCGPTN gives.
// Neither becomes this process's controlling terminal.
func openPty() (master, slave *os.File, err error) {
	if err := Available(); err != nil {
		return nil, nil, err
	}
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("ptytest: %w", err)
	}
	fail := func(what string, err error) (*os.File, *os.File, error) {
		master.Close()
		return nil, nil, fmt.Errorf("ptytest: %s: %w", what, err)
	}
	sc, err := master.SyscallConn()
	if err != nil {
		return fail("the master's fd", err)
	}
	var n uint32
	var ioErr error
	if err := sc.Control(func(fd uintptr) {
		if ioErr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ioErr != nil {
			return
		}
		n, ioErr = unix.IoctlGetUint32(int(fd), unix.TIOCGPTN)
	}); err != nil {
		return fail("the master's fd", err)
	}
	if ioErr != nil {
		return fail("unlocking the slave", ioErr)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return fail("opening the slave", err)
	}
	return master, slave, nil
}

func setSize(f *os.File, rows, cols int) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("ptytest: %w", err)
	}
	var ioErr error
	if err := sc.Control(func(fd uintptr) {
		ioErr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)})
	}); err != nil {
		return fmt.Errorf("ptytest: %w", err)
	}
	if ioErr != nil {
		return fmt.Errorf("ptytest: setting the window size: %w", ioErr)
	}
	return nil
}

// sessionAttr makes the child a session leader whose controlling
// terminal is its stdin (the slave).
func sessionAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
}
