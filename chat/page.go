package chat

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/kez-lat/kez-chat/kez"
)

// Page sizes of [Client.Page].
const (
	DefaultPageSize = 50  // a PageQuery with Limit 0
	MaxPageSize     = 500 // the largest Limit
)

// ErrBadPageQuery reports a [PageQuery] that names both a person and a
// group, or neither, or a Limit out of range.
var ErrBadPageQuery = errors.New("chat: bad page query")

// PageQuery selects one page of a conversation's history.
type PageQuery struct {
	Peer   kez.PublicKey // a person's conversation (any trust: trusted, held, request)
	Group  string        // or a group's
	Before *Entry        // older than this message; nil: the newest
	Limit  int           // 0: DefaultPageSize (50); at most MaxPageSize (500)
}

// Page returns one page of a conversation, oldest first: the Limit
// messages that come just before q.Before in the display order (by send
// time, then stream sequence, arrival and ID; the newest when Before is
// nil). Passing the first entry of a page as the next query's Before walks
// the whole conversation back without gaps or repeats, messages sent in
// the same millisecond included; an empty page is the beginning. A
// person's conversation is every message exchanged with that key outside
// groups, whatever its trust; a group's is its messages (sent ones with
// ReadBy). Group is NAME (the user's domain) or NAME@domain. It does not
// change read flags. Page only reads chat.db, never waiting on the
// network: group messages stored by their sender's key (their handle
// could not be checked then) are named in the background, and show the
// handle from a later Page on.
func (c *Client) Page(ctx context.Context, q PageQuery) ([]*Entry, error) {
	limit := q.Limit
	switch {
	case q.Peer.IsZero() == (q.Group == ""):
		return nil, fmt.Errorf("%w: name a person or a group", ErrBadPageQuery)
	case limit < 0 || limit > MaxPageSize:
		return nil, fmt.Errorf("%w: limit %d is not 0…%d", ErrBadPageQuery, limit, MaxPageSize)
	case limit == 0:
		limit = DefaultPageSize
	}
	sel := `SELECT ` + entryColumns + ` FROM messages WHERE `
	args := []any{}
	if q.Group != "" {
		n, err := c.groupName(q.Group)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadPageQuery, err)
		}
		// Naming the senders stored by key may wait on their servers:
		// in the background, for the next page.
		c.nameStoredGroupSendersLater()
		sel += `grp = ? AND grp != ''`
		args = append(args, n)
	} else {
		sel += `peer_key = ? AND grp = ''`
		args = append(args, q.Peer.String())
	}
	if b := q.Before; b != nil {
		sel += ` AND (sent_at, stream_seq, received_at, id) < (?, ?, ?, ?)`
		args = append(args, b.SentAt.UnixMilli(), int64(b.Seq), b.ReceivedAt.UnixMilli(), b.ID[:])
	}
	sel += ` ORDER BY sent_at DESC, stream_seq DESC, received_at DESC, id DESC LIMIT ?`
	es, err := queryEntries(ctx, c.db.db, sel, append(args, limit)...)
	if err != nil {
		return nil, err
	}
	slices.Reverse(es)
	if q.Group != "" {
		if err := c.db.fillReadBy(ctx, es); err != nil {
			return nil, err
		}
	}
	return es, nil
}
