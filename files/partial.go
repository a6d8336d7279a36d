package files

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrUnsafePartial: a partial or state file beside a fetch's destination
// is not one a fetch of this user's could have left, so the fetch does
// not resume into it. The error is an *[UnsafePartialError].
var ErrUnsafePartial = errors.New("files: a partial file beside the destination was not left by a fetch of yours")

// PartialProblem says why a partial or state file was refused.
type PartialProblem int

// The reasons an [UnsafePartialError] gives.
const (
	PartialLink       PartialProblem = iota + 1 // a symbolic link
	PartialNotRegular                           // not a regular file (a FIFO, a device, a folder)
	PartialNotOwned                             // another user's
	PartialWritable                             // writable by its group or by others
	PartialLinked                               // a hard link: the same file has another name too
)

// String says what the file is.
func (p PartialProblem) String() string {
	switch p {
	case PartialLink:
		return "it is a symbolic link"
	case PartialNotRegular:
		return "it is not a regular file"
	case PartialNotOwned:
		return "it belongs to another user"
	case PartialWritable:
		return "others may write to it"
	case PartialLinked:
		return "it is also another file (a hard link)"
	}
	return "it is not a file of yours"
}

// UnsafePartialError is [ErrUnsafePartial] with the file and why. A fetch
// resumes into dst+[PartialSuffix] and records its progress in
// dst+[StateSuffix]: someone who can write in the destination's folder
// could otherwise plant a link there to another of the user's files (the
// fetch would write into it), or a file they can read (the plaintext of a
// private file would land in it). Nothing was fetched or changed.
type UnsafePartialError struct {
	Path    string // the partial or state file
	Problem PartialProblem
}

// Error names the file and why it was refused.
func (e *UnsafePartialError) Error() string {
	return fmt.Sprintf("files: %s was not left by a fetch of yours (%s), so nothing was fetched", e.Path, e.Problem)
}

// Is matches [ErrUnsafePartial].
func (e *UnsafePartialError) Is(target error) bool { return target == ErrUnsafePartial }

// CheckPartial checks the partial and state files a fetch to dst would
// resume from, if there are any, without opening them: an
// *[UnsafePartialError] for one that is a symbolic link, not a regular
// file, another user's, writable by its group or others, or a hard link
// to a file with another name. [Node.Fetch]
// refuses those too, as it opens them; [Sharing.Fetch] checks before it
// asks the owner anything.
func CheckPartial(dst string) error {
	for _, p := range []string{dst + PartialSuffix, dst + StateSuffix} {
		if st, err := os.Lstat(p); err == nil {
			if err := checkLeftover(p, st); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkLeftover refuses the partial or state file at path that st
// describes (as lstat or fstat saw it) if a fetch of this user's could not
// have left it.
func checkLeftover(path string, st fs.FileInfo) error {
	var p PartialProblem
	switch {
	case st.Mode()&fs.ModeSymlink != 0:
		p = PartialLink
	case !st.Mode().IsRegular():
		p = PartialNotRegular
	case !ownedByMe(st):
		p = PartialNotOwned
	case st.Mode().Perm()&othersWrite != 0:
		p = PartialWritable
	case hardLinked(st):
		// Another of the user's files, linked here by someone who can
		// write in the folder: the fetch would write into it.
		p = PartialLinked
	default:
		return nil
	}
	return &UnsafePartialError{Path: path, Problem: p}
}

// openLeftover opens the partial or state file at path with flag (and
// perm, when it creates it), not following a symbolic link there and not
// waiting on a FIFO, and refuses what checkLeftover refuses. The file is
// checked as opened, so one swapped in after [CheckPartial] is refused too.
func openLeftover(path string, flag int, perm fs.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, flag|openNoFollow, perm)
	if err != nil {
		if st, lerr := os.Lstat(path); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
			return nil, &UnsafePartialError{Path: path, Problem: PartialLink}
		}
		return nil, err
	}
	st, err := f.Stat()
	if err == nil {
		err = checkLeftover(path, st)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
