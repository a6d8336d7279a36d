package files

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/files/format"
	"github.com/kez-lat/kez-chat/internal/sqlitedb"
	"github.com/kez-lat/kez-chat/kez"
)

// indexFileName is the name of the share index inside a state folder.
const indexFileName = "shares.db"

// ErrChanged reports a shared file that changed on disk (or disappeared)
// since it was shared: it is no longer the blob its CID names, so it is not
// served. It is returned as a *[ChangedError]; the owner shares the file
// again to publish the new version.
var ErrChanged = errors.New("files: the shared file changed on disk since it was shared")

// ChangedError is [ErrChanged] with the file.
type ChangedError struct {
	Name string // the name it is shared under
	Path string // where it was on disk
	Gone bool   // the file is missing or unreadable, rather than changed
}

// Error names the shared file and says whether it changed or is gone.
func (e *ChangedError) Error() string {
	what := "changed on disk"
	if e.Gone {
		what = "is gone or unreadable"
	}
	return fmt.Sprintf("files: %q (%s) %s since it was shared, so it is not served under its old CID; share it again to publish the new version", e.Name, e.Path, what)
}

// Is matches [ErrChanged].
func (e *ChangedError) Is(target error) bool { return target == ErrChanged }

// The index schema. A row is one shared file: public rows are served from
// the file itself, private rows from the file encrypted on the fly with
// the stored file key (EncryptReader), so nothing is copied. leaves holds
// the blob's leaf hashes (32 bytes per 256 KiB chunk), so serving starts
// without re-hashing; mtime_ns and size detect a change before serving.
// stale_* remember a stat that was already found changed, so a changed
// file is re-hashed once, not on every request. It is schema version 1; a
// change is a further migration (see sqlitedb.Migrate), not an edit.
const indexSchema = `
CREATE TABLE shares (
	id             INTEGER PRIMARY KEY,
	name           TEXT    NOT NULL,
	path           TEXT    NOT NULL,
	cid            TEXT    NOT NULL,
	size           INTEGER NOT NULL,
	mtime_ns       INTEGER NOT NULL,
	media_type     TEXT    NOT NULL,
	private        INTEGER NOT NULL,
	file_key       BLOB,
	leaves         BLOB    NOT NULL,
	shared_at      INTEGER NOT NULL,
	stale_size     INTEGER,
	stale_mtime_ns INTEGER
);
CREATE INDEX shares_cid ON shares(cid);
CREATE INDEX shares_name ON shares(name);
CREATE TABLE recipients (
	share_id INTEGER NOT NULL REFERENCES shares(id) ON DELETE CASCADE,
	key      TEXT    NOT NULL,
	handle   TEXT    NOT NULL,
	PRIMARY KEY (share_id, key)
);
`

// indexSchemaGroups (schema version 2) records the group a private share
// went to (docs/spec/manifest.md §7): its address, ID and chain at share
// time (seqno and head, which later reads must extend), and the
// sig-server its chain is read from. Its columns are named apart from
// those of shares, so that a condition on shares stays unambiguous when
// the two are joined.
const indexSchemaGroups = `
CREATE TABLE share_groups (
	share_id         INTEGER PRIMARY KEY REFERENCES shares(id) ON DELETE CASCADE,
	group_name       TEXT    NOT NULL,
	group_id         BLOB    NOT NULL,
	group_seqno      INTEGER NOT NULL,
	group_head       TEXT    NOT NULL,
	group_sig_server TEXT    NOT NULL
);
`

// index is the share index: a SQLite file in the state folder, read on
// every request so that a share made by another process (kez share while
// kez serve runs) is served at once. It is the BlobSource and Policy of
// the Sharing's node. Safe for concurrent use.
type index struct {
	db  *sql.DB
	log *slog.Logger

	mu    sync.Mutex
	trees map[cid.Cid]*format.Tree // trees are immutable per CID
	// rehash serialises re-hashing files whose stat changed.
	rehash sync.Mutex
}

