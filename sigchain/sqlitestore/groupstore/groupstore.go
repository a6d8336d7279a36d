// Package groupstore is the sig-server's SQLite [group.Store]: the
// groups' membership chains in the file of a [sqlitestore.Store], beside
// the sigchains (tables group_links and group_creators, schema version 5
// of that package), with the same guarantees: an atomic head check
// inside each append transaction, FULL synchronous commits, several
// processes on one file.
//
//	chains, err := sqlitestore.Open("kez-sig.db")
//	groups := groupstore.New(chains)
//	http.Handle(group.GroupsPath, group.NewHandler(groups, chains))
//
// It is a package of its own, not a method of sqlitestore.Store, so that
// sqlitestore stays below package group (whose handle rules come from
// package handles, whose tests run a sig-server over sqlitestore).
package groupstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain/sqlitestore"
)

// Store is the [group.Store] in the file of a [sqlitestore.Store]. It is
// safe for concurrent use, also by several processes on one file.
type Store struct{ s *sqlitestore.Store }

var _ group.Store = (*Store)(nil)

// New returns the group store in chains' file. It is open as long as
// chains is.
func New(chains *sqlitestore.Store) *Store { return &Store{chains} }

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func head(ctx context.Context, q querier, name string) (group.Head, error) {
	var seqno uint64
	var id string
	err := q.QueryRowContext(ctx, "SELECT seqno, id FROM group_links WHERE grp = ? ORDER BY seqno DESC LIMIT 1", name).Scan(&seqno, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return group.Head{}, group.ErrNotFound
	}
	if err != nil {
		return group.Head{}, fmt.Errorf("groupstore: reading a group's head: %w", err)
	}
	c, err := cid.Decode(id)
	if err != nil {
		return group.Head{}, fmt.Errorf("groupstore: stored group head ID %q: %w", id, err)
	}
	return group.Head{Seqno: seqno, ID: c}, nil
}

// Head implements [group.Store].
func (g *Store) Head(ctx context.Context, name string) (group.Head, error) {
	var h group.Head
	err := g.s.ReadTx(ctx, func(tx *sql.Tx) (err error) {
		h, err = head(ctx, tx, name)
		return err
	})
	return h, err
}

// Links implements [group.Store]. The links and the head are read in one
// transaction.
func (g *Store) Links(ctx context.Context, name string, since uint64, limit int) ([][]byte, group.Head, error) {
	var (
		h   group.Head
		out [][]byte
	)
	err := g.s.ReadTx(ctx, func(tx *sql.Tx) error {
		var err error
		if h, err = head(ctx, tx, name); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, "SELECT link FROM group_links WHERE grp = ? AND seqno > ? ORDER BY seqno LIMIT ?", name, int64(min(since, 1<<62)), max(limit, 0))
		if err != nil {
			return fmt.Errorf("groupstore: reading group links: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				return fmt.Errorf("groupstore: reading group links: %w", err)
			}
			out = append(out, b)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("groupstore: reading group links: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, group.Head{}, err
	}
	return out, h, nil
}

// Append implements [group.Store]: inside one IMMEDIATE transaction it
// reads the head, checks that link follows it ([group.Follows]), inserts
// it, and for a create link records its creator.
func (g *Store) Append(ctx context.Context, link *group.Link) error {
	name := link.Group()
	return g.s.WriteTx(ctx, func(tx *sql.Tx) error {
		h, err := head(ctx, tx, name)
		if err != nil && !errors.Is(err, group.ErrNotFound) {
			return err
		}
		if !group.Follows(h, link) {
			return &group.ConflictError{Head: h}
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO group_links (grp, seqno, id, link) VALUES (?, ?, ?, ?)",
			name, int64(link.Seqno()), link.ID().String(), link.Bytes()); err != nil {
			return fmt.Errorf("groupstore: storing a group link: %w", err)
		}
		if link.Seqno() == 1 {
			if _, err := tx.ExecContext(ctx, "INSERT INTO group_creators (grp, creator) VALUES (?, ?)", name, link.By().String()); err != nil {
				return fmt.Errorf("groupstore: storing a group's creator: %w", err)
			}
		}
		return nil
	})
}

// CreatedBy implements [group.Store].
func (g *Store) CreatedBy(ctx context.Context, person kez.PublicKey) (int, error) {
	var n int
	err := g.s.ReadTx(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM group_creators WHERE creator = ?", person.String()).Scan(&n); err != nil {
			return fmt.Errorf("groupstore: counting a person's groups: %w", err)
		}
		return nil
	})
	return n, err
}
