package chat

import (
	"context"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/kez"
)

var (
	// ErrNotRequest reports a key that sent no message request stored
	// here (it sent nothing, is a contact, or its requests were deleted).
	ErrNotRequest = errors.New("chat: no message request from this key")

	// ErrUnconfirmed reports a requester whose handle the registry has not
	// confirmed (its chain claims none, the claim is not confirmed, or
	// the lookup failed): it cannot be added by handle yet.
	ErrUnconfirmed = errors.New("chat: the requester's handle is not confirmed")
)

// RequestMismatchError is returned by [Client.AcceptRequest] and
// [Client.AcceptKey] when the handle, resolved now, names another key than
// the one being accepted: nothing was pinned. It matches [ErrKeyChanged].
type RequestMismatchError struct {
	Handle    string        // the handle being accepted
	Requester kez.PublicKey // the key accepted: the requester's, or AcceptKey's
	Current   kez.PublicKey // the key the handle names now
}

// Error names both keys.
func (e *RequestMismatchError) Error() string {
	return fmt.Sprintf("chat: %s now names %s, not the key accepted, %s", e.Handle, e.Current, e.Requester)
}

// Is matches [ErrKeyChanged].
func (e *RequestMismatchError) Is(target error) bool { return target == ErrKeyChanged }

// AcceptKey pins handle to key, and only to key (docs/spec/chat.md §5): it
// adds the handle as [Client.AddContact] does (a fresh resolution, the
// whole chain verified), and pins it only if that same resolution names
// key. This is how a changed key (or a rewritten chain, key being the
// pinned one) is accepted once its safety number was compared: the key
// pinned is the key whose number was shown, never one the servers switched
// to meanwhile. It works for a handle that is no contact yet too.
//
// Errors: a *[RequestMismatchError] (the handle names another key now:
// nothing changed, a flag stays as it was), and those of AddContact.
func (c *Client) AcceptKey(ctx context.Context, handle string, key kez.PublicKey) (*Contact, error) {
	return c.addContact(ctx, handle, &key)
}

// AcceptRequest makes the sender of message requests a contact
// (docs/spec/chat.md §5.2): it takes the handle the registry confirmed for
// key (looking key up first if that was not done yet), adds it as
// [Client.AddContact] does, and checks that the handle names key. Then
// key's requests are trusted, unread messages of the contact's
// conversation, [Client.Requests] no longer lists them, and key's next
// messages arrive trusted.
//
// Errors: [ErrNotRequest] (no request from key is stored), [ErrUnconfirmed]
// (no confirmed handle), a *[RequestMismatchError] (the handle names
// another key now: nothing changed), and those of AddContact.
func (c *Client) AcceptRequest(ctx context.Context, key kez.PublicKey) (*Contact, error) {
	n, handle, err := c.requestHandle(ctx, key)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotRequest, key)
	}
	if handle == "" {
		// Not looked up yet, or the answer expired: look it up now.
		if err := c.ResolveRequests(ctx); err != nil {
			return nil, err
		}
		if _, handle, err = c.requestHandle(ctx, key); err != nil {
			return nil, err
		}
		if handle == "" {
			return nil, fmt.Errorf("%w: %s", ErrUnconfirmed, key)
		}
	}
	return c.addContact(ctx, handle, &key)
}

// requestHandle returns how many requests from key are stored (group
// invitations aside) and the handle confirmed for them ("" if none).
func (c *Client) requestHandle(ctx context.Context, key kez.PublicKey) (int, string, error) {
	var n int
	var handle string
	err := c.db.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(MAX(peer_handle), '') FROM messages
		WHERE incoming = 1 AND trust = ? AND from_key = ? AND grp = ''`, string(TrustRequest), key.String()).Scan(&n, &handle)
	if err != nil {
		return 0, "", fmt.Errorf("chat: database: %w", err)
	}
	return n, handle, nil
}
