package ui

import (
	"errors"

	"github.com/kez-lat/kez-chat/cmd/kez/internal/filewords"
	"github.com/kez-lat/kez-chat/files"
)

// checkLeftovers refuses, at the Save to prompt, a fetch to dst whose
// partial or state file is not one a fetch of this user's could have left
// (files.CheckPartial): the fetch would refuse it too, but only after
// asking the owner.
func checkLeftovers(dst string) error {
	var unsafe *files.UnsafePartialError
	if err := files.CheckPartial(dst); errors.As(err, &unsafe) {
		return errors.New(unsafeSentence(unsafe))
	}
	return nil
}

// unsafeSentence words a partial or state file the fetch refused.
func unsafeSentence(u *files.UnsafePartialError) string {
	return cleanLine(filewords.UnsafePartial(u)) + ": remove it, or give another path"
}
