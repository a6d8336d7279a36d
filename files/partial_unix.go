//go:build unix

package files

import (
	"io/fs"
	"os"
	"syscall"
)

// openNoFollow makes an open fail on a symbolic link, and not wait for a
// writer on a FIFO (a regular file ignores O_NONBLOCK).
const openNoFollow = syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// othersWrite are the permission bits that let the file's group or
// others write to it.
const othersWrite = 0o022

// ownedByMe reports whether the file st describes belongs to this
// process's user.
func ownedByMe(st fs.FileInfo) bool {
	s, ok := st.Sys().(*syscall.Stat_t)
	return !ok || int(s.Uid) == os.Getuid()
}

// hardLinked reports whether the file st describes has more than one name.
func hardLinked(st fs.FileInfo) bool {
	s, ok := st.Sys().(*syscall.Stat_t)
	return ok && s.Nlink > 1
}
