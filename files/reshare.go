package files

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/files/internal/signal"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// indexSchemaFetched (schema version 3) records the public files this
// install fetched, which it re-serves with [Config.Reshare]: where each is,
// its size and modification time when the fetch completed (a file that
// changed since is not served), its blob, whose it is (the owner's person
// key and handle) and the serving device it came from (which the haves go
// to). leaves is NULL until the file is first served: it is hashed then,
// once, and must still be the blob.
const indexSchemaFetched = `
CREATE TABLE fetched (
	path         TEXT    PRIMARY KEY,
	cid          TEXT    NOT NULL,
	name         TEXT    NOT NULL,
	size         INTEGER NOT NULL,
	mtime_ns     INTEGER NOT NULL,
	owner        TEXT    NOT NULL,
	owner_handle TEXT    NOT NULL,
	device       TEXT    NOT NULL,
	leaves       BLOB,
	fetched_at   INTEGER NOT NULL
);
CREATE INDEX fetched_cid ON fetched(cid);
`

// announceTick is how often a re-sharing Serve looks for haves to send:
// files fetched since (by another process, say) are announced within it,
// the others every [signal.HaveInterval].
const announceTick = time.Minute

// FetchedFile is a public file this install fetched ([Sharing.Fetched]),
// which Serve re-serves with [Config.Reshare].
type FetchedFile struct {
	Name      string  // its name in the owner's list
	Path      string  // where it was saved (absolute)
	CID       cid.Cid // its blob
	Size      int64
	ModTime   time.Time     // the file's modification time when the fetch completed
	Owner     string        // the owner's handle
	OwnerKey  kez.PublicKey // the owner's person key
	Device    kez.PublicKey // the owner's device it came from
	FetchedAt time.Time
	// Changed reports a file that changed on disk (or is gone) since it
	// was fetched: it is not re-served.
	Changed bool
}

// fetchedRow is one row of the fetched table.
type fetchedRow struct {
	FetchedFile
	mtimeNs int64
}

// unchanged reports whether the file at r.Path still has the size and
// modification time it had when fetched.
func (r *fetchedRow) unchanged() bool {
	st, err := os.Stat(r.Path)
	return err == nil && st.Mode().IsRegular() && st.Size() == r.Size && st.ModTime().UnixNano() == r.mtimeNs
}

