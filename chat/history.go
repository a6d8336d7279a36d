package chat

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/kez-lat/kez-chat/kez"
)

// Trust says how far a received message can be believed to come from whom
// it names.
type Trust string

// Trust levels of received messages. Sent messages are always TrustTrusted.
const (
	// TrustTrusted: from a contact's pinned key whose chain still checks.
	TrustTrusted Trust = "trusted"
	// TrustHeld: from a flagged contact (their key changed, or their chain
	// was rewritten), or from the new key of a contact whose key changed.
	// It is kept but not shown until the user accepts the contact again
	// ([Client.AddContact]).
	TrustHeld Trust = "held"
	// TrustRequest: from a key that is not a contact. The signature is
	// verified, so it is from that key; the handle is only what the key's
	// chain claims (Entry.PeerHandle, confirmed or not).
	TrustRequest Trust = "request"
)

// SendState is the outcome of a sent message. A message is recorded in the
// history, pending, before it is published, and gets its outcome once the
// stream answered.
type SendState string

// Send states.
const (
	// StateSent: the stream stored it (Entry.Seq is its sequence).
	StateSent SendState = "sent"
	// StateFailed: the stream refused it or the publish failed.
	StateFailed SendState = "failed"
	// StatePending: sealed and stored, not yet acknowledged by the stream
	// (it is published again, as sealed, when the client next connects).
	StatePending SendState = "pending"
)

// Entry is one message in the local history, sent or received.
type Entry struct {
	ID         MessageID
	Incoming   bool          // received (true) or sent (false)
	Peer       kez.PublicKey // the other party of the conversation
	PeerHandle string        // the contact's handle; for a request, the handle its chain claims once the registry confirmed it ("" until then)
	From, To   kez.PublicKey
	SentAt     time.Time // the sender's clock, signed (millisecond precision)
	ReceivedAt time.Time // when this client stored it
	Kind       Kind
	Ref        MessageID // the message this one refers to, or zero
	Body       []byte
	Seq        uint64 // the stream sequence: of the delivery (received) or the publish ack (sent)
	Trust      Trust
	State      SendState // sent messages only
	Read       bool      // shown to the user (see Client.Inbox); sent messages are read
	// DeliveredAt is, for a sent message, the time the recipient's signed
	// delivery receipt gives (zero until a receipt arrives).
	DeliveredAt time.Time
	// ReadAt is, for a sent message, the time the recipient's signed read
	// receipt gives (zero until one arrives; docs/spec/chat.md §4.1).
	ReadAt time.Time
	// Group is, for a group message, the group's name ("team@kez.lat");
	// "" for a message between two persons. A sent group message has the
	// zero key as To and Peer: it is to the group.
	Group string
	// ReadBy lists, for a sent group message (GroupHistory), the members
	// whose group-read receipts say they read it.
	ReadBy []kez.PublicKey
}

// Text returns the body as text, with invalid UTF-8 replaced.
func (e *Entry) Text() string {
	if utf8.Valid(e.Body) {
		return string(e.Body)
	}
	return strings.ToValidUTF8(string(e.Body), "\uFFFD")
}

// Who returns how to name the other party: the handle if known, else the key.
func (e *Entry) Who() string {
	if e.PeerHandle != "" {
		return e.PeerHandle
	}
	return e.Peer.String()
}

const entryColumns = `id, incoming, peer_key, peer_handle, from_key, to_key, sent_at, received_at, kind, ref, body, stream_seq, trust, state, read, delivered_at, grp, read_at`

type scanner interface{ Scan(dest ...any) error }

