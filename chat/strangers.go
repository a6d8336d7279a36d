package chat

// Strangers: messages from keys that are not contacts (requests).
//
// A stranger chooses everything about itself, including where its handle
// points, so nothing a stranger sends may make receiving wait or the
// database grow without bound:
//
//   - A request is stored at once under trust "request" with no handle,
//     acknowledged like any message, and the sender's handle is looked up
//     afterwards, in the background: on at most StrangerLookups goroutines,
//     each lookup bounded by RefreshTimeout, with at most StrangerQueue
//     keys waiting, and each outcome remembered (a failure for
//     StrangerRetry) so that a key is not looked up again on every
//     message. When a lookup confirms a handle, the sender's stored
//     requests get it; when it shows that a contact's handle now names
//     this key, the contact is flagged and the requests become held.
//   - Requests are capped per sender and in all, by count and by body
//     bytes (Config.MaxRequests…). A request over a cap is dropped: never
//     written, terminated at the server, counted in Stats.RequestsDropped
//     and logged at debug level.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// Defaults of the stranger limits of [Config].
const (
	// DefaultStrangerLookups is how many strangers' handles are looked up
	// at once.
	DefaultStrangerLookups = 4
	// DefaultStrangerQueue is how many strangers may wait for a lookup.
	DefaultStrangerQueue = 256
	// DefaultStrangerRetry is how long a failed lookup of a stranger's
	// handle is remembered before the key is looked up again.
	DefaultStrangerRetry = 10 * time.Minute
	// DefaultMaxRequestsPerSender is how many message requests one key may
	// have stored.
	DefaultMaxRequestsPerSender = 100
	// DefaultMaxRequestBytesPerSender bounds the body bytes of one key's
	// stored message requests.
	DefaultMaxRequestBytesPerSender = 1 << 20
	// DefaultMaxRequests is how many message requests may be stored in all.
	DefaultMaxRequests = 1000
	// DefaultMaxRequestBytes bounds the body bytes of all stored message
	// requests.
	DefaultMaxRequestBytes = 16 << 20
	// maxRequesters bounds the remembered lookups.
	maxRequesters = 4096
)

// setStrangerDefaults fills in the stranger limits left zero.
func (cfg *Config) setStrangerDefaults() {
	orDefault := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	orDefault(&cfg.StrangerLookups, DefaultStrangerLookups)
	orDefault(&cfg.StrangerQueue, DefaultStrangerQueue)
	if cfg.StrangerRetry <= 0 {
		cfg.StrangerRetry = DefaultStrangerRetry
	}
	capOrDefault := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	n, pn := int64(cfg.MaxRequests), int64(cfg.MaxRequestsPerSender)
	capOrDefault(&n, DefaultMaxRequests)
	capOrDefault(&pn, DefaultMaxRequestsPerSender)
	cfg.MaxRequests, cfg.MaxRequestsPerSender = int(n), int(pn)
	capOrDefault(&cfg.MaxRequestBytes, DefaultMaxRequestBytes)
	capOrDefault(&cfg.MaxRequestBytesPerSender, DefaultMaxRequestBytesPerSender)
}

// requester is what the client found out about a key that is not a
// contact: the handle its chain claims, if the registry confirms it.
type requester struct {
	handle  string    // confirmed handle, or ""
	expires time.Time // look the key up again from then on
	failed  bool      // the lookup failed (a server unreachable or refused)
}

// strangerLookups runs the background lookups of strangers' handles.
type strangerLookups struct {
	queue   chan kez.PublicKey
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	pending map[kez.PublicKey]chan struct{} // queued or running; closed when done
}

// startStrangers starts the lookup workers; stopStrangers stops them.
func (c *Client) startStrangers() {
	ctx, cancel := context.WithCancel(context.Background())
	s := &strangerLookups{
		queue: make(chan kez.PublicKey, c.cfg.StrangerQueue), ctx: ctx, cancel: cancel,
		pending: map[kez.PublicKey]chan struct{}{},
	}
	c.strangers = s
	for range c.cfg.StrangerLookups {
		s.wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case key := <-s.queue:
					c.lookupStranger(ctx, key)
				}
			}
		})
	}
}

// stopStrangers ends the lookups under way and waits for the workers.
func (c *Client) stopStrangers() {
	if c.strangers == nil {
		return
	}
	c.strangers.cancel()
	c.strangers.wg.Wait()
}

// lookupLater queues a lookup of key unless one is queued or running. It
// never waits: with the queue full the key is skipped (and looked up on
// its next message).
func (c *Client) lookupLater(key kez.PublicKey) {
	if _, err := c.enqueueLookup(nil, key); err != nil {
		c.stats.lookupsSkipped.Add(1)
	}
}

// errQueueFull reports a lookup queue with no room.
var errQueueFull = errors.New("chat: too many senders wait for a lookup")

