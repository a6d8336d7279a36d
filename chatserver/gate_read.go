package chatserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// Read mail leaves the inbox stream through the gate. The stream keeps
// messages under limits retention (callout.InboxConfig.StreamConfig says
// why not interest retention), so the gate removes what a user has read:
// it notes the acknowledgements it passes on (+ACK and +TERM), and once
// MailLimits.RemoveReadAfter of a user's have gathered, or on the next
// sweep (every MailLimits.RemoveReadEvery), it asks JetStream for the
// acknowledgement floor of that user's consumer and purges the user's
// inbox, kez.v1.inbox.<key>.>, up to and including the floor. Every
// message of the consumer at or below its floor is acknowledged, so
// nothing unread goes; what was acknowledged above a gap (a message still
// out, or refused with -NAK) goes once the gap closes.
//
// What a user decides here: only that its own inbox is looked at, at most
// maxReadMisses times (the removal and its retries) per RemoveReadAfter of
// its acknowledgements and per sweep, and all users together at most
// RemoveReadRate times a second. The floor comes from JetStream and the
// subjects from the user's key, so no one's acknowledgements, forged or
// not, remove another user's mail.

// readMail is what the gate knows of one user's read mail.
type readMail struct {
	acks   int         // acknowledgements passed on since the last removal
	top    uint64      // the highest stream sequence they named
	floor  uint64      // the consumer's acknowledgement floor the last removal saw
	queued bool        // waiting in readRemover.queue
	retry  *time.Timer // queues the user again (retryLocked); at most one
	misses int         // removals since the last trigger that found the floor below top
}

// A removal that finds the consumer's floor below the highest sequence
// acknowledged (the acknowledgements not applied yet, or a gap) is tried
// again after readRetry, doubled each time (after readRetry again when
// the floor moved), until maxReadMisses removals since the last trigger
// (RemoveReadAfter acknowledgements, or a sweep) have missed; then the
// gate forgets the user until its next acknowledgement. Acknowledgements
// in between do not add retries: otherwise one line after each removal
// (the same acknowledgement again, with a gap of the user's own below it,
// or a sequence never delivered) kept a user's removals going every
// readRetry for as long as the user liked.
const (
	readRetry     = 50 * time.Millisecond
	maxReadMisses = 4
)

// readRemover queues users whose read mail is due for removal.
type readRemover struct {
	mu     sync.Mutex
	users  map[string]*readMail // by key
	queue  []string
	wake   chan struct{}
	bucket bucket // RemoveReadRate, for all users
}

// readMetrics are the removal's Prometheus metrics:
//
//	kez_chat_gate_read_removals_total{result="ok|error"}
//	kez_chat_gate_read_removed_messages_total
//	kez_chat_gate_read_pending_users
type readMetrics struct {
	ok, failed, removed prometheus.Counter
}

func newReadRemover() *readRemover {
	return &readRemover{users: map[string]*readMail{}, wake: make(chan struct{}, 1)}
}

func (r *readRemover) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.users)
}

func registerReadMetrics(reg prometheus.Registerer, r *readRemover) (readMetrics, error) {
	removals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kez_chat_gate_read_removals_total",
		Help: "Removals of read mail from the inbox stream (one user's inbox purged up to its consumer's acknowledgement floor), by result.",
	}, []string{"result"})
	removed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "kez_chat_gate_read_removed_messages_total",
		Help: "Read messages the gate removed from the inbox stream.",
	})
	users := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kez_chat_gate_read_pending_users",
		Help: "Users with acknowledged mail the gate has not removed yet.",
	}, func() float64 { return float64(r.pending()) })
	for _, c := range []prometheus.Collector{removals, removed, users} {
		if err := reg.Register(c); err != nil {
			return readMetrics{}, err
		}
	}
	return readMetrics{ok: removals.WithLabelValues("ok"), failed: removals.WithLabelValues("error"), removed: removed}, nil
}

// noteRead records that the gate passed on n acknowledgements (+ACK or
// +TERM) of key's consumer, the highest naming stream sequence top, and
// queues key's removal once RemoveReadAfter have gathered. At most
// MaxTracked users wait at once; beyond that a user waits for its next
// acknowledgement.
func (g *gate) noteRead(key string, n int, top uint64) {
	if !g.purges.Load() {
		return // interest retention removes it
	}
	r := g.read
	r.mu.Lock()
	m := r.users[key]
	if m == nil {
		if len(r.users) >= g.lim.MaxTracked {
			r.mu.Unlock()
			return
		}
		m = &readMail{}
		r.users[key] = m
	}
	m.acks += n
	m.top = max(m.top, top)
	due := false
	if m.acks >= g.lim.RemoveReadAfter {
		m.misses = 0 // a trigger: a removal and its retries
		due = r.enqueueLocked(key, m)
	}
	r.mu.Unlock()
	if due {
		signal(r.wake)
	}
}

// enqueueLocked queues key (whose entry is m) unless it waits already,
// and reports whether it did.
func (r *readRemover) enqueueLocked(key string, m *readMail) bool {
	if m.queued {
		return false
	}
	m.queued = true
	r.queue = append(r.queue, key)
	return true
}

