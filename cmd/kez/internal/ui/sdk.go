package ui

// The SDK calls the UI makes, in one place. Every one runs in a tea.Cmd,
// never on the UI goroutine (readConversations, before the program
// starts, excepted: it draws the first frame).

import (
	"context"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// conversation is one row of the conversation list.
type conversation = chat.Conversation

// pageQuery selects one page of a conversation's history.
type pageQuery = chat.PageQuery

// pageSize is how many messages one page holds.
const pageSize = chat.DefaultPageSize

// readConversations reads the list from chat.db without opening a client.
func readConversations(ctx context.Context, home string) ([]conversation, error) {
	return chat.ReadConversations(ctx, home)
}

// conversations lists the client's conversations, newest first.
func conversations(ctx context.Context, c *chat.Client) ([]conversation, error) {
	return c.Conversations(ctx)
}

// page returns one page of a conversation, oldest first.
func page(ctx context.Context, c *chat.Client, q pageQuery) ([]*chat.Entry, error) {
	return c.Page(ctx, q)
}

// acceptRequest makes the requester key a contact.
func acceptRequest(ctx context.Context, c *chat.Client, key kez.PublicKey) (*chat.Contact, error) {
	return c.AcceptRequest(ctx, key)
}

// acceptKey pins handle to key, the key whose safety number was shown,
// only if the handle names it now (else a *chat.RequestMismatchError).
func acceptKey(ctx context.Context, c *chat.Client, handle string, key kez.PublicKey) (*chat.Contact, error) {
	return c.AcceptKey(ctx, handle, key)
}

// block blocks key: its requests are dropped, its messages never stored.
func block(ctx context.Context, c *chat.Client, key kez.PublicKey) error {
	return c.Block(ctx, key)
}

// readAt is when the recipient read a sent message (zero: not known).
func readAt(e *chat.Entry) time.Time { return e.ReadAt }