// enqueueLookup queues a lookup of key unless one is queued or running,
// and returns a channel closed when it is done. With ctx nil it does not
// wait for room in the queue (errQueueFull); otherwise it waits until ctx
// ends.
func (c *Client) enqueueLookup(ctx context.Context, key kez.PublicKey) (chan struct{}, error) {
	s := c.strangers
	s.mu.Lock()
	if done, ok := s.pending[key]; ok {
		s.mu.Unlock()
		return done, nil
	}
	done := make(chan struct{})
	s.pending[key] = done
	s.mu.Unlock()
	var err error
	if ctx == nil {
		select {
		case s.queue <- key:
		default:
			err = errQueueFull
		}
	} else {
		select {
		case s.queue <- key:
		case <-ctx.Done():
			err = ctx.Err()
		case <-s.ctx.Done():
			err = ErrClosed
		}
	}
	if err != nil {
		s.finish(key, done)
		return nil, err
	}
	return done, nil
}

// finish ends the pending lookup of key: whoever waits for it is woken.
func (s *strangerLookups) finish(key kez.PublicKey, done chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[key] == done {
		delete(s.pending, key)
		close(done)
	}
}

// lookupStranger finds the confirmed handle of key (its chain at the
// user's sig-server claims a handle, and resolving that handle gives
// key), remembers it and applies it to the key's stored requests.
func (c *Client) lookupStranger(ctx context.Context, key kez.PublicKey) {
	defer func() {
		s := c.strangers
		s.mu.Lock()
		done := s.pending[key]
		s.mu.Unlock()
		if done != nil {
			s.finish(key, done)
		}
	}()
	lctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	defer cancel()
	var r requester
	st, err := c.keyChain(lctx, key)
	if err == nil && st.Handle() != "" {
		// The handle the chain claims must name this key at its registry:
		// asked now, with only what is new after st fetched again.
		var h handles.Handle
		var res *handles.Resolved
		if h, err = c.rules().Parse(st.Handle()); err == nil {
			if res, err = c.resolver.ResolveFresh(lctx, h, st); err == nil && res.Key == key {
				r.handle = res.Handle.String()
			}
		}
	}
	if ctx.Err() != nil {
		return // closing: remember nothing
	}
	c.stats.lookups.Add(1)
	r.failed = lookupFailed(err)
	ttl := max(c.cfg.RefreshInterval, 0)
	if r.failed {
		c.stats.lookupsFailed.Add(1)
		ttl = c.cfg.StrangerRetry
		c.log.Debug("cannot look up the handle of a sender who is not a contact", "key", key, "err", err)
	}
	r.expires = c.now().Add(ttl)
	c.mu.Lock()
	if len(c.requesters) >= maxRequesters {
		clear(c.requesters)
	}
	c.requesters[key] = r
	c.mu.Unlock()
	if err := c.applyRequester(ctx, key, r); err != nil && ctx.Err() == nil {
		c.log.Warn("could not record the handle of a sender who is not a contact", "key", key, "err", err)
	}
}

// lookupFailed reports whether a lookup error is a failure worth trying
// again later (a server down, slow or refused), rather than an answer (no
// chain, no such handle, a mismatch).
func lookupFailed(err error) bool {
	switch {
	case err == nil, errors.Is(err, sigchain.ErrNotFound), errors.Is(err, handles.ErrNotFound),
		errors.Is(err, handles.ErrSuspended), errors.Is(err, handles.ErrMismatch), handles.ReasonOf(err) != "":
		return false
	}
	var le *sigchain.LinkError
	return !errors.As(err, &le)
}

// knownRequester returns what is known of a stranger without asking any
// server: the confirmed handle, the contact it turns out to be a new key
// of (flagged now if not yet), and whether the key should be looked up
// (never looked up, or the answer expired).
func (c *Client) knownRequester(ctx context.Context, key kez.PublicKey) (handle string, flagged *contactState, lookup bool) {
	c.mu.Lock()
	r, ok := c.requesters[key]
	cs := c.byHandle[r.handle]
	c.mu.Unlock()
	lookup = !ok || !c.now().Before(r.expires)
	if r.handle == "" {
		return "", nil, lookup
	}
	if cs != nil && cs.c.Key != key {
		_ = c.flagKeyChanged(ctx, cs, key)
		return r.handle, cs, lookup
	}
	return r.handle, nil, lookup
}

// forgetStaleRequesters forgets the remembered lookups that confirmed
// handle for a key other than key, which handle names now (a contact just
// pinned): such an answer would show a request under the contact's handle
// and flag the contact as a key change. Those keys are looked up again.
// c.mu is held.
func (c *Client) forgetStaleRequesters(handle string, key kez.PublicKey) {
	for k, r := range c.requesters {
		if r.handle == handle && k != key {
			delete(c.requesters, k)
		}
	}
}