// removeRead removes read mail until ctx ends: the users queued by
// noteRead as they come, and every RemoveReadEvery all users with
// acknowledgements noted.
func (g *gate) removeRead(ctx context.Context) {
	r := g.read
	sweep := time.NewTicker(g.lim.RemoveReadEvery)
	defer sweep.Stop()
	defer r.stopRetries()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		case <-sweep.C:
			r.mu.Lock()
			for key, m := range r.users {
				m.misses = 0 // a trigger, as in noteRead
				r.enqueueLocked(key, m)
			}
			r.mu.Unlock()
		}
		for {
			r.mu.Lock()
			if len(r.queue) == 0 {
				r.queue = nil // let a long queue's array go
				r.mu.Unlock()
				break
			}
			key := r.queue[0]
			r.queue = r.queue[1:]
			wait := r.waitLocked(g.now(), g.lim.RemoveReadRate)
			r.mu.Unlock()
			if wait > 0 && !lifecycle.Sleep(ctx, wait) {
				return
			}
			g.removeUserRead(ctx, key)
		}
	}
}

// waitLocked takes a token of the removal bucket, which holds one second's
// worth, and returns how long to wait before using it (0: now).
func (r *readRemover) waitLocked(now time.Time, rate float64) time.Duration {
	if rate < 0 {
		return 0
	}
	if r.bucket.take(now, rate, max(rate, 1), 1) {
		return 0
	}
	wait := time.Duration((1 - r.bucket.tokens) / rate * float64(time.Second))
	r.bucket.tokens-- // the token is spent once the wait is over
	return wait
}

// removeUserRead purges key's read mail up to its consumer's floor.
func (g *gate) removeUserRead(ctx context.Context, key string) {
	r := g.read
	r.mu.Lock()
	m := r.users[key]
	if m == nil {
		r.mu.Unlock()
		return
	}
	m.queued, m.acks = false, 0
	m.stopRetry() // this removal is the one it would have queued
	r.mu.Unlock()

	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var floor, delivered, removed uint64
	// The consumer is named after the key (callout.ConsumerName), the
	// token onAck checked.
	c, err := g.js.Consumer(ctx, g.stream, key)
	if err == nil {
		info := c.CachedInfo()
		floor, delivered = info.AckFloor.Stream, info.Delivered.Stream
		if floor > 0 {
			removed, err = g.purgeInbox(ctx, key, floor+1)
		}
	}
	if err != nil {
		g.readM.failed.Inc()
		g.log.Warn("gate: cannot remove a user's read mail", "user", key, "err", err)
	} else {
		g.readM.ok.Inc()
		g.readM.removed.Add(float64(removed))
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if m = r.users[key]; m == nil {
		return
	}
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		m.stopRetry()
		delete(r.users, key)
		return
	}
	// A sequence above what the consumer delivered was never delivered
	// (or not to this consumer): no acknowledgement of it will move the
	// floor, so it is no reason to look again.
	done := err == nil && floor >= min(m.top, delivered)
	if done {
		m.misses = 0
	} else if m.misses++; m.misses < maxReadMisses {
		// Not applied yet, a gap, or JetStream unreachable.
		d := readRetry << m.misses
		if err == nil && floor > m.floor {
			d = readRetry // moving: look again soon
		}
		r.retryLocked(key, m, d)
	}
	if err == nil {
		m.floor = max(m.floor, floor)
	}
	// A user whose removal failed (JetStream unreachable, a leader
	// election) stays for the next sweep, however many tries missed; one
	// whose floor stays below a gap of its own is forgotten until its
	// next acknowledgement.
	if m.acks == 0 && !m.queued && m.retry == nil && (done || err == nil && m.misses >= maxReadMisses) {
		delete(r.users, key)
	}
}

// retryLocked queues key (whose entry is m) again after d, unless it is
// queued by then, in place of a retry m had waiting.
func (r *readRemover) retryLocked(key string, m *readMail, d time.Duration) {
	m.stopRetry()
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		r.mu.Lock()
		due := false
		if r.users[key] == m && m.retry == t {
			m.retry = nil
			due = r.enqueueLocked(key, m)
		}
		r.mu.Unlock()
		if due {
			signal(r.wake)
		}
	})
	m.retry = t
}

// stopRetry stops m's waiting retry, if any. r.mu must be held.
func (m *readMail) stopRetry() {
	if m.retry != nil {
		m.retry.Stop()
		m.retry = nil
	}
}

// stopRetries stops every waiting retry (the gate is stopping).
func (r *readRemover) stopRetries() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.users {
		m.stopRetry()
	}
}

// purgeInbox purges key's inbox below the stream sequence below and
// returns how many messages went.
func (g *gate) purgeInbox(ctx context.Context, key string, below uint64) (uint64, error) {
	req, _ := json.Marshal(map[string]any{"filter": callout.InboxSubjectPrefix + key + ".>", "seq": below})
	resp, err := g.nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE."+g.stream, req)
	if err != nil {
		return 0, err
	}
	var out struct {
		Success bool                `json:"success"`
		Purged  uint64              `json:"purged"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &out); err != nil {
		return 0, fmt.Errorf("purge answer: %w", err)
	}
	if out.Error != nil {
		return 0, out.Error
	}
	if !out.Success {
		return 0, errors.New("purge not done")
	}
	return out.Purged, nil
}

// ackedSeq returns the stream sequence an acknowledgement subject names
// (the second of its five numbers, after prefix) and whether its verb
// marks the message done (+ACK or +TERM). subject was checked by ackLine.
func ackedSeq(subject, prefix string, verb []byte) (uint64, bool) {
	if v := string(verb); v != wire.AckVerbAck && v != wire.AckVerbTerm {
		return 0, false
	}
	_, rest, _ := strings.Cut(subject[len(prefix):], ".")
	n, _, _ := strings.Cut(rest, ".")
	seq, err := strconv.ParseUint(n, 10, 64)
	return seq, err == nil
}