// shareRow is one row of the index.
type shareRow struct {
	id         int64
	Name       string
	Path       string
	CID        cid.Cid
	Size       int64 // plaintext
	MTimeNs    int64
	MediaType  string
	Private    bool
	Key        format.FileKey
	SharedAt   time.Time
	Recipients []format.Recipient // private rows: who may fetch (keys only)
	Handles    []string           // their handles, parallel to Recipients
	Group      *groupRef          // the group of a private share to one; nil otherwise

	ownerKey kez.PublicKey // set by the Sharing, for listing
}

func openIndex(home string, log *slog.Logger) (*index, error) {
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("files: making the state folder: %w", err)
	}
	path := filepath.Join(home, indexFileName)
	// 0600: the index holds the keys of private files.
	db, err := sqlitedb.Open(path, sqlitedb.Options{FileMode: 0o600})
	if err != nil {
		return nil, fmt.Errorf("files: opening the share index %s: %w", path, err)
	}
	if err := sqlitedb.Migrate(db, []string{indexSchema, indexSchemaGroups, indexSchemaFetched}); err != nil {
		db.Close()
		return nil, fmt.Errorf("files: preparing the share index %s: %w", path, err)
	}
	return &index{db: db, log: log, trees: map[cid.Cid]*format.Tree{}}, nil
}

func (x *index) close() error { return x.db.Close() }

func encodeLeaves(t *format.Tree) []byte {
	b := make([]byte, 0, t.NumChunks()*format.HashSize)
	for _, h := range t.Leaves(0, t.NumChunks()) {
		b = append(b, h[:]...)
	}
	return b
}