// applyRequester gives key's stored requests the outcome of its lookup:
// the confirmed handle (or none), and, if the handle is a contact's that
// is pinned to another key, flags that contact and holds the requests.
func (c *Client) applyRequester(ctx context.Context, key kez.PublicKey, r requester) error {
	trust := TrustRequest
	if r.handle != "" {
		c.mu.Lock()
		cs := c.byHandle[r.handle]
		c.mu.Unlock()
		if cs != nil && cs.c.Key != key {
			_ = c.flagKeyChanged(ctx, cs, key)
			trust = TrustHeld
		}
	}
	if trust == TrustHeld && c.blockedContact(r.handle) {
		// The new key of a blocked contact (§5.1): its requests go as
		// a blocked key's do.
		return c.db.write(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`DELETE FROM messages WHERE incoming = 1 AND from_key = ? AND trust = 'request'`, key.String())
			return err
		})
	}
	return c.db.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE messages SET peer_handle = ?, trust = ? WHERE incoming = 1 AND from_key = ? AND trust = 'request'`,
			r.handle, string(trust), key.String())
		return err
	})
}

// lookupStored makes sure the handles of the senders of stored requests
// get looked up: queued now unless known and fresh; if a lookup finished
// after the batch was classified, its outcome is applied again, since the
// batch's rows may have been written after it.
func (c *Client) lookupStored(ctx context.Context, keys map[kez.PublicKey]bool) {
	for key := range keys {
		c.mu.Lock()
		r, ok := c.requesters[key]
		c.mu.Unlock()
		if ok && c.now().Before(r.expires) {
			if err := c.applyRequester(ctx, key, r); err != nil {
				c.log.Warn("could not record the handle of a sender who is not a contact", "key", key, "err", err)
			}
			continue
		}
		c.lookupLater(key)
	}
}

// ResolveRequests looks up the handles of the senders of stored message
// requests whose handle is not known (or whose answer expired), through
// the same bounded lookups as receiving, and returns when they are done
// or ctx ends. Receiving looks senders up by itself, in the background;
// call this before showing requests from a short-lived program (a CLI) so
// that they show confirmed handles.
func (c *Client) ResolveRequests(ctx context.Context) error {
	rows, err := c.db.db.QueryContext(ctx, `SELECT DISTINCT from_key FROM messages WHERE trust = 'request'`)
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	var keys []kez.PublicKey
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return fmt.Errorf("chat: database: %w", err)
		}
		if k, err := kez.ParsePublicKey(s); err == nil {
			keys = append(keys, k)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	var waits []chan struct{}
	for _, key := range keys {
		s := c.strangers
		s.mu.Lock()
		done := s.pending[key]
		s.mu.Unlock()
		if done != nil { // under way: wait until its outcome is applied
			waits = append(waits, done)
			continue
		}
		c.mu.Lock()
		r, ok := c.requesters[key]
		c.mu.Unlock()
		if ok && c.now().Before(r.expires) {
			continue
		}
		done, err := c.enqueueLookup(ctx, key)
		if err != nil {
			return err
		}
		waits = append(waits, done)
	}
	for _, done := range waits {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.strangers.ctx.Done():
			return ErrClosed
		}
	}
	return nil
}

// DeleteRequests deletes the stored message requests from the given keys,
// or all of them if none is given, and returns how many it deleted. It
// makes room under the request caps (Config.MaxRequests…). It forgets the
// group invitations of those keys (all, with none given) as well, here
// only: nothing is appended to their chains (docs/spec/chat.md §10.9).
func (c *Client) DeleteRequests(ctx context.Context, from ...kez.PublicKey) (int, error) {
	var n int64
	var forgotten []*groupState
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		var err error
		n, forgotten, err = c.deleteRequestsTx(tx, from)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("chat: deleting message requests: %w", err)
	}
	c.groups.drop(forgotten...)
	return int(n), nil
}

// deleteRequestsTx is DeleteRequests in tx: it returns how many requests
// it deleted and the invitations it forgot (to drop from c.groups once
// committed).
func (c *Client) deleteRequestsTx(tx *sql.Tx, from []kez.PublicKey) (int64, []*groupState, error) {
	forgotten, err := c.forgetInvitationsTx(tx, from)
	if err != nil {
		return 0, nil, err
	}
	if len(from) == 0 {
		res, err := tx.Exec(`DELETE FROM messages WHERE incoming = 1 AND trust = 'request'`)
		if err != nil {
			return 0, nil, err
		}
		n, _ := res.RowsAffected()
		return n, forgotten, nil
	}
	var n int64
	for _, k := range from {
		res, err := tx.Exec(`DELETE FROM messages WHERE incoming = 1 AND trust = 'request' AND from_key = ?`, k.String())
		if err != nil {
			return 0, nil, err
		}
		m, _ := res.RowsAffected()
		n += m
	}
	return n, forgotten, nil
}

// requestQuota keeps a batch of requests under the caps while it is
// written: it reads what is stored inside the batch's transaction and
// adds what the batch stores.
type requestQuota struct {
	c         *Client
	tx        *sql.Tx
	total     *usage
	perSender map[kez.PublicKey]*usage
}

// usage is a count of stored requests and their body bytes.
type usage struct{ n, bytes int64 }

func (c *Client) newRequestQuota(tx *sql.Tx) *requestQuota {
	return &requestQuota{c: c, tx: tx, perSender: map[kez.PublicKey]*usage{}}
}

// query reads the requests stored (from key, or all with key zero): the
// messages, and the group invitations of that key (each one request,
// its pinned links its bytes; docs/spec/chat.md §10.9).
func (q *requestQuota) query(key kez.PublicKey) (*usage, error) {
	u, inv := &usage{}, &usage{}
	var err error
	const invitations = `SELECT COUNT(*), COALESCE(SUM((SELECT SUM(LENGTH(link)) FROM group_links l WHERE l.name = g.name)), 0) FROM groups g WHERE invited_by != ''`
	if key.IsZero() {
		err = q.tx.QueryRow(`SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM messages WHERE trust = 'request'`).Scan(&u.n, &u.bytes)
		if err == nil {
			err = q.tx.QueryRow(invitations).Scan(&inv.n, &inv.bytes)
		}
	} else {
		err = q.tx.QueryRow(`SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0) FROM messages WHERE trust = 'request' AND from_key = ?`, key.String()).Scan(&u.n, &u.bytes)
		if err == nil {
			err = q.tx.QueryRow(invitations+` AND invited_by = ?`, key.String()).Scan(&inv.n, &inv.bytes)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("chat: counting message requests: %w", err)
	}
	u.n, u.bytes = u.n+inv.n, u.bytes+inv.bytes
	return u, nil
}

// room returns the cap that n more requests from key, of size bytes in
// all, would go over, or "". n may be 0 (more bytes of a request stored:
// an invitation's chain that grew).
func (q *requestQuota) room(from kez.PublicKey, n, size int64) (string, error) {
	var err error
	if q.total == nil {
		if q.total, err = q.query(kez.PublicKey{}); err != nil {
			return "", err
		}
	}
	ps := q.perSender[from]
	if ps == nil {
		if ps, err = q.query(from); err != nil {
			return "", err
		}
		q.perSender[from] = ps
	}
	cfg := &q.c.cfg
	switch {
	case n > 0 && cfg.MaxRequestsPerSender >= 0 && ps.n+n > int64(cfg.MaxRequestsPerSender):
		return "requests per sender", nil
	case cfg.MaxRequestBytesPerSender >= 0 && ps.bytes+size > cfg.MaxRequestBytesPerSender:
		return "request bytes per sender", nil
	case n > 0 && cfg.MaxRequests >= 0 && q.total.n+n > int64(cfg.MaxRequests):
		return "requests", nil
	case cfg.MaxRequestBytes >= 0 && q.total.bytes+size > cfg.MaxRequestBytes:
		return "request bytes", nil
	}
	return "", nil
}

// count adds n requests from key, of size bytes, to what room checks.
func (q *requestQuota) count(from kez.PublicKey, n, size int64) {
	ps := q.perSender[from]
	ps.n, ps.bytes = ps.n+n, ps.bytes+size
	q.total.n, q.total.bytes = q.total.n+n, q.total.bytes+size
}

// admit reports whether e, a request, fits under the caps, and if so
// counts it. A request already stored (a redelivery) always fits: storing
// it again changes nothing. It returns the cap e is over, or "".
func (q *requestQuota) admit(e *Entry) (string, error) {
	size := int64(len(e.Body))
	over, err := q.room(e.From, 1, size)
	if err != nil {
		return "", err
	}
	if over != "" {
		var one int
		err := q.tx.QueryRow(`SELECT 1 FROM messages WHERE from_key = ? AND id = ?`, e.From.String(), e.ID[:]).Scan(&one)
		switch {
		case err == nil:
			return "", nil // stored already: a duplicate, not a new request
		case !errors.Is(err, sql.ErrNoRows):
			return "", fmt.Errorf("chat: database: %w", err)
		}
		return over, nil
	}
	q.count(e.From, 1, size)
	return "", nil
}

// unadmit takes back the count of a request admit counted that turned out
// to be stored already.
func (q *requestQuota) unadmit(e *Entry) {
	size := int64(len(e.Body))
	if ps := q.perSender[e.From]; ps != nil {
		ps.n, ps.bytes = ps.n-1, ps.bytes-size
	}
	q.total.n, q.total.bytes = q.total.n-1, q.total.bytes-size
}
