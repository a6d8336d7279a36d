package jsstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/internal/jsleader"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// DefaultBucket is the KV bucket New uses unless [WithBucket] says
	// otherwise.
	DefaultBucket = "KEZ_HANDLES"
	// DefaultOrphanGrace is how old an unfinished claim must be before
	// another key may take its name; see [WithOrphanGrace].
	DefaultOrphanGrace = time.Minute
	// MaxValueSize bounds a value in the bucket (the bucket's
	// max_value_size when New creates it) and what the Store reads.
	// Entries are a few hundred bytes.
	MaxValueSize = 4 << 10
)

// maxAttempts bounds the read–compare-and-set rounds of one call. Each
// lost round means another writer changed the same keys meanwhile.
const maxAttempts = 32

// ErrContention is returned when a call lost its compare-and-set more
// than maxAttempts times in a row to other writers of the same keys.
// Retrying later is safe.
var ErrContention = errors.New("jsstore: too many concurrent changes to this handle; try again")

// Option configures [New].
type Option func(*config)

type config struct {
	bucket   string
	replicas int
	grace    time.Duration
}

// WithBucket sets the KV bucket's name (default [DefaultBucket]). Two
// registries in one NATS account need two buckets.
func WithBucket(name string) Option { return func(c *config) { c.bucket = name } }

// WithReplicas sets how many JetStream servers keep a copy of the bucket
// when New creates it: 1 (the default) on a single server, 3 on a cluster
// so it survives the loss of one node. An existing bucket keeps its own
// setting.
func WithReplicas(n int) Option { return func(c *config) { c.replicas = n } }

// WithOrphanGrace sets how long an unfinished claim (an entry without its
// key's index, left by a chat-server that stopped between the claim's two
// writes) holds its name against other keys (default
// [DefaultOrphanGrace]). It must be longer than a claim can take.
func WithOrphanGrace(d time.Duration) Option { return func(c *config) { c.grace = d } }

// Store is a [handles.Store] in a JetStream KV bucket. It is safe for
// concurrent use, also by many processes sharing the bucket: every write
// is a compare-and-set, so of two claims of one name (or its look-alikes)
// at once, one wins and the other gets [handles.ErrTaken].
type Store struct {
	reads      // the lookup rules, reading the stream leader (src is the Store)
	kv         jetstream.KeyValue
	leader     *jsleader.Getter // reads of the bucket's stream leader
	subjPrefix string           // $KV.<bucket>.
	grace      time.Duration
	timeout    time.Duration
	now        func() time.Time
}

var _ handles.Store = (*Store)(nil)