// recordFetched records a completed public fetch (replacing an earlier
// one to the same path).
func (x *index) recordFetched(ctx context.Context, f FetchedFile) error {
	abs, err := filepath.Abs(f.Path)
	if err != nil {
		return fmt.Errorf("files: recording the fetch: %w", err)
	}
	f.Path = abs
	st, err := os.Stat(f.Path)
	if err != nil {
		return fmt.Errorf("files: recording the fetch: %w", err)
	}
	_, err = x.db.ExecContext(ctx, `INSERT OR REPLACE INTO fetched (path, cid, name, size, mtime_ns, owner, owner_handle, device, fetched_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, f.Path, f.CID.String(), f.Name, st.Size(), st.ModTime().UnixNano(),
		f.OwnerKey.String(), f.Owner, f.Device.String(), f.FetchedAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("files: recording the fetch: %w", err)
	}
	return nil
}

// fetchedRows returns the fetched files matching where (a SQL condition),
// oldest first.
func (x *index) fetchedRows(ctx context.Context, where string, args ...any) ([]*fetchedRow, error) {
	q := `SELECT path, cid, name, size, mtime_ns, owner, owner_handle, device, fetched_at FROM fetched`
	if where != "" {
		q += " WHERE " + where
	}
	rs, err := x.db.QueryContext(ctx, q+" ORDER BY fetched_at, path", args...)
	if err != nil {
		return nil, fmt.Errorf("files: reading the share index: %w", err)
	}
	defer rs.Close()
	var out []*fetchedRow
	for rs.Next() {
		r := &fetchedRow{}
		var cs, owner, dev string
		var at int64
		if err := rs.Scan(&r.Path, &cs, &r.Name, &r.Size, &r.mtimeNs, &owner, &r.Owner, &dev, &at); err != nil {
			return nil, fmt.Errorf("files: reading the share index: %w", err)
		}
		if r.CID, err = format.ParseCID(cs); err != nil {
			return nil, fmt.Errorf("files: the share index holds a bad CID %q: %w", cs, err)
		}
		if r.OwnerKey, err = kez.ParsePublicKey(owner); err != nil {
			return nil, fmt.Errorf("files: the share index holds a bad owner key: %w", err)
		}
		if r.Device, err = kez.ParsePublicKey(dev); err != nil {
			return nil, fmt.Errorf("files: the share index holds a bad device key: %w", err)
		}
		r.ModTime, r.FetchedAt = time.Unix(0, r.mtimeNs).Truncate(time.Second), time.UnixMilli(at)
		out = append(out, r)
	}
	return out, rs.Err()
}

// openFetched opens a fetched file with blob c, if one is unchanged on
// disk; a changed one is skipped with a log line.
func (x *index) openFetched(ctx context.Context, c cid.Cid) (Blob, error) {
	rows, err := x.fetchedRows(ctx, "cid = ?", c.String())
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if !r.unchanged() {
			x.log.Info("files: a fetched file changed on disk since it was fetched, so it is not re-served", "path", r.Path, "cid", c)
			continue
		}
		t, err := x.fetchedTree(ctx, r)
		if err != nil {
			x.log.Warn("files: a fetched file is no longer the blob it was fetched as, so it is not re-served", "path", r.Path, "cid", c, "err", err)
			continue
		}
		f, err := os.Open(r.Path)
		if err != nil {
			continue
		}
		return &indexBlob{ReaderAt: f, c: f, tree: t}, nil
	}
	return nil, ErrNotFound
}

// fetchedTree returns the tree of a fetched file: from its stored leaf
// hashes, else by hashing the file, once (it must still be the blob).
func (x *index) fetchedTree(ctx context.Context, r *fetchedRow) (*format.Tree, error) {
	var b []byte
	if err := x.db.QueryRowContext(ctx, `SELECT leaves FROM fetched WHERE path = ?`, r.Path).Scan(&b); err != nil {
		return nil, fmt.Errorf("files: reading the share index: %w", err)
	}
	if b != nil {
		return x.treeOfLeaves(b, r.CID, r.Size)
	}
	x.rehash.Lock()
	defer x.rehash.Unlock()
	t, err := format.HashFile(r.Path)
	if err != nil {
		return nil, err
	}
	if !t.CID().Equals(r.CID) {
		return nil, fmt.Errorf("%w: it hashes to %s", ErrChanged, t.CID())
	}
	if _, err := x.db.ExecContext(ctx, `UPDATE fetched SET leaves = ? WHERE path = ?`, encodeLeaves(t), r.Path); err != nil {
		return nil, fmt.Errorf("files: updating the share index: %w", err)
	}
	return t, nil
}

// Fetched returns the public files this install fetched, oldest first:
// what Serve re-serves with [Config.Reshare] (those not Changed).
func (s *Sharing) Fetched(ctx context.Context) ([]FetchedFile, error) {
	rows, err := s.idx.fetchedRows(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]FetchedFile, 0, len(rows))
	for _, r := range rows {
		r.Changed = !r.unchanged()
		out = append(out, r.FetchedFile)
	}
	return out, nil
}

// recordFetch records a completed fetch of the public entry e from the
// owner's device dev to dst and, when this sharing re-serves and is
// serving, tells that device at once. A failure is logged: the file was
// fetched.
func (s *Sharing) recordFetch(ctx context.Context, ow *owner, dev kez.PublicKey, e format.Entry, dst string) {
	f := FetchedFile{Name: e.Name, Path: dst, CID: e.CID, Owner: ow.handle, OwnerKey: ow.key, Device: dev, FetchedAt: s.now()}
	if err := s.idx.recordFetched(context.WithoutCancel(ctx), f); err != nil {
		s.log.Warn("files: recording a fetched file", "path", dst, "err", err)
		return
	}
	if !s.cfg.Reshare || !s.serving.Load() {
		return
	}
	node, nc, err := s.network(ctx)
	if err != nil {
		return
	}
	s.sendHave(nc, node, dev, e.CID)
}

// sendHave tells the owner's device dev that this node serves blob c.
func (s *Sharing) sendHave(nc *nats.Conn, node *Node, dev kez.PublicKey, c cid.Cid) {
	if err := signal.SendHave(nc, s.dev, dev, c, node.Addrs(), s.now()); err != nil {
		s.log.Warn("files: telling an owner this node re-serves their file", "cid", c, "err", err)
	}
}

// announce sends, until ctx ends, a have for each fetched file that is
// unchanged on disk: at once, then every [signal.HaveInterval] (files
// fetched in between within [announceTick]).
func (s *Sharing) announce(ctx context.Context, nc *nats.Conn, node *Node) {
	type sentKey struct{ c, dev string }
	sent := map[sentKey]time.Time{}
	t := time.NewTicker(announceTick)
	defer t.Stop()
	for {
		rows, err := s.idx.fetchedRows(ctx, "")
		if err != nil && !errors.Is(ctx.Err(), context.Canceled) {
			s.log.Warn("files: reading the fetched files to announce", "err", err)
		}
		now := s.now()
		for _, r := range rows {
			k := sentKey{r.CID.KeyString(), r.Device.String()}
			if at, ok := sent[k]; (ok && now.Sub(at) < signal.HaveInterval) || !r.unchanged() {
				continue
			}
			s.sendHave(nc, node, r.Device, r.CID)
			sent[k] = now
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// openReshared is where a re-sharing node looks for a blob the share
// index does not have (err from its OpenBlob): the fetched files.
func (s *Sharing) openReshared(ctx context.Context, c cid.Cid, err error) (Blob, error) {
	if !s.cfg.Reshare || !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	return s.idx.openFetched(ctx, c)
}
