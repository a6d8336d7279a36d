// Package ptytest runs a command in a real pseudo-terminal for tests and
// benchmarks of interactive programs: the command gets a posix pty's
// slave side as its controlling terminal (a new session, stdin, stdout
// and stderr on the slave, a window size), and the test holds the master
// side: it writes keys to it and reads everything the command draws.
//
// Waiting is event-driven: every read from the master closes a "grown"
// channel, and [Term.WaitOutput] and [Term.WaitScreen] test their
// condition again only then, so no test sleeps. Each wait returns the
// time at which the bytes that satisfied it were read from the master,
// which makes the package usable for latency figures.
//
// With [Options.Screen] the output is also fed to a screen model (the
// VT emulator of github.com/charmbracelet/x/vt), so that a condition can
// ask what the screen shows (rows of cells, the cursor) rather than what
// bytes went by: full-screen programs redraw only the cells that changed
// and move the cursor between them, so a word on screen need not be one
// run of bytes in the stream. The emulator's answers to the program's
// terminal queries (device attributes, cursor position, modes) are
// written back to the master as a real terminal's would be.
//
// Pseudo-terminals are opened with golang.org/x/sys/unix on Linux
// (/dev/ptmx, TIOCSPTLCK, TIOCGPTN); elsewhere [Start] returns
// [ErrUnsupported].
package ptytest
