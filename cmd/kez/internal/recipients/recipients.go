// Package recipients decides where a private share goes, the same way for
// the kez command ("kez share --to") and its full-screen client ("kez
// ui"): a contact gets the file at the key pinned for them, never at a key
// their handle names since; a flagged contact gets nothing, as a message
// to them is refused; a handle that is no contact gets it at the key it
// names now.
package recipients

import (
	"context"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
)

// FlaggedError reports a private share that named a flagged contact:
// nothing was shared. It unwraps to the contact's flag as an error
// (*chat.KeyChangedError or *chat.ChainRewrittenError).
type FlaggedError struct {
	Handle string           // the contact's handle, in canonical form
	Flag   chat.ContactFlag // why they are not trusted any more
	Err    error            // the flag as chat reports it
}

// Error says that nothing was shared, and why.
func (e *FlaggedError) Error() string {
	return fmt.Sprintf("nothing was shared: %v", e.Err)
}

// Unwrap returns the contact's flag as an error.
func (e *FlaggedError) Unwrap() error { return e.Err }

// ShareTo returns the options of a private share to the handles to. Each
// contact is checked with its servers now: a flagged contact, or one the
// check flags, is refused with a *FlaggedError; the others get the file
// at their pinned key ([files.ToKey]). A handle that is no contact gets it
// at the key it names now ([files.To]). Other errors are the check's.
func ShareTo(ctx context.Context, c *chat.Client, to []string) ([]files.ShareOption, error) {
	var opts []files.ShareOption
	for _, h := range to {
		ct, err := c.CheckContact(ctx, h)
		switch {
		case errors.Is(err, chat.ErrNotContact):
			opts = append(opts, files.To(h))
			continue
		case ct != nil && ct.Flag != chat.FlagNone:
			return nil, &FlaggedError{Handle: ct.Handle, Flag: ct.Flag, Err: ct.Err()}
		case err != nil:
			return nil, err
		}
		opts = append(opts, files.ToKey(ct.Handle, ct.Key))
	}
	return opts, nil
}
