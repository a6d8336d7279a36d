//go:build !unix

package files

import "io/fs"

// openNoFollow: no flag here; a link is still refused by its lstat.
const openNoFollow = 0

// othersWrite: the permission bits here say nothing of who else may
// write (every writable file reads as 0666).
const othersWrite = 0

// ownedByMe: files have no owner uid here.
func ownedByMe(fs.FileInfo) bool { return true }

// hardLinked: the link count is not known here.
func hardLinked(fs.FileInfo) bool { return false }
