package jsstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of a [View].
const (
	// DefaultMaxStale is how long a View answers after its last
	// successful freshness check ([WithMaxStale]).
	DefaultMaxStale = 10 * time.Second
	// DefaultCheckInterval is how often a View checks that it holds
	// everything the bucket stored ([WithCheckInterval]).
	DefaultCheckInterval = time.Second
)

// Answers of [View.LookupKey], as counted in [ViewStats].
const (
	// AnswerView: the view answered from memory.
	AnswerView = "view"
	// AnswerStore: the view was fresh but did not hold the key (a user
	// registered a moment ago) or held an unreadable value, so the store
	// answered.
	AnswerStore = "store"
	// AnswerStale: the view was not fresh (still loading, or its last
	// successful check older than the maximum staleness), so the store
	// answered.
	AnswerStale = "stale"
)

// ErrBadViewOption is returned by [Store.NewView] for an option out of
// range.
var ErrBadViewOption = errors.New("jsstore: bad view option")

// ViewOption configures [Store.NewView].
type ViewOption func(*viewConfig)

type viewConfig struct {
	maxStale time.Duration
	interval time.Duration
	now      func() time.Time
	// beforeApply, set by tests, runs before each watched update.
	beforeApply func()
}

// WithMaxStale sets how long after its last successful freshness check
// the view still answers (default [DefaultMaxStale]). It bounds how long
// a key may still log in from the view after its suspension or
// revocation was stored, while the view cannot confirm it is current.
func WithMaxStale(d time.Duration) ViewOption { return func(c *viewConfig) { c.maxStale = d } }

// WithCheckInterval sets how often the view checks that it holds every
// change the bucket stored (default [DefaultCheckInterval]): one read of
// the stream leader's last sequence a check.
func WithCheckInterval(d time.Duration) ViewOption { return func(c *viewConfig) { c.interval = d } }

// WithClock sets the clock the view measures its staleness with (default
// time.Now).
func WithClock(now func() time.Time) ViewOption { return func(c *viewConfig) { c.now = now } }

// View is a copy of the registry's login records (entries, key indexes,
// device records) in memory, kept current by a watch of the bucket, that
// answers [View.LookupKey] with the Store's own lookup rules while the
// bucket's stream has no leader (an election, a lost node). See the
// package comment, "Views". It is safe for concurrent use.
type View struct {
	reads // the lookup rules, reading the view's memory (src is the View)

	st  *Store
	cfg viewConfig

	mu        sync.RWMutex
	entries   map[string]entry // name.* keys
	indexes   map[kez.PublicKey]index
	devices   map[kez.PublicKey]device
	bad       map[string]error  // keys whose value does not decode
	domains   map[string]string // one copy of each domain
	delivered uint64            // the last stream sequence the watch delivered
	loaded    bool              // the watch delivered its initial values
	waiters   []waiter          // checks waiting for the watch to reach a sequence

	freshAt atomic.Int64 // Unix nanoseconds of the last successful check's start; 0: none
	answers [3]atomic.Uint64

	cancel context.CancelFunc
	done   chan struct{}
}

// waiter is a check: when the watch has delivered seq, the view held
// everything stored before at.
type waiter struct {
	seq uint64
	at  time.Time
	ch  chan struct{}
}

// ViewStats are a [View]'s numbers, for metrics.
type ViewStats struct {
	// Loaded: the watch delivered the bucket's values once.
	Loaded bool
	// FreshAt is the start of the last successful check (zero: none yet);
	// Age is now - FreshAt.
	FreshAt time.Time
	Age     time.Duration
	// Keys is how many entries, indexes and device records the view holds.
	Keys int
	// Lookups counts LookupKey answers by [AnswerView], [AnswerStore] and
	// [AnswerStale].
	Lookups map[string]uint64
}

var answerNames = [3]string{AnswerView, AnswerStore, AnswerStale}

// NewView starts a view of s's bucket and returns at once; until the view
// has loaded the bucket and checked that it is current, its lookups go to
// the store. The view watches the bucket over s's connection (creating
// the watch again if it ends) until ctx ends or [View.Close] is called.
func (s *Store) NewView(ctx context.Context, opts ...ViewOption) (*View, error) {
	cfg := viewConfig{maxStale: DefaultMaxStale, interval: DefaultCheckInterval, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.maxStale <= 0:
		return nil, fmt.Errorf("%w: the maximum staleness must be positive, not %s", ErrBadViewOption, cfg.maxStale)
	case cfg.interval <= 0 || cfg.interval > cfg.maxStale:
		return nil, fmt.Errorf("%w: the check interval %s must be positive and at most the maximum staleness %s", ErrBadViewOption, cfg.interval, cfg.maxStale)
	case cfg.now == nil:
		return nil, fmt.Errorf("%w: no clock", ErrBadViewOption)
	}
	ctx, cancel := context.WithCancel(ctx)
	v := &View{st: s, cfg: cfg, cancel: cancel, done: make(chan struct{})}
	v.reads = reads{src: v}
	v.reset()
	go v.run(ctx)
	return v, nil
}

