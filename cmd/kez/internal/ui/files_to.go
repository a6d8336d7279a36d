package ui

// The recipients of a private share are decided by package recipients,
// as for kez share --to: a contact's file goes to the key pinned for
// them, and a flagged contact gets nothing. This words the refusal.

import (
	"fmt"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/cmd/kez/internal/recipients"
)

// flaggedSentence is the files screen's sentence for a private share
// refused because it named a flagged contact.
func flaggedSentence(e *recipients.FlaggedError) string {
	what := "key changed"
	if e.Flag == chat.FlagChainRewritten {
		what = "sigchain was rewritten"
	}
	return fmt.Sprintf("nothing was shared: @%s's %s. Open the conversation, compare the safety number with %s and accept it (Ctrl+A) before sharing with them",
		cleanLine(e.Handle), what, localPart(cleanLine(e.Handle)))
}
