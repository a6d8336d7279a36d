package chat

// The conversation list: one row per contact, message requester and
// group, with unread counts and the newest message, read in one read
// transaction by the client (Client.Conversations) or, without a
// client, from the state folder's database (ReadConversations).

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/kez"
)

// Conversation is one row of a conversation list.
type Conversation struct {
	Peer     kez.PublicKey // the contact's or requester's key; zero for a group
	Handle   string        // the contact's handle, or the handle a request's chain claims ("" until confirmed)
	Group    string        // the group's name ("team@kez.lat"); "" for a person
	Title    string        // a group's title
	Request  bool          // a message request: messages from a key that is not a contact (for a group: an invitation not accepted yet)
	Flag     ContactFlag   // the contact's flag (FlagNone while trusted)
	Verified bool          // the contact's fingerprint was compared (VerifyContact)
	Held     int           // messages held because of Flag
	Unread   int           // received messages not yet marked read
	Last     *Entry        // the newest message; nil if none yet
}

// ErrSchemaVersion reports a database that [ReadConversations] cannot
// read without opening a client: written by a newer program (the error
// names both versions), or so old that it lacks a column the list needs
// (opening a [Client] migrates it).
var ErrSchemaVersion = errors.New("chat: the database's schema version cannot be read here")

// Conversations returns the conversation list: every contact, every key
// whose messages are requests (one row each, Request set, never merged
// with a contact's row whatever handle it claims) and every group. Rows
// with messages come first, the newest last message first (by send time,
// then stream sequence); then those without, by handle or group name.
// Held messages count in Held, not in Last or Unread. It reads only the
// local database and changes nothing.
//
// A conversation with a key that is neither a contact nor a requester
// (the old key of a contact whose new key was accepted, a key written to
// with [Client.SendKey] that never wrote back) has no row; its history
// stays readable with [Client.Page].
func (c *Client) Conversations(ctx context.Context) ([]Conversation, error) {
	return c.db.conversations(ctx, func(name string) string {
		if gs := c.groups.get(name); gs != nil {
			st, _, _ := gs.snapshot()
			return st.Title()
		}
		return ""
	}, entryColumns)
}

// ReadConversations reads the list from the chat.db in home without opening a Client: no identity,
// no server, no chain verification; read-only (never creates or migrates chat.db; (nil, nil) when
// there is none). It is what a UI draws its first screen from.
//
// The rows are those [Client.Conversations] returns. A database being
// written by a client meanwhile is read as one consistent snapshot. One
// at a newer schema than this program knows, or too old to hold what the
// list needs, gives an error wrapping [ErrSchemaVersion]; a file that is
// no SQLite database gives an error and is left as it was. The file is
// never written; SQLite may leave the files its readers share beside it
// (chat.db-wal, chat.db-shm), with the database's mode.
func ReadConversations(ctx context.Context, home string) ([]Conversation, error) {
	path, ok, err := homeDatabase(home)
	if err != nil || !ok {
		return nil, err
	}
	db, err := sqlitedb.OpenReadOnly(path)
	if err != nil {
		return nil, fmt.Errorf("chat: reading the database %s: %w", path, err)
	}
	defer db.Close()
	cols, err := checkReadable(ctx, db, path)
	if err != nil {
		return nil, err
	}
	s := &store{db: db}
	out, err := s.conversations(ctx, s.storedGroupTitle(ctx), cols)
	if err != nil {
		return nil, fmt.Errorf("chat: reading the database %s: %w", path, err)
	}
	return out, nil
}

// homeDatabase returns the path of the chat database in the state folder
// home and whether it exists.
func homeDatabase(home string) (string, bool, error) {
	path := filepath.Join(home, DBFileName)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return path, false, nil
	} else if err != nil {
		return path, false, fmt.Errorf("chat: the database %s: %w", path, err)
	}
	return path, true, nil
}

// storedGroupTitle returns a group-title function reading each group's
// title from its pinned chain (checked when it was pinned; its links are
// read again here, not fetched). A chain that does not read gives "".
func (s *store) storedGroupTitle(ctx context.Context) func(string) string {
	return func(name string) string {
		links, err := s.groupLinks(ctx, name)
		if err != nil || len(links) == 0 {
			return ""
		}
		st, err := group.Verify(ctx, links, pinnedDevices)
		if err != nil {
			return ""
		}
		return st.Title()
	}
}