// Close stops the view's watch and checks. Lookups go to the store from
// then on.
func (v *View) Close() error {
	v.cancel()
	<-v.done
	return nil
}

// LookupKey implements [handles.Store.LookupKey]: from memory while the
// view is fresh, else (and for a key the view does not hold) from the
// store.
func (v *View) LookupKey(ctx context.Context, key kez.PublicKey) (handles.Record, error) {
	answer := 2 // stale
	if v.fresh() {
		rec, err := v.lookupKey(ctx, key)
		var revoked *handles.DeviceRevokedError
		if err == nil || errors.As(err, &revoked) {
			v.answers[0].Add(1)
			return rec, err
		}
		answer = 1 // missing or unreadable here: the store knows
	}
	v.answers[answer].Add(1)
	return v.st.LookupKey(ctx, key)
}

// Fresh reports whether the view answers lookups now: it has loaded the
// bucket and its last successful check started at most the maximum
// staleness ago.
func (v *View) Fresh() bool { return v.fresh() }

func (v *View) fresh() bool {
	at := v.freshAt.Load()
	return at != 0 && v.cfg.now().UnixNano()-at <= int64(v.cfg.maxStale)
}

// Stats returns the view's numbers.
func (v *View) Stats() ViewStats {
	v.mu.RLock()
	st := ViewStats{Loaded: v.loaded, Keys: len(v.entries) + len(v.indexes) + len(v.devices)}
	v.mu.RUnlock()
	if at := v.freshAt.Load(); at != 0 {
		st.FreshAt = time.Unix(0, at)
		st.Age = v.cfg.now().Sub(st.FreshAt)
	}
	st.Lookups = make(map[string]uint64, len(answerNames))
	for i, n := range answerNames {
		st.Lookups[n] = v.answers[i].Load()
	}
	return st
}

// Sync waits until the view holds every change the bucket stored before
// the call (or ctx ends), and counts as a successful check.
func (v *View) Sync(ctx context.Context) error {
	ch, err := v.check(ctx)
	if err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// check reads the bucket stream's last sequence from its leader and
// returns a channel closed once the watch has delivered it; the view is
// then fresh as of the start of the read.
func (v *View) check(ctx context.Context) (<-chan struct{}, error) {
	at := v.cfg.now()
	m, err := v.st.leader.Last(ctx, v.st.subjPrefix+">")
	if err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	var seq uint64
	if m != nil {
		seq = m.Seq
	}
	w := waiter{seq: seq, at: at, ch: make(chan struct{})}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.loaded && v.delivered >= seq {
		v.reached(w)
	} else {
		v.waiters = append(v.waiters, w)
	}
	return w.ch, nil
}

// reached records a check whose sequence the watch delivered. Called
// with v.mu held.
func (v *View) reached(w waiter) {
	at := w.at.UnixNano()
	for {
		old := v.freshAt.Load()
		if old >= at || v.freshAt.CompareAndSwap(old, at) {
			break
		}
	}
	close(w.ch)
}

// run keeps the watch going and checks freshness every interval.
func (v *View) run(ctx context.Context) {
	defer close(v.done)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		v.checks(ctx)
	}()
	defer wg.Wait()
	retry := 50 * time.Millisecond
	for first := true; ; first = false {
		if !first {
			v.reset() // a new watch delivers everything again
		}
		w, err := v.st.kv.WatchAll(ctx)
		if err == nil {
			v.follow(ctx, w)
			_ = w.Stop()
			retry = 50 * time.Millisecond
		}
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		retry = min(2*retry, 5*time.Second)
	}
}

// checks runs a freshness check every interval, one at a time.
func (v *View) checks(ctx context.Context) {
	tick := time.NewTicker(v.cfg.interval)
	defer tick.Stop()
	var pending <-chan struct{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if pending != nil {
			select {
			case <-pending:
			default:
				continue // the watch has not reached the last check yet
			}
		}
		cctx, cancel := context.WithTimeout(ctx, v.cfg.interval)
		ch, err := v.check(cctx)
		cancel()
		pending = nil
		if err == nil {
			pending = ch
		}
	}
}

// follow applies the watch's updates until it ends or ctx does.
func (v *View) follow(ctx context.Context, w jetstream.KeyWatcher) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-w.Updates():
			if !ok {
				return
			}
			if v.cfg.beforeApply != nil {
				v.cfg.beforeApply()
			}
			v.apply(e)
		}
	}
}

