package ui

// The recipients of a private share, as the conversations see them: a
// contact's file goes to the key pinned for them, never to a key their
// handle names since, and a flagged contact gets nothing, as a message to
// them is refused.

import (
	"context"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/files"
)

// flaggedRecipientError: a private share named a flagged contact, so
// nothing was shared.
type flaggedRecipientError struct {
	handle string
	flag   chat.ContactFlag
}

// Error is the sentence the files screen shows.
func (e *flaggedRecipientError) Error() string {
	what := "key changed"
	if e.flag == chat.FlagChainRewritten {
		what = "sigchain was rewritten"
	}
	return fmt.Sprintf("nothing was shared: @%s's %s. Open the conversation, compare the safety number with %s and accept it (Ctrl+A) before sharing with them",
		cleanLine(e.handle), what, localPart(cleanLine(e.handle)))
}

// shareTo returns the options of a private share to the handles to: a
// contact at its pinned key, after checking it with its servers now (a
// flagged contact, or one the check flags, is refused with a
// *flaggedRecipientError); a handle that is no contact at the key it
// names now, as kez share --to does.
func shareTo(ctx context.Context, c *chat.Client, to []string) ([]files.ShareOption, error) {
	var opts []files.ShareOption
	for _, h := range to {
		ct, err := c.CheckContact(ctx, h)
		switch {
		case errors.Is(err, chat.ErrNotContact):
			opts = append(opts, files.To(h))
			continue
		case ct != nil && ct.Flag != chat.FlagNone:
			return nil, &flaggedRecipientError{handle: ct.Handle, flag: ct.Flag}
		case err != nil:
			return nil, err
		}
		opts = append(opts, files.ToKey(ct.Handle, ct.Key))
	}
	return opts, nil
}