// conversationColumns are the columns the list cannot be read without
// (table and column): those it selects rows by, sorts by or counts. A
// column of an entry (entryColumns) that a later schema added is read as
// NULL from an older file, as the rows it holds had none.
var conversationColumns = [][2]string{
	{"contacts", "handle"}, {"contacts", "key"}, {"contacts", "flag"}, {"contacts", "flag_key"}, {"contacts", "verified_at"},
	{"groups", "name"}, {"groups", "invited_by"},
	{"messages", "id"}, {"messages", "from_key"}, {"messages", "peer_key"}, {"messages", "peer_handle"}, {"messages", "incoming"},
	{"messages", "sent_at"}, {"messages", "received_at"}, {"messages", "stream_seq"}, {"messages", "trust"}, {"messages", "read"}, {"messages", "grp"},
}

// lastOf is a subquery giving the rowid of the newest message, held ones
// aside, of the conversation where selects, in the display order
// (orderBy): the newest send time and sequence from the conversation's
// index, then among the messages with both (rarely more than one) the
// last stored. One ORDER BY of all four columns would sort each
// conversation's messages instead.
func lastOf(where string) string {
	where += ` AND trust != 'held'`
	return `(SELECT messages.rowid FROM messages,
		(SELECT sent_at AS s, stream_seq AS q FROM messages WHERE ` + where + ` ORDER BY sent_at DESC, stream_seq DESC LIMIT 1)
		WHERE ` + where + ` AND sent_at = s AND stream_seq = q ORDER BY received_at DESC, id DESC LIMIT 1)`
}

