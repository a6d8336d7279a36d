package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
)

// groups is version 5: the groups' membership chains (package group),
// one row a link like the chains' links, and the creator of each group,
// for the sig-server's cap on the groups one person creates.
const groups = `
CREATE TABLE group_links (
	grp   TEXT    NOT NULL, -- the group's name, name@domain
	seqno INTEGER NOT NULL,
	id    TEXT    NOT NULL, -- link ID, CID text
	link  BLOB    NOT NULL, -- the link's exact canonical bytes
	PRIMARY KEY (grp, seqno)
) WITHOUT ROWID;
CREATE TABLE group_creators (
	grp     TEXT NOT NULL PRIMARY KEY, -- the group's name
	creator TEXT NOT NULL              -- the person key that signed its create link, nkey text (U…)
) WITHOUT ROWID;
CREATE INDEX group_creators_creator ON group_creators (creator);
`

// Groups is the [group.Store] in the same database file as the chains:
// tables group_links and group_creators (schema version 5). It is safe
// for concurrent use, also by several processes on one file.
type Groups struct{ s *Store }

var _ group.Store = (*Groups)(nil)

// Groups returns the store's [group.Store].
func (s *Store) Groups() *Groups { return &Groups{s} }

func groupHead(ctx context.Context, q querier, name string) (group.Head, error) {
	var seqno uint64
	var id string
	err := q.QueryRowContext(ctx, "SELECT seqno, id FROM group_links WHERE grp = ? ORDER BY seqno DESC LIMIT 1", name).Scan(&seqno, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return group.Head{}, group.ErrNotFound
	}
	if err != nil {
		return group.Head{}, fmt.Errorf("sqlitestore: reading a group's head: %w", err)
	}
	c, err := cid.Decode(id)
	if err != nil {
		return group.Head{}, fmt.Errorf("sqlitestore: stored group head ID %q: %w", id, err)
	}
	return group.Head{Seqno: seqno, ID: c}, nil
}

// Head implements [group.Store].
func (g *Groups) Head(ctx context.Context, name string) (group.Head, error) {
	return groupHead(ctx, g.s.db, name)
}

// Links implements [group.Store]. The links and the head are read in one
// transaction.
func (g *Groups) Links(ctx context.Context, name string, since uint64, limit int) ([][]byte, group.Head, error) {
	tx, err := g.s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, group.Head{}, fmt.Errorf("sqlitestore: %w", err)
	}
	defer tx.Rollback()
	h, err := groupHead(ctx, tx, name)
	if err != nil {
		return nil, group.Head{}, err
	}
	out, err := readLinks(ctx, tx, "SELECT link FROM group_links WHERE grp = ? AND seqno > ? ORDER BY seqno LIMIT ?", name, since, limit)
	if err != nil {
		return nil, group.Head{}, err
	}
	return out, h, nil
}

// Append implements [group.Store]: inside one IMMEDIATE transaction it
// reads the head, checks that link follows it ([group.Follows]), inserts
// it, and for a create link records its creator.
func (g *Groups) Append(ctx context.Context, link *group.Link) error {
	s := g.s
	s.mu.Lock()
	defer s.mu.Unlock()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: %w", err)
	}
	defer tx.Rollback()
	name := link.Group()
	h, err := groupHead(ctx, tx, name)
	if err != nil && !errors.Is(err, group.ErrNotFound) {
		return err
	}
	if !group.Follows(h, link) {
		return &group.ConflictError{Head: h}
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO group_links (grp, seqno, id, link) VALUES (?, ?, ?, ?)",
		name, int64(link.Seqno()), link.ID().String(), link.Bytes()); err != nil {
		return fmt.Errorf("sqlitestore: storing a group link: %w", err)
	}
	if link.Seqno() == 1 {
		if _, err := tx.ExecContext(ctx, "INSERT INTO group_creators (grp, creator) VALUES (?, ?)", name, link.By().String()); err != nil {
			return fmt.Errorf("sqlitestore: storing a group's creator: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: storing a group link: %w", err)
	}
	return nil
}

// CreatedBy implements [group.Store].
func (g *Groups) CreatedBy(ctx context.Context, person kez.PublicKey) (int, error) {
	var n int
	if err := g.s.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM group_creators WHERE creator = ?", person.String()).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlitestore: counting a person's groups: %w", err)
	}
	return n, nil
}
