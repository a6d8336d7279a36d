package ui

import (
	"fmt"
	"io/fs"
	"os"

	"github.com/kez-lat/kez-chat/files"
)

// checkLeftovers refuses a fetch to dst whose partial or state file is
// not one a fetch of this user's could have left: a symbolic link, not a
// regular file, another user's, or writable by others. A fetch resumes
// into what it finds there, so someone who can write in the folder could
// otherwise have it write into another file of the user's, or put the
// plaintext of a private file in a file they can read.
func checkLeftovers(dst string) error {
	for _, p := range []string{dst + files.PartialSuffix, dst + files.StateSuffix} {
		st, err := os.Lstat(p)
		if err != nil {
			continue // none (or unreadable: the fetch says so)
		}
		if !st.Mode().IsRegular() || st.Mode().Perm()&0o022 != 0 || !ownedByMe(st) {
			return fmt.Errorf("%s was not left by a fetch of yours (%s), so nothing was fetched: remove it, or give another path", cleanLine(p), what(st))
		}
	}
	return nil
}

// what says why st is not a partial file of the user's.
func what(st fs.FileInfo) string {
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		return "it is a symbolic link"
	case !st.Mode().IsRegular():
		return "it is not a regular file"
	case !ownedByMe(st):
		return "it belongs to another user"
	}
	return "others may write to it"
}