// insert records a share and returns its row ID.
func (x *index) insert(ctx context.Context, r *shareRow, t *format.Tree) (int64, error) {
	tx, err := x.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("files: recording the share: %w", err)
	}
	defer tx.Rollback()
	var key []byte
	if r.Private {
		key = r.Key[:]
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO shares (name, path, cid, size, mtime_ns, media_type, private, file_key, leaves, shared_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.Name, r.Path, r.CID.String(), r.Size, r.MTimeNs, r.MediaType, r.Private, key, encodeLeaves(t), r.SharedAt.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("files: recording the share: %w", err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, fmt.Errorf("files: recording the share: %w", err)
	}
	for i, rc := range r.Recipients {
		if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO recipients (share_id, key, handle) VALUES (?, ?, ?)`,
			id, rc.Key.String(), r.Handles[i]); err != nil {
			return 0, fmt.Errorf("files: recording the share: %w", err)
		}
	}
	if g := r.Group; g != nil {
		if _, err := tx.ExecContext(ctx, `INSERT INTO share_groups (share_id, group_name, group_id, group_seqno, group_head, group_sig_server) VALUES (?, ?, ?, ?, ?, ?)`,
			id, g.name, g.id[:], int64(g.seqno), g.head, g.sigServer); err != nil {
			return 0, fmt.Errorf("files: recording the share: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("files: recording the share: %w", err)
	}
	x.mu.Lock()
	x.cacheTree(t)
	x.mu.Unlock()
	return id, nil
}

// deleteIDs removes rows by ID.
func (x *index) deleteIDs(ctx context.Context, ids ...int64) error {
	for _, id := range ids {
		if _, err := x.db.ExecContext(ctx, `DELETE FROM shares WHERE id = ?`, id); err != nil {
			return fmt.Errorf("files: updating the share index: %w", err)
		}
	}
	return nil
}

// rows returns the rows matching where (a SQL condition on shares), with
// their recipients if asked, in sharing order.
func (x *index) rows(ctx context.Context, withRecipients bool, where string, args ...any) ([]*shareRow, error) {
	q := `SELECT id, name, path, cid, size, mtime_ns, media_type, private, file_key, shared_at,
		group_name, group_id, group_seqno, group_head, group_sig_server FROM shares LEFT JOIN share_groups ON share_id = id`
	if where != "" {
		q += " WHERE " + where
	}
	rs, err := x.db.QueryContext(ctx, q+" ORDER BY id", args...)
	if err != nil {
		return nil, fmt.Errorf("files: reading the share index: %w", err)
	}
	defer rs.Close()
	var out []*shareRow
	byID := map[int64]*shareRow{}
	for rs.Next() {
		r := &shareRow{}
		var cs string
		var key []byte
		var at int64
		var gs groupScan
		if err := rs.Scan(&r.id, &r.Name, &r.Path, &cs, &r.Size, &r.MTimeNs, &r.MediaType, &r.Private, &key, &at,
			&gs.name, &gs.id, &gs.seqno, &gs.head, &gs.sigServer); err != nil {
			return nil, fmt.Errorf("files: reading the share index: %w", err)
		}
		if r.Group, err = gs.ref(); err != nil {
			return nil, err
		}
		c, err := format.ParseCID(cs)
		if err != nil {
			return nil, fmt.Errorf("files: the share index holds a bad CID %q: %w", cs, err)
		}
		r.CID = c
		if r.Private && len(key) != len(r.Key) {
			return nil, fmt.Errorf("files: the share index holds a private share %q without its key", r.Name)
		}
		copy(r.Key[:], key)
		r.SharedAt = time.UnixMilli(at)
		out = append(out, r)
		byID[r.id] = r
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("files: reading the share index: %w", err)
	}
	rs.Close()
	if len(out) == 0 || !withRecipients {
		return out, nil
	}
	rr, err := x.db.QueryContext(ctx, `SELECT share_id, key, handle FROM recipients ORDER BY rowid`)
	if err != nil {
		return nil, fmt.Errorf("files: reading the share index: %w", err)
	}
	defer rr.Close()
	for rr.Next() {
		var id int64
		var ks, h string
		if err := rr.Scan(&id, &ks, &h); err != nil {
			return nil, fmt.Errorf("files: reading the share index: %w", err)
		}
		r := byID[id]
		if r == nil {
			continue
		}
		k, err := kez.ParsePublicKey(ks)
		if err != nil {
			return nil, fmt.Errorf("files: the share index holds a bad recipient key: %w", err)
		}
		r.Recipients = append(r.Recipients, format.Recipient{Key: k})
		r.Handles = append(r.Handles, h)
	}
	return out, rr.Err()
}

func (x *index) cacheTree(t *format.Tree) {
	if len(x.trees) >= 64 {
		clear(x.trees)
	}
	x.trees[t.CID()] = t
}

// tree returns the stored tree of row id, which has blob c.
func (x *index) tree(ctx context.Context, id int64, c cid.Cid, blobSize int64) (*format.Tree, error) {
	x.mu.Lock()
	t := x.trees[c]
	x.mu.Unlock()
	if t != nil {
		return t, nil
	}
	var b []byte
	if err := x.db.QueryRowContext(ctx, `SELECT leaves FROM shares WHERE id = ?`, id).Scan(&b); err != nil {
		return nil, fmt.Errorf("files: reading the share index: %w", err)
	}
	return x.treeOfLeaves(b, c, blobSize)
}

// treeOfLeaves makes (and caches) the tree of blob c from its stored leaf
// hashes, checking that they make c.
func (x *index) treeOfLeaves(b []byte, c cid.Cid, blobSize int64) (*format.Tree, error) {
	if len(b)%format.HashSize != 0 {
		return nil, fmt.Errorf("files: the share index holds damaged leaf hashes for %s", c)
	}
	leaves := make([]format.Hash, len(b)/format.HashSize)
	for i := range leaves {
		copy(leaves[i][:], b[i*format.HashSize:])
	}
	t, err := format.NewTree(blobSize, leaves)
	if err != nil || !t.CID().Equals(c) {
		return nil, fmt.Errorf("files: the share index holds leaf hashes that do not match %s", c)
	}
	x.mu.Lock()
	x.cacheTree(t)
	x.mu.Unlock()
	return t, nil
}

// blobSize is the size of a row's blob.
func (r *shareRow) blobSize() int64 {
	if r.Private {
		return format.EncryptedSize(r.Size)
	}
	return r.Size
}

// hashShare returns the tree of the blob a file of the given size makes:
// the file itself, or its encryption under key for a private share.
func hashShare(f *os.File, size int64, private bool, key format.FileKey) (*format.Tree, error) {
	if !private {
		return format.HashReaderAt(f, size)
	}
	er, err := format.NewEncryptReader(f, size, key)
	if err != nil {
		return nil, err
	}
	return format.HashReaderAt(er, er.Size())
}

// OpenBlob implements BlobSource: it serves a shared file if it is still
// the blob it was shared as. A file whose size or modification time
// changed is re-hashed; if it still matches (touched, not changed) the new
// time is recorded, otherwise the error is a *ChangedError (and the owner's
// node tells the fetcher).
func (x *index) OpenBlob(ctx context.Context, c cid.Cid) (Blob, error) {
	rows, err := x.rows(ctx, false, "cid = ?", c.String())
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 {
		return nil, ErrNotFound
	}
	var firstErr error
	for _, r := range rows {
		b, err := x.open(ctx, r)
		if err == nil {
			return b, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, firstErr
}

func (x *index) open(ctx context.Context, r *shareRow) (Blob, error) {
	f, err := os.Open(r.Path)
	if err != nil {
		gone := &ChangedError{Name: r.Name, Path: r.Path, Gone: true}
		x.log.Warn("files: a shared file is gone", "name", r.Name, "path", r.Path, "err", fmt.Errorf("%w: %w", gone, err))
		return nil, gone
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, &ChangedError{Name: r.Name, Path: r.Path, Gone: true}
	}
	if st.Size() != r.Size || st.ModTime().UnixNano() != r.MTimeNs {
		if err := x.recheck(ctx, r, f, st); err != nil {
			f.Close()
			return nil, err
		}
	}
	t, err := x.tree(ctx, r.id, r.CID, r.blobSize())
	if err != nil {
		f.Close()
		return nil, err
	}
	if !r.Private {
		return &indexBlob{ReaderAt: f, c: f, tree: t}, nil
	}
	er, err := format.NewEncryptReader(f, r.Size, r.Key)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &indexBlob{ReaderAt: er, c: f, tree: t}, nil
}

// recheck re-hashes a file whose stat differs from the index: the same
// blob means it was only touched (the new time is recorded); anything else
// is a *ChangedError, remembered so it is not re-hashed on every request.
func (x *index) recheck(ctx context.Context, r *shareRow, f *os.File, st os.FileInfo) error {
	changed := &ChangedError{Name: r.Name, Path: r.Path}
	size, mtime := st.Size(), st.ModTime().UnixNano()
	x.rehash.Lock()
	defer x.rehash.Unlock()
	var ss, sm sql.NullInt64
	if err := x.db.QueryRowContext(ctx, `SELECT stale_size, stale_mtime_ns FROM shares WHERE id = ?`, r.id).Scan(&ss, &sm); err != nil {
		return fmt.Errorf("files: reading the share index: %w", err)
	}
	if ss.Valid && ss.Int64 == size && sm.Int64 == mtime {
		return changed // already found changed, and not touched since
	}
	var t *format.Tree
	var err error
	if size == r.Size {
		t, err = hashShare(f, size, r.Private, r.Key)
	}
	if err == nil && t != nil && t.CID().Equals(r.CID) {
		x.log.Info("files: a shared file was touched but not changed", "name", r.Name, "path", r.Path)
		_, err := x.db.ExecContext(ctx, `UPDATE shares SET mtime_ns = ?, stale_size = NULL, stale_mtime_ns = NULL WHERE id = ?`, mtime, r.id)
		if err != nil {
			return fmt.Errorf("files: updating the share index: %w", err)
		}
		return nil
	}
	x.log.Warn("files: a shared file changed on disk since it was shared; it is not served until it is shared again",
		"name", r.Name, "path", r.Path, "cid", r.CID, "err", changed)
	if _, err := x.db.ExecContext(ctx, `UPDATE shares SET stale_size = ?, stale_mtime_ns = ? WHERE id = ?`, size, mtime, r.id); err != nil {
		return fmt.Errorf("files: updating the share index: %w", err)
	}
	return changed
}

// Allow implements Policy: a blob the index does not know is left to
// OpenBlob (which answers "not found"), a public one is allowed to
// everyone, a private one to its recipients (those of a share to a group
// are left to the Sharing's policy, which checks they are still members).
// A database error refuses.
func (x *index) Allow(peer kez.PublicKey, c cid.Cid) bool {
	var known, public, recipient bool
	err := x.db.QueryRow(`SELECT
		EXISTS (SELECT 1 FROM shares WHERE cid = ?1),
		EXISTS (SELECT 1 FROM shares WHERE cid = ?1 AND private = 0),
		EXISTS (SELECT 1 FROM shares s JOIN recipients r ON r.share_id = s.id WHERE s.cid = ?1 AND r.key = ?2
			AND NOT EXISTS (SELECT 1 FROM share_groups g WHERE g.share_id = s.id))`,
		c.String(), peer.String()).Scan(&known, &public, &recipient)
	if err != nil {
		x.log.Error("files: reading the share index", "err", err)
		return false
	}
	return !known || public || recipient
}

// isPublic reports whether blob c is a public file of the index.
func (x *index) isPublic(ctx context.Context, c cid.Cid) (bool, error) {
	var public bool
	err := x.db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM shares WHERE cid = ? AND private = 0)`, c.String()).Scan(&public)
	if err != nil {
		return false, fmt.Errorf("files: reading the share index: %w", err)
	}
	return public, nil
}

// recipientsOf returns the recipients of the private rows of blob c,
// each once per group (a share to a group names it).
func (x *index) recipientsOf(ctx context.Context, c cid.Cid) ([]recipient, error) {
	rs, err := x.db.QueryContext(ctx, `SELECT r.key, MIN(r.handle), g.group_name, g.group_id, g.group_seqno, g.group_head, g.group_sig_server
		FROM shares s JOIN recipients r ON r.share_id = s.id LEFT JOIN share_groups g ON g.share_id = s.id
		WHERE s.cid = ? AND s.private = 1 GROUP BY r.key, g.share_id ORDER BY MIN(r.rowid)`, c.String())
	if err != nil {
		return nil, fmt.Errorf("files: reading the share index: %w", err)
	}
	defer rs.Close()
	var out []recipient
	for rs.Next() {
		var ks, h string
		var gs groupScan
		if err := rs.Scan(&ks, &h, &gs.name, &gs.id, &gs.seqno, &gs.head, &gs.sigServer); err != nil {
			return nil, fmt.Errorf("files: reading the share index: %w", err)
		}
		k, err := kez.ParsePublicKey(ks)
		if err != nil {
			return nil, fmt.Errorf("files: the share index holds a bad recipient key: %w", err)
		}
		g, err := gs.ref()
		if err != nil {
			return nil, err
		}
		out = append(out, recipient{key: k, handle: h, group: g})
	}
	return out, rs.Err()
}

// groupScan reads the share_groups columns of a LEFT JOIN.
type groupScan struct {
	name, head, sigServer sql.NullString
	id                    []byte
	seqno                 sql.NullInt64
}

// ref is the group scanned, nil for a row without one.
func (g *groupScan) ref() (*groupRef, error) {
	if !g.name.Valid {
		return nil, nil
	}
	if len(g.id) != 32 || g.seqno.Int64 < 1 {
		return nil, fmt.Errorf("files: the share index holds a damaged group for %s", g.name.String)
	}
	return &groupRef{name: g.name.String, id: [32]byte(g.id), seqno: uint64(g.seqno.Int64), head: g.head.String, sigServer: g.sigServer.String}, nil
}

// indexBlob is an open shared file (or its encryption).
type indexBlob struct {
	io.ReaderAt
	c    io.Closer
	tree *format.Tree
}

func (b *indexBlob) Close() error       { return b.c.Close() }
func (b *indexBlob) Tree() *format.Tree { return b.tree }