// reset empties the view before a new watch.
func (v *View) reset() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entries, v.indexes, v.devices = map[string]entry{}, map[kez.PublicKey]index{}, map[kez.PublicKey]device{}
	v.bad, v.domains = map[string]error{}, map[string]string{}
	v.delivered, v.loaded = 0, false
	v.freshAt.Store(0)
}

// apply takes one update of the watch into the view: a value, a delete,
// or (nil) the end of the initial values.
func (v *View) apply(e jetstream.KeyValueEntry) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e == nil {
		v.loaded = true
	} else {
		v.delivered = max(v.delivered, e.Revision())
		v.store(e.Key(), e.Value(), e.Operation() == jetstream.KeyValuePut)
	}
	if !v.loaded {
		return
	}
	kept := v.waiters[:0]
	for _, w := range v.waiters {
		if v.delivered >= w.seq {
			v.reached(w)
		} else {
			kept = append(kept, w)
		}
	}
	clear(v.waiters[len(kept):])
	v.waiters = kept
}

// store keeps (put) or drops the value of bucket key k, decoded and
// stripped to what lookups read. Called with v.mu held.
func (v *View) store(k string, value []byte, put bool) {
	delete(v.bad, k)
	switch {
	case strings.HasPrefix(k, "name."):
		if !put {
			delete(v.entries, k)
			return
		}
		e, err := decodeEntry(value)
		if err != nil {
			delete(v.entries, k)
			v.bad[strings.Clone(k)] = fmt.Errorf("jsstore: the entry %s is unreadable: %w", k, err)
			return
		}
		e.Key, e.Domain = "", v.intern(e.Domain) // lookups read e.key
		v.entries[strings.Clone(k)] = e
	case strings.HasPrefix(k, "key."):
		pk, ok := bucketKeyOf(k, "key.")
		if !ok {
			return // no key's index: LookupKey never reads it
		}
		if !put {
			delete(v.indexes, pk)
			return
		}
		ix, err := decodeIndex(value)
		if err != nil {
			delete(v.indexes, pk)
			v.bad[strings.Clone(k)] = fmt.Errorf("jsstore: the index %s is unreadable: %w", k, err)
			return
		}
		ix.Domain = v.intern(ix.Domain)
		v.indexes[pk] = ix
	case strings.HasPrefix(k, "device."):
		pk, ok := bucketKeyOf(k, "device.")
		if !ok {
			return
		}
		if !put {
			delete(v.devices, pk)
			return
		}
		d, err := decodeDevice(value)
		if err != nil {
			delete(v.devices, pk)
			v.bad[strings.Clone(k)] = fmt.Errorf("jsstore: the device %s is unreadable: %w", pk, err)
			return
		}
		d.Person, d.Name = "", "" // lookups read d.person and d.RevokedAt
		v.devices[pk] = d
	}
}

// bucketKeyOf parses the public key in the bucket key k after prefix; ok
// only for the key's own canonical spelling, the one the store reads.
func bucketKeyOf(k, prefix string) (kez.PublicKey, bool) {
	t := strings.TrimPrefix(k, prefix)
	pk, err := kez.ParsePublicKey(t)
	if err != nil || pk.String() != t {
		return kez.PublicKey{}, false
	}
	return pk, true
}

// intern returns the view's copy of domain d.
func (v *View) intern(d string) string {
	if c, ok := v.domains[d]; ok {
		return c
	}
	if len(v.domains) >= 1024 {
		return d // a registry of many domains: no sharing beyond these
	}
	d = strings.Clone(d)
	v.domains[d] = d
	return d
}

// entryValue implements source from memory.
func (v *View) entryValue(_ context.Context, k string) (entry, uint64, bool, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if err := v.bad[k]; err != nil {
		return entry{}, 0, false, err
	}
	e, ok := v.entries[k]
	e.EncKey = slices.Clone(e.EncKey) // the caller's copy: records are the caller's to change
	return e, 0, ok, nil
}

// indexValue implements source from memory.
func (v *View) indexValue(_ context.Context, key kez.PublicKey) (index, bool, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if len(v.bad) != 0 {
		if err := v.bad[indexKey(key)]; err != nil {
			return index{}, false, err
		}
	}
	ix, ok := v.indexes[key]
	return ix, ok, nil
}

// deviceValue implements source from memory.
func (v *View) deviceValue(_ context.Context, key kez.PublicKey) (device, uint64, bool, error) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if len(v.bad) != 0 {
		if err := v.bad[deviceKey(key)]; err != nil {
			return device{}, 0, false, err
		}
	}
	d, ok := v.devices[key]
	return d, 0, ok, nil
}

// withBeforeApply makes the view run f before each watched update (tests
// stall the watch with it).
func withBeforeApply(f func()) ViewOption { return func(c *viewConfig) { c.beforeApply = f } }