// New opens the registry in the KV bucket of js's account, creating the
// bucket (file storage, one revision a key, [MaxValueSize] values) if it
// does not exist. An existing bucket is used as it is, except that entries
// written under an older skeleton rule are moved to their current keys
// once (see the package comment, "Upgrades"); a bucket of a newer rule is
// refused with [handles.ErrNewerSkeletonRule]. js must come from a
// connection allowed to use the JetStream API for that bucket; the Store
// does not close it.
func New(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Store, error) {
	cfg := config{bucket: DefaultBucket, replicas: 1, grace: DefaultOrphanGrace}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.replicas < 1 || cfg.replicas > 5 {
		return nil, fmt.Errorf("jsstore: %d replicas; JetStream keeps 1 to 5", cfg.replicas)
	}
	if cfg.grace <= 0 {
		return nil, fmt.Errorf("jsstore: the orphan grace must be positive, not %s", cfg.grace)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       cfg.bucket,
		Description:  "KEZ chat handle registry: name.<domain>.<skeleton> entries and key.<U…> indexes",
		History:      1,
		MaxValueSize: MaxValueSize,
		Storage:      jetstream.FileStorage,
		Replicas:     cfg.replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = js.KeyValue(ctx, cfg.bucket)
	}
	if err != nil {
		return nil, fmt.Errorf("jsstore: opening the KV bucket %s: %w", cfg.bucket, err)
	}
	_, timeout := jsleader.API(js)
	s := &Store{
		kv:         kv,
		leader:     jsleader.NewGetter(js, "KV_"+cfg.bucket),
		subjPrefix: "$KV." + cfg.bucket + ".",
		grace:      cfg.grace,
		timeout:    timeout,
		now:        time.Now,
	}
	s.reads = reads{src: s}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Ping checks that the bucket's stream has a leader that answers; use it
// as a readiness check.
func (s *Store) Ping(ctx context.Context) error {
	if _, err := s.get(ctx, "ping"); err != nil {
		return err
	}
	return nil
}

// Claim implements [handles.Store.Claim]. It writes the entry (a create,
// or a compare-and-set of the key's own entry), then the key's index, and
// undoes the entry if the index cannot be written; see the package
// comment for what a crash in between leaves.
func (s *Store) Claim(ctx context.Context, rec handles.Record) (bool, error) {
	if rec.Handle.IsZero() || rec.Key.IsZero() {
		return false, errors.New("jsstore: a claim needs a handle and a key")
	}
	nk, err := nameKey(rec.Handle)
	if err != nil {
		return false, err
	}
	now := rec.UpdatedAt
	if now.IsZero() {
		now = s.now()
	}
	if d, _, err := s.deviceOf(ctx, rec.Key); err != nil {
		return false, err
	} else if d != nil && d.person != rec.Key {
		return false, fmt.Errorf("%w: it is a device of %s", handles.ErrKeyHasHandle, d.Person)
	}
	for range maxAttempts {
		// A name claimed under an older skeleton rule may live at its old
		// key (a twin): it is the name itself, so its holder may renew it
		// and nobody else may take it.
		if tw, loc, rev, err := s.legacyEntry(ctx, rec.Handle); err != nil {
			return false, err
		} else if tw != nil {
			ok, err := s.valid(ctx, *tw)
			if err != nil {
				return false, err
			}
			if ok {
				created, err := s.renewTwin(ctx, rec, *tw, loc, rev, now)
				if errors.Is(err, errConflict) {
					continue
				}
				return created, err
			}
		}
		cur, err := s.get(ctx, nk)
		if err != nil {
			return false, err
		}
		if !cur.found {
			rev, err := s.put(ctx, nk, newEntry(rec, now).encode(), cur.rev)
			if errors.Is(err, errConflict) {
				continue
			}
			if err != nil {
				return false, err
			}
			if _, err := s.bind(ctx, rec.Handle, rec.Key, nk, true); err != nil {
				s.undo(ctx, nk, rev)
				return false, err
			}
			return true, nil
		}
		held, err := decodeEntry(cur.value)
		if err != nil {
			return false, fmt.Errorf("jsstore: the entry %s is unreadable: %w", nk, err)
		}
		if held.Released {
			// The skeleton's lock, kept for the twins of a released name.
			tw, err := s.liveTwin(ctx, held)
			switch {
			case err != nil:
				return false, err
			case tw != nil && tw.key == rec.Key:
				return false, fmt.Errorf("%w: it holds %s", handles.ErrKeyHasHandle, tw.handle())
			case tw != nil:
				return false, &handles.TakenError{Claimed: rec.Handle, Holder: tw.handle()}
			}
			if err := s.del(ctx, nk, cur.rev); err != nil && !errors.Is(err, errConflict) {
				return false, err
			}
			continue
		}
		switch {
		case held.key != rec.Key:
			left, err := s.leftOver(ctx, held, cur)
			if err != nil {
				return false, err
			}
			if left {
				if err := s.drop(ctx, nk, held, cur.rev); err != nil && !errors.Is(err, errConflict) {
					return false, err
				}
				continue
			}
			return false, &handles.TakenError{Claimed: rec.Handle, Holder: held.handle()}
		case held.Name != rec.Handle.Name:
			// The key holds a look-alike of this name, or left one unfinished.
			ok, err := s.valid(ctx, held)
			if err != nil {
				return false, err
			}
			if ok {
				return false, fmt.Errorf("%w: it holds %s", handles.ErrKeyHasHandle, held.handle())
			}
			if err := s.drop(ctx, nk, held, cur.rev); err != nil && !errors.Is(err, errConflict) {
				return false, err
			}
			continue
		case held.Suspended:
			return false, fmt.Errorf("%w: %s", handles.ErrSuspended, rec.Handle)
		}
		// The same key claims its own handle again: refresh.
		held.EncKey, held.Gen, held.UpdatedAt = rec.EncryptionKey, rec.Generation, now.UnixMilli()
		rev, err := s.put(ctx, nk, held.encode(), cur.rev)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return false, err
		}
		bound, err := s.bind(ctx, rec.Handle, rec.Key, nk, false)
		if errors.Is(err, handles.ErrKeyHasHandle) {
			s.undo(ctx, nk, rev) // a left-over of a key that holds another handle
		}
		// bound: the index was missing (an earlier claim of this handle
		// was cut short), so the entry only now became visible.
		return bound, err
	}
	return false, ErrContention
}

