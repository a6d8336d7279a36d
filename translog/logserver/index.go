package logserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/translog"
)

// indexConns is the size of index.db's connection pool, idle and open
// alike: one writer (the [Log.writeIndex] goroutine) and readers
// ([Log.Logged] on a cache miss, [Log.Proof]). Every connection stays
// open: under load hundreds of appends are answered together after each
// checkpoint, and a pool that closes its idle connections opens new
// ones (the schema read, the pragmas) for each burst.
const indexConns = 8

// maxGroup is the most [Log.AppendAll] calls whose rows one index
// transaction records.
const maxGroup = 1024

// maxNewest is the most keys whose newest entry [Log] keeps in memory.
const maxNewest = 1 << 16

// record asks the index writer to record the rows of entries es at
// indexes idx; done receives the outcome once.
type record struct {
	es   []translog.Entry
	idx  []uint64
	done chan error
}

// writeIndex is the one goroutine that writes index.db after Open: it
// takes every record waiting, writes their rows in one transaction (a
// group commit: one commit, one WAL sync for all the appends a checkpoint
// published at once), then updates the cache of newest entries and
// answers each. It returns when l.quit is closed.
func (l *Log) writeIndex(ctx context.Context) {
	defer close(l.writerDone)
	for {
		var group []*record
		select {
		case r := <-l.records:
			group = append(group, r)
		case <-l.quit:
			return
		}
	more:
		for len(group) < maxGroup {
			select {
			case r := <-l.records:
				group = append(group, r)
			default:
				break more
			}
		}
		err := l.commit(ctx, group)
		if err == nil {
			for _, r := range group {
				for i, e := range r.es {
					l.newest.recorded(e, r.idx[i])
				}
			}
		}
		for _, r := range group {
			r.done <- err
		}
	}
}

// commit writes the rows of group in one transaction.
func (l *Log) commit(ctx context.Context, group []*record) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT OR IGNORE INTO entries (idx, key, seqno, id) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, r := range group {
		for i, e := range r.es {
			if _, err := st.ExecContext(ctx, int64(r.idx[i]), e.Key.String(), int64(e.Seqno), e.ID); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

// recordRows records the rows of es at idx through the index writer and
// returns once they are committed. A caller that gives up (ctx done)
// leaves them to be committed without it.
func (l *Log) recordRows(ctx context.Context, es []translog.Entry, idx []uint64) error {
	r := &record{es: es, idx: idx, done: make(chan error, 1)}
	select {
	case l.records <- r:
	case <-l.writerDone:
		return errClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

var errClosed = errors.New("the log is closed")

// newestEntries caches the newest entry logged for each key (or that the
// index holds none), as index.db says: the index writer updates it after
// each commit and [Log.Logged] fills it on a miss. It is coherent because
// only this process writes the index after Open:
//
//   - a commit bumps gen after it updates the cache, and a read fills the
//     cache only if no commit happened since before its query (so what it
//     read is still the newest);
//   - the writer keeps the newest of what the cache holds and what it
//     committed, by index, whatever the order the commits come in;
//   - for a key the cache does not hold, the writer adds what it
//     committed only if its index is above every index evicted so far:
//     else a newer entry of the key may have been committed and evicted
//     (the next read fills the key from the index).
type newestEntries struct {
	mu      sync.Mutex
	m       map[kez.PublicKey]newest
	limit   int    // the most keys held; 0: maxNewest
	gen     uint64 // commits so far
	evicted uint64 // 1 + the highest index evicted; 0: none evicted
}

// newest is what the index says of one key: its newest entry and its
// index, or (ok false) none.
type newest struct {
	e   translog.Entry
	idx uint64
	ok  bool
}

func (c *newestEntries) get(key kez.PublicKey) (newest, bool, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, hit := c.m[key]
	return n, hit, c.gen
}

// put adds what the index said of a key when the cache's generation was
// gen, if no commit happened since.
func (c *newestEntries) put(key kez.PublicKey, n newest, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if _, hit := c.m[key]; !hit {
		c.add(key, n)
	}
}

// recorded notes the entry e committed at idx.
func (c *newestEntries) recorded(e translog.Entry, idx uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	old, hit := c.m[e.Key]
	switch {
	case hit && old.ok && old.idx >= idx:
	case hit || idx+1 > c.evicted:
		c.add(e.Key, newest{e: e, idx: idx, ok: true})
	}
}

// add sets key's entry, evicting another if the cache is full.
func (c *newestEntries) add(key kez.PublicKey, n newest) {
	if c.m == nil {
		c.m = map[kez.PublicKey]newest{}
	}
	limit := c.limit
	if limit <= 0 {
		limit = maxNewest
	}
	if _, hit := c.m[key]; !hit && len(c.m) >= limit {
		for k, old := range c.m { // an arbitrary key
			if old.ok {
				c.evicted = max(c.evicted, old.idx+1)
			}
			delete(c.m, k)
			break
		}
	}
	c.m[key] = n
}

// Logged returns the newest entry logged for key and its leaf index, or
// false if the log holds none. It answers from memory when it can.
func (l *Log) Logged(ctx context.Context, key kez.PublicKey) (translog.Entry, uint64, bool, error) {
	n, hit, gen := l.newest.get(key)
	if hit {
		return n.e, n.idx, n.ok, nil
	}
	var idx, seqno int64
	var id string
	err := l.db.QueryRowContext(ctx, `SELECT idx, seqno, id FROM entries WHERE key = ? ORDER BY idx DESC LIMIT 1`, key.String()).Scan(&idx, &seqno, &id)
	n = newest{}
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return translog.Entry{}, 0, false, fmt.Errorf("logserver: reading %s: %w", IndexFile, err)
	default:
		n = newest{e: translog.Entry{Key: key, Seqno: uint64(seqno), ID: id}, idx: uint64(idx), ok: true}
	}
	l.newest.put(key, n, gen)
	return n.e, n.idx, n.ok, nil
}
