package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/kez-lat/kez-chat/kez"
)

// Blocking (docs/spec/chat.md §5.1) is local: the keys the user blocked
// are kept in chat.db's blocked table and, in memory, in blockList, which
// the receiving path reads for every delivery before anything else is
// asked of a server.

var (
	// ErrBlocked reports a send to a person the user blocked
	// ([Client.Block]): nothing was sent.
	ErrBlocked = errors.New("chat: the key is blocked")

	// ErrBlockSelf reports an attempt to block the user's own key or one
	// of their devices.
	ErrBlockSelf = errors.New("chat: cannot block your own key")
)

// blockList is the set of blocked keys, loaded at Open.
type blockList struct {
	mu   sync.RWMutex
	keys map[kez.PublicKey]struct{}
}

// has reports whether any of keys is blocked.
func (b *blockList) has(keys ...kez.PublicKey) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, k := range keys {
		if _, ok := b.keys[k]; ok {
			return true
		}
	}
	return false
}

func (b *blockList) set(k kez.PublicKey, blocked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.keys == nil {
		b.keys = map[kez.PublicKey]struct{}{}
	}
	if blocked {
		b.keys[k] = struct{}{}
	} else {
		delete(b.keys, k)
	}
}

// loadBlocked reads the blocked keys from the database: at Open, before
// each received batch and before each send, so that a block recorded by
// another process on the same state folder (the CLI beside a running UI)
// counts at once.
func (c *Client) loadBlocked(ctx context.Context) error {
	keys, err := c.Blocked(ctx)
	if err != nil {
		return err
	}
	m := make(map[kez.PublicKey]struct{}, len(keys))
	for _, k := range keys {
		m[k] = struct{}{}
	}
	c.blocked.mu.Lock()
	c.blocked.keys = m
	c.blocked.mu.Unlock()
	return nil
}

// Block blocks key: a person's key (a stranger's or a contact's) or one
// of a person's devices. From then on every delivery from that person
// (any of their devices) or from key itself is acknowledged and dropped
// before it is stored, whatever its kind, and counted in Stats.Blocked;
// sending to them returns [ErrBlocked]. Key's stored message requests
// (and group invitations) are deleted in the transaction that records
// the block; a contact stays pinned and its stored messages stay.
// Blocking is local: nobody is told. Blocking a key twice is not an
// error. The user's own key and devices cannot be blocked
// ([ErrBlockSelf]).
func (c *Client) Block(ctx context.Context, key kez.PublicKey) error {
	if key.IsZero() {
		return fmt.Errorf("chat: blocking: %w", kez.ErrBadKey)
	}
	if c.isOwnKey(key) {
		return ErrBlockSelf
	}
	// No batch is being processed while the block is recorded: a batch
	// classified before it cannot store a request after its deletion.
	c.recvMu.Lock()
	defer c.recvMu.Unlock()
	var forgotten []*groupState
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO blocked (key, blocked_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`,
			key.String(), c.now().UnixMilli()); err != nil {
			return err
		}
		var err error
		_, forgotten, err = c.deleteRequestsTx(tx, []kez.PublicKey{key})
		return err
	})
	if err != nil {
		return fmt.Errorf("chat: blocking %s: %w", key, err)
	}
	c.groups.drop(forgotten...)
	c.blocked.set(key, true)
	c.log.Info("blocked a key", "key", key)
	return nil
}

// Unblock lifts the block of key: their next messages are received again.
// What was dropped while they were blocked is gone. Unblocking a key that
// is not blocked is not an error.
func (c *Client) Unblock(ctx context.Context, key kez.PublicKey) error {
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`DELETE FROM blocked WHERE key = ?`, key.String())
		return err
	})
	if err != nil {
		return fmt.Errorf("chat: unblocking %s: %w", key, err)
	}
	c.blocked.set(key, false)
	return nil
}

// Blocked returns the blocked keys, in the order they were blocked.
func (c *Client) Blocked(ctx context.Context) ([]kez.PublicKey, error) {
	rows, err := c.db.db.QueryContext(ctx, `SELECT key FROM blocked ORDER BY blocked_at, key`)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []kez.PublicKey
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		k, err := kez.ParsePublicKey(s)
		if err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	return out, nil
}

// isOwnKey reports whether key is the user's, or one of their devices
// known here.
func (c *Client) isOwnKey(key kez.PublicKey) bool {
	if key == c.me || key == c.devKey {
		return true
	}
	p, _, err := c.knownSender(key)
	return err == nil && p == c.me
}

// blockedContact reports whether handle is a contact whose pinned key is
// blocked: a message from another key that handle names now (the contact's
// new key, held while the contact is flagged) is dropped as the blocked
// key's would be.
func (c *Client) blockedContact(handle string) bool {
	if handle == "" {
		return false
	}
	c.mu.Lock()
	cs := c.byHandle[handle]
	var key kez.PublicKey
	if cs != nil {
		key = cs.c.Key
	}
	c.mu.Unlock()
	return cs != nil && c.blocked.has(key)
}

// checkNotBlocked returns ErrBlocked if person is blocked.
func (c *Client) checkNotBlocked(ctx context.Context, person kez.PublicKey, name string) error {
	if err := c.loadBlocked(ctx); err != nil {
		return err
	}
	if c.blocked.has(person) {
		return fmt.Errorf("%w: %s", ErrBlocked, name)
	}
	return nil
}