// drop removes the left-over entry e at nk (read at rev). An entry that
// lists twins becomes the skeleton's released lock instead, so that the
// skeleton stays held while a twin lives.
func (s *Store) drop(ctx context.Context, nk string, e entry, rev uint64) error {
	if len(e.Twins) == 0 {
		return s.del(ctx, nk, rev)
	}
	e.Released, e.UpdatedAt = true, s.now().UnixMilli()
	_, err := s.put(ctx, nk, e.encode(), rev)
	return err
}

// renewTwin answers a claim of a twin's name: its holder refreshes the
// entry where it is; any other key is refused.
func (s *Store) renewTwin(ctx context.Context, rec handles.Record, tw entry, loc string, rev uint64, now time.Time) (bool, error) {
	switch {
	case tw.key != rec.Key:
		return false, &handles.TakenError{Claimed: rec.Handle, Holder: tw.handle()}
	case tw.Suspended:
		return false, fmt.Errorf("%w: %s", handles.ErrSuspended, rec.Handle)
	}
	tw.EncKey, tw.Gen, tw.UpdatedAt = rec.EncryptionKey, rec.Generation, now.UnixMilli()
	_, err := s.put(ctx, loc, tw.encode(), rev) // errConflict: changed meanwhile, read again
	return false, err
}

// liveTwin returns the first of held's twins whose entry still counts, or
// nil.
func (s *Store) liveTwin(ctx context.Context, held entry) (*entry, error) {
	for _, n := range held.Twins {
		tw, _, _, err := s.legacyEntry(ctx, handles.Handle{Name: n, Domain: held.Domain})
		if err != nil {
			return nil, err
		}
		if tw == nil {
			continue
		}
		if ok, err := s.valid(ctx, *tw); err != nil {
			return nil, err
		} else if ok {
			return tw, nil
		}
	}
	return nil, nil
}

// bind points key's index at h, whose entry (at nk) the caller has just
// written. It reports whether it wrote the index. A fresh claim rewrites
// an index that already names h, so that a Release caught between its
// two deletes does not delete the new claim's index.
func (s *Store) bind(ctx context.Context, h handles.Handle, key kez.PublicKey, nk string, fresh bool) (bool, error) {
	ik, want := indexKey(key), encodeIndex(h)
	for range maxAttempts {
		cur, err := s.get(ctx, ik)
		if err != nil {
			return false, err
		}
		if cur.found {
			ix, err := decodeIndex(cur.value)
			if err != nil {
				return false, fmt.Errorf("jsstore: the index %s is unreadable: %w", ik, err)
			}
			if ix.handle() == h && !fresh {
				return false, nil
			}
			if ix.handle() != h {
				other, _, _, err := s.entryOf(ctx, ix.handle())
				if err != nil {
					return false, err
				}
				if other != nil && other.key == key {
					return false, fmt.Errorf("%w: it holds %s", handles.ErrKeyHasHandle, other.handle())
				}
				// A stale index: its handle was released or taken over.
			}
		}
		rev, err := s.put(ctx, ik, want, cur.rev)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return false, err
		}
		// Is the entry still ours? Another key may have taken it over as
		// a left-over if this claim stalled past the orphan grace.
		e, _, _, err := s.entryOf(ctx, h)
		if err != nil {
			return false, err
		}
		if e == nil || e.key != key {
			s.undo(ctx, ik, rev)
			return false, fmt.Errorf("%w: %s was taken over while it was being claimed", handles.ErrTaken, h)
		}
		return true, nil
	}
	return false, ErrContention
}

// undo deletes what a failed claim wrote, if nobody changed it since. It
// runs even when ctx is cancelled; a failure leaves a left-over that
// readers ignore.
func (s *Store) undo(ctx context.Context, key string, rev uint64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
	defer cancel()
	_ = s.del(ctx, key, rev)
}

