package chat

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// explainStoreError adds to a database error what a person can act on when
// its cause is the state folder itself: SQLite only says "unable to open
// database file" when the folder is read-only, for instance. It probes the
// folder by creating (and removing) a file there and wraps the probe's
// error too (errors.Is sees syscall.EROFS, fs.ErrPermission,
// syscall.ENOSPC); err is returned as is when the folder is writable.
func explainStoreError(dir string, err error) error {
	f, perr := os.CreateTemp(dir, ".kez-write-probe-*")
	if perr == nil {
		name := f.Name()
		f.Close()
		os.Remove(name)
		return err
	}
	switch {
	case errors.Is(perr, syscall.EROFS):
		return fmt.Errorf("%w: the state folder %s is on a read-only file system (%w)", err, dir, perr)
	case errors.Is(perr, fs.ErrPermission):
		return fmt.Errorf("%w: the state folder %s is not writable by this user (%w)", err, dir, perr)
	case errors.Is(perr, syscall.ENOSPC):
		return fmt.Errorf("%w: the disk holding the state folder %s is full (%w)", err, dir, perr)
	}
	return err
}
