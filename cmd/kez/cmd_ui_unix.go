//go:build unix

package main

import "syscall"

// uiLogFlags open ui.log without following a symbolic link, and without
// waiting on a FIFO planted there.
const uiLogFlags = syscall.O_NOFOLLOW | syscall.O_NONBLOCK