func scanEntry(r scanner) (*Entry, error) {
	var (
		e                    Entry
		id, ref              []byte
		peer, from, to, kind string
		trust, state         string
		sent, received       int64
		delivered, readAt    sql.NullInt64
		incoming, read       int64
		seq                  int64
	)
	if err := r.Scan(&id, &incoming, &peer, &e.PeerHandle, &from, &to, &sent, &received, &kind, &ref, &e.Body, &seq, &trust, &state, &read, &delivered, &e.Group, &readAt); err != nil {
		return nil, err
	}
	if len(id) != len(e.ID) || (ref != nil && len(ref) != len(e.Ref)) {
		return nil, fmt.Errorf("chat: database: a message ID is not %d bytes", len(e.ID))
	}
	copy(e.ID[:], id)
	copy(e.Ref[:], ref)
	var err error
	if e.Peer, err = kez.ParsePublicKey(peer); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	if e.From, err = kez.ParsePublicKey(from); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	if e.To, err = kez.ParsePublicKey(to); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	e.Incoming, e.Read = incoming != 0, read != 0
	e.SentAt, e.ReceivedAt = time.UnixMilli(sent), time.UnixMilli(received)
	if delivered.Valid {
		e.DeliveredAt = time.UnixMilli(delivered.Int64)
	}
	if readAt.Valid {
		e.ReadAt = time.UnixMilli(readAt.Int64)
	}
	e.Kind, e.Trust, e.State, e.Seq = Kind(kind), Trust(trust), SendState(state), uint64(seq)
	if e.Body == nil {
		e.Body = []byte{}
	}
	return &e, nil
}