// conversations reads the list in one read transaction; title gives a
// group's title, cols are the entry columns to select (entryColumns, or
// what an older file has of them).
func (s *store) conversations(ctx context.Context, title func(string) string, cols string) ([]Conversation, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	var (
		out  []Conversation
		last = map[int64]int{} // message rowid → index in out
	)
	add := func(cv Conversation, rowid sql.NullInt64) {
		if rowid.Valid {
			last[rowid.Int64] = len(out)
		}
		out = append(out, cv)
	}

	// Contacts, with the key a changed handle names (its held messages
	// count as the contact's).
	rows, err := tx.QueryContext(ctx, `SELECT c.handle, c.key, c.flag, c.flag_key, c.verified_at IS NOT NULL,
		`+lastOf(`peer_key = c.key AND grp = ''`)+`
		FROM contacts c`)
	if err != nil {
		return nil, err
	}
	flagKeys := map[int]string{} // index in out of a flagged contact → its flag key
	for rows.Next() {
		var (
			cv          Conversation
			key, fk, fl string
			rowid       sql.NullInt64
		)
		if err := rows.Scan(&cv.Handle, &key, &fl, &fk, &cv.Verified, &rowid); err != nil {
			rows.Close()
			return nil, err
		}
		if cv.Peer, err = kez.ParsePublicKey(key); err != nil {
			rows.Close()
			return nil, fmt.Errorf("a contact's key: %w", err)
		}
		cv.Flag = ContactFlag(fl)
		if cv.Flag != FlagNone {
			flagKeys[len(out)] = fk
		}
		add(cv, rowid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	for i, fk := range flagKeys {
		if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE peer_key IN (?, ?) AND grp = '' AND trust = 'held'`,
			out[i].Peer.String(), fk).Scan(&out[i].Held); err != nil {
			return nil, err
		}
	}

	// Message requests: one row per key (messages_requests), whatever
	// handle it claims.
	rows, err = tx.QueryContext(ctx, `SELECT r.key,
		(SELECT peer_handle FROM messages WHERE from_key = r.key AND trust = 'request' AND grp = '' ORDER BY rowid DESC LIMIT 1),
		`+lastOf(`peer_key = r.key AND grp = ''`)+`
		FROM (SELECT DISTINCT from_key AS key FROM messages WHERE trust = 'request' AND grp = '') r`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		cv := Conversation{Request: true}
		var (
			key   string
			rowid sql.NullInt64
		)
		if err := rows.Scan(&key, &cv.Handle, &rowid); err != nil {
			rows.Close()
			return nil, err
		}
		if cv.Peer, err = kez.ParsePublicKey(key); err != nil {
			rows.Close()
			return nil, fmt.Errorf("a requester's key: %w", err)
		}
		add(cv, rowid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	// Groups (messages_group).
	rows, err = tx.QueryContext(ctx, `SELECT g.name, g.invited_by != '',
		`+lastOf(`grp = g.name AND grp != ''`)+`
		FROM groups g`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var (
			cv    Conversation
			rowid sql.NullInt64
		)
		if err := rows.Scan(&cv.Group, &cv.Request, &rowid); err != nil {
			rows.Close()
			return nil, err
		}
		add(cv, rowid)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}

	if err := fillLast(ctx, tx, out, last, cols); err != nil {
		return nil, err
	}
	if err := fillUnread(ctx, tx, out); err != nil {
		return nil, err
	}
	for i := range out {
		cv := &out[i]
		if cv.Group != "" {
			cv.Title = title(cv.Group)
		}
	}
	slices.SortStableFunc(out, compareConversations)
	return out, tx.Commit()
}

// checkReadable refuses a database this program cannot read the list
// from (at path): a newer schema, or one without a column the list
// needs. It returns the entry columns to select from it.
func checkReadable(ctx context.Context, db *sql.DB, path string) (string, error) {
	var v int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&v); err != nil {
		return "", fmt.Errorf("chat: reading the database %s: %w", path, err)
	}
	if v > schemaVersion {
		return "", fmt.Errorf("%w: %s: %w", ErrSchemaVersion, path, &sqlitedb.NewerSchemaError{Version: v, Known: schemaVersion})
	}
	have := map[[2]string]bool{}
	rows, err := db.QueryContext(ctx, `SELECT t.name, c.name FROM sqlite_schema t, pragma_table_info(t.name) c WHERE t.type = 'table' AND t.name IN ('contacts', 'groups', 'messages')`)
	if err != nil {
		return "", fmt.Errorf("chat: reading the database %s: %w", path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var col [2]string
		if err := rows.Scan(&col[0], &col[1]); err != nil {
			return "", fmt.Errorf("chat: reading the database %s: %w", path, err)
		}
		have[col] = true
	}
	if err := rows.Err(); err != nil {
		return "", fmt.Errorf("chat: reading the database %s: %w", path, err)
	}
	for _, col := range conversationColumns {
		if !have[col] {
			return "", fmt.Errorf("%w: %s: version %d has no column %s.%s", ErrSchemaVersion, path, v, col[0], col[1])
		}
	}
	var cols []string
	for col := range strings.SplitSeq(entryColumns, ",") {
		col = strings.TrimSpace(col)
		if !have[[2]string{"messages", col}] {
			col = "NULL AS " + col
		}
		cols = append(cols, col)
	}
	return strings.Join(cols, ", "), nil
}

// fillLast reads the newest messages, by rowid, into their rows.
func fillLast(ctx context.Context, tx *sql.Tx, out []Conversation, last map[int64]int, cols string) error {
	if len(last) == 0 {
		return nil
	}
	ids := make([]string, 0, len(last))
	for id := range last {
		ids = append(ids, fmt.Sprint(id))
	}
	rows, err := tx.QueryContext(ctx, `SELECT rowid, `+cols+` FROM messages WHERE rowid IN (SELECT value FROM json_each(?))`,
		"["+strings.Join(ids, ",")+"]")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var rowid int64
		e, err := scanEntry(rowidScanner{rows, &rowid})
		if err != nil {
			return err
		}
		out[last[rowid]].Last = e
	}
	return rows.Err()
}

// rowidScanner scans a rowid before an entry's columns.
type rowidScanner struct {
	r     scanner
	rowid *int64
}

func (r rowidScanner) Scan(dest ...any) error {
	return r.r.Scan(append([]any{r.rowid}, dest...)...)
}

// fillUnread counts the received messages not yet read, held ones aside,
// per conversation (messages_unread).
func fillUnread(ctx context.Context, tx *sql.Tx, out []Conversation) error {
	type conv struct {
		peer, group string
		request     bool
	}
	idx := make(map[conv]int, len(out))
	for i, cv := range out {
		k := conv{group: cv.Group}
		if cv.Group == "" {
			k.peer, k.request = cv.Peer.String(), cv.Request
		}
		idx[k] = i
	}
	rows, err := tx.QueryContext(ctx, `SELECT CASE WHEN grp = '' THEN peer_key ELSE '' END, grp, trust = 'request' AND grp = '', count(*)
		FROM messages WHERE read = 0 AND incoming = 1 AND trust IN ('trusted', 'request') GROUP BY 1, 2, 3`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			k conv
			n int
		)
		if err := rows.Scan(&k.peer, &k.group, &k.request, &n); err != nil {
			return err
		}
		if i, ok := idx[k]; ok {
			out[i].Unread += n
		}
	}
	return rows.Err()
}

// compareConversations is the list's order: the newest last message
// first, then rows without messages by handle or group name.
func compareConversations(a, b Conversation) int {
	switch {
	case a.Last != nil && b.Last != nil:
		if c := b.Last.SentAt.Compare(a.Last.SentAt); c != 0 {
			return c
		}
		return cmp.Compare(b.Last.Seq, a.Last.Seq)
	case a.Last != nil:
		return -1
	case b.Last != nil:
		return 1
	}
	return cmp.Compare(a.name(), b.name())
}

// name is what the row sorts by without messages.
func (c Conversation) name() string {
	if c.Group != "" {
		return c.Group
	}
	if c.Handle != "" {
		return c.Handle
	}
	return c.Peer.String()
}