// valid reports whether e's key's index points at e: only then does the
// entry count.
func (s *Store) valid(ctx context.Context, e entry) (bool, error) {
	ik := indexKey(e.key)
	cur, err := s.get(ctx, ik)
	if err != nil || !cur.found {
		return false, err
	}
	ix, err := decodeIndex(cur.value)
	if err != nil {
		return false, fmt.Errorf("jsstore: the index %s is unreadable: %w", ik, err)
	}
	return ix.handle() == e.handle(), nil
}

// leftOver reports whether held (read as cur), an entry of another key,
// is an unfinished claim that may be removed: its key holds another
// handle, or it has had no index for longer than the orphan grace.
func (s *Store) leftOver(ctx context.Context, held entry, cur got) (bool, error) {
	ik := indexKey(held.key)
	idx, err := s.get(ctx, ik)
	if err != nil {
		return false, err
	}
	if idx.found {
		ix, err := decodeIndex(idx.value)
		if err != nil {
			return false, nil // leave it to the operator
		}
		if ix.handle() == held.handle() {
			return false, nil // a complete claim
		}
		other, _, _, err := s.entryOf(ctx, ix.handle())
		if err != nil {
			return false, err
		}
		if other != nil && other.key == held.key {
			return true, nil // the key holds another handle
		}
	}
	return s.now().Sub(cur.time) > s.grace, nil
}

// Lookup implements [handles.Store.Lookup].
func (s *Store) Lookup(ctx context.Context, h handles.Handle) (handles.Record, error) {
	e, _, _, err := s.entryOf(ctx, h)
	if err != nil {
		return handles.Record{}, err
	}
	if e == nil {
		return handles.Record{}, handles.ErrNotFound
	}
	ok, err := s.valid(ctx, *e)
	if err != nil {
		return handles.Record{}, err
	}
	if !ok {
		return handles.Record{}, handles.ErrNotFound
	}
	return e.record(), nil
}

// LookupKey implements [handles.Store.LookupKey]: the key's device
// record, then (for a person, or a device's person) two reads, the
// key's index and then the entry it names.
func (s *Store) LookupKey(ctx context.Context, key kez.PublicKey) (handles.Record, error) {
	return s.lookupKey(ctx, key)
}

// SetSuspended implements [handles.Store.SetSuspended].
func (s *Store) SetSuspended(ctx context.Context, h handles.Handle, suspended bool) error {
	for range maxAttempts {
		e, loc, rev, err := s.entryOf(ctx, h)
		if err != nil {
			return err
		}
		if e == nil {
			return handles.ErrNotFound
		}
		if ok, err := s.valid(ctx, *e); err != nil {
			return err
		} else if !ok {
			return handles.ErrNotFound
		}
		e.Suspended, e.UpdatedAt = suspended, s.now().UnixMilli()
		if _, err := s.put(ctx, loc, e.encode(), rev); errors.Is(err, errConflict) {
			continue
		} else {
			return err
		}
	}
	return ErrContention
}

// Release implements [handles.Store.Release]: it deletes the entry, then
// the key's index if it still names h. It also removes an unfinished
// claim's left-over entry. An entry with twins becomes the skeleton's
// released lock instead, so that no new claim takes the skeleton while a
// twin holds it.
func (s *Store) Release(ctx context.Context, h handles.Handle) error {
	for range maxAttempts {
		e, loc, rev, err := s.entryOf(ctx, h)
		if err != nil {
			return err
		}
		if e == nil {
			return handles.ErrNotFound
		}
		ik := indexKey(e.key)
		idx, err := s.get(ctx, ik)
		if err != nil {
			return err
		}
		if err := s.drop(ctx, loc, *e, rev); errors.Is(err, errConflict) {
			continue
		} else if err != nil {
			return err
		}
		if idx.found {
			if ix, err := decodeIndex(idx.value); err == nil && ix.handle() == h {
				// A conflict means a new claim by the key rewrote it: keep it.
				if err := s.del(ctx, ik, idx.rev); err != nil && !errors.Is(err, errConflict) {
					return err
				}
			}
		}
		return nil
	}
	return ErrContention
}