func queryEntries(ctx context.Context, db *sql.DB, query string, args ...any) ([]*Entry, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []*Entry
	for rows.Next() {
		e, err := scanEntry(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	return out, nil
}

func nullMillis(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func refBytes(id MessageID) any {
	if id.IsZero() {
		return nil
	}
	return id[:]
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// insertEntry stores e unless a message with the same sender and ID is
// already stored; it reports whether e was new.
func (s *store) insertEntry(tx *sql.Tx, e *Entry) (bool, error) {
	return s.insertSent(tx, e, nil)
}

// insertSent is insertEntry for a sent message with the envelope to
// publish (nil for none).
func (s *store) insertSent(tx *sql.Tx, e *Entry, envelope []byte) (bool, error) {
	res, err := tx.Stmt(s.stmts.insert).Exec(
		e.ID[:], boolInt(e.Incoming), e.Peer.String(), e.PeerHandle, e.From.String(), e.To.String(),
		e.SentAt.UnixMilli(), e.ReceivedAt.UnixMilli(), string(e.Kind), refBytes(e.Ref), e.Body, int64(e.Seq),
		string(e.Trust), string(e.State), boolInt(e.Read), nullMillis(e.DeliveredAt), e.Group, nullMillis(e.ReadAt), envelope)
	if err != nil {
		return false, fmt.Errorf("chat: storing message %s: %w", e.ID, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// orderBy is the display order: per conversation by the signed send time,
// then by stream sequence.
const orderBy = ` ORDER BY sent_at, stream_seq, received_at, id`

// History returns the last limit messages exchanged with peer, oldest
// first (by send time, then stream sequence); limit <= 0 means all. peer
// is a contact's handle or a key ("U…"); a handle gives the conversation
// with the contact's pinned key. Receipts are not messages and never
// appear. It does not change read flags.
func (c *Client) History(ctx context.Context, peer string, limit int) ([]*Entry, error) {
	key, err := c.peerKey(ctx, peer)
	if err != nil {
		return nil, err
	}
	q := `SELECT ` + entryColumns + ` FROM messages WHERE peer_key = ? AND grp = ''`
	if limit > 0 {
		q = `SELECT * FROM (` + q + ` ORDER BY sent_at DESC, stream_seq DESC, received_at DESC, id DESC LIMIT ?)` + orderBy
		return queryEntries(ctx, c.db.db, q, key.String(), limit)
	}
	return queryEntries(ctx, c.db.db, q+orderBy, key.String())
}

// peerKey turns a handle or key text into the conversation's key.
func (c *Client) peerKey(ctx context.Context, peer string) (kez.PublicKey, error) {
	if k, err := kez.ParsePublicKey(peer); err == nil {
		return k, nil
	}
	ct, err := c.Contact(ctx, peer)
	if err != nil {
		return kez.PublicKey{}, err
	}
	return ct.Key, nil
}

// Unread returns the trusted received messages not yet shown, oldest first.
func (c *Client) Unread(ctx context.Context) ([]*Entry, error) {
	c.nameStoredGroupSenders(ctx)
	return queryEntries(ctx, c.db.db, `SELECT `+entryColumns+` FROM messages WHERE read = 0 AND trust = ?`+orderBy, string(TrustTrusted))
}

// MarkRead marks the received messages with these IDs as shown, here and
// (a sync-read message) on the user's other devices. For the trusted text
// messages of contacts it marks that were not read before, it sends their
// sender a read receipt (docs/spec/chat.md §4.1), in the background,
// unless Config.NoReadReceipts; never for a request or a held message.
func (c *Client) MarkRead(ctx context.Context, entries ...*Entry) error {
	if len(entries) == 0 {
		return nil
	}
	var due []*Entry
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		due = due[:0]
		for _, e := range entries {
			var incoming, read int64
			var trust, kind, grp string
			err := tx.QueryRow(`SELECT incoming, read, trust, kind, grp FROM messages WHERE from_key = ? AND id = ?`,
				e.From.String(), e.ID[:]).Scan(&incoming, &read, &trust, &kind, &grp)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return fmt.Errorf("chat: marking %s read: %w", e.ID, err)
			}
			if read != 0 {
				continue
			}
			if _, err := tx.Exec(`UPDATE messages SET read = 1 WHERE from_key = ? AND id = ?`, e.From.String(), e.ID[:]); err != nil {
				return fmt.Errorf("chat: marking %s read: %w", e.ID, err)
			}
			if incoming != 0 && Trust(trust) == TrustTrusted && Kind(kind) == KindText && grp == "" {
				due = append(due, &Entry{ID: e.ID, From: e.From, Incoming: true, Trust: TrustTrusted, Kind: KindText})
			}
		}
		return nil
	})
	if err == nil {
		c.syncRead(ctx, entries)
		c.sendGroupReads(entries)
		c.queueReadReceipts(due)
	}
	return err
}

// Inbox returns the trusted received messages for the user to see, oldest
// first, and marks them shown: by default those not shown before, with all
// every received trusted message. Held messages and requests are listed by
// [Client.Held] and [Client.Requests]. Call [Client.Sync] first to fetch what
// waits on the server.
func (c *Client) Inbox(ctx context.Context, all bool) ([]*Entry, error) {
	c.nameStoredGroupSenders(ctx)
	q := `SELECT ` + entryColumns + ` FROM messages WHERE incoming = 1 AND trust = ?`
	if !all {
		q += ` AND read = 0`
	}
	es, err := queryEntries(ctx, c.db.db, q+orderBy, string(TrustTrusted))
	if err != nil {
		return nil, err
	}
	var unread []*Entry
	for _, e := range es {
		if !e.Read {
			unread = append(unread, e)
		}
	}
	if err := c.MarkRead(ctx, unread...); err != nil {
		return nil, err
	}
	return es, nil
}

// Requests returns the messages from keys that are not contacts, oldest
// first. Adding the sender as a contact turns theirs into trusted messages.
func (c *Client) Requests(ctx context.Context) ([]*Entry, error) {
	return queryEntries(ctx, c.db.db, `SELECT `+entryColumns+` FROM messages WHERE trust = ?`+orderBy, string(TrustRequest))
}

// Held returns the messages held because their sender's contact is flagged,
// oldest first. Accepting the contact again releases those from the newly
// pinned key.
func (c *Client) Held(ctx context.Context) ([]*Entry, error) {
	return queryEntries(ctx, c.db.db, `SELECT `+entryColumns+` FROM messages WHERE trust = ?`+orderBy, string(TrustHeld))
}

// Message returns the stored message with this sender and ID, or an error
// wrapping ErrNoMessage.
func (c *Client) Message(ctx context.Context, from kez.PublicKey, id MessageID) (*Entry, error) {
	e, err := scanEntry(c.db.db.QueryRowContext(ctx, `SELECT `+entryColumns+` FROM messages WHERE from_key = ? AND id = ?`, from.String(), id[:]))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s from %s", ErrNoMessage, id, from)
	}
	return e, err
}

// ErrNoMessage reports a message that is not in the history.
var ErrNoMessage = errors.New("chat: no such message in the history")
