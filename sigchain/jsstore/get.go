package jsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// msg is one stored message, as the stream leader returned it.
type msg struct {
	subject string
	seq     uint64
	data    []byte
	time    time.Time // when the server stored it
}

// last returns the last message on subject (a filter may have
// wildcards), or nil if there is none. It asks the stream leader
// ($JS.API.STREAM.MSG.GET), never a replica that may lag behind an
// acknowledged append.
func (s *Store) last(ctx context.Context, subject string) (*msg, error) {
	m, err := s.leader.Last(ctx, subject)
	if err != nil {
		return nil, fmt.Errorf("jsstore: %w", err)
	}
	if m == nil {
		return nil, nil
	}
	return &msg{subject: m.Subject, seq: m.Seq, data: m.Data, time: m.Time}, nil
}

// batches routes the answers of direct batch gets to the Links call
// waiting for them, through one subscription on the connection (a
// subscription for each call would cost more than the get itself).
type batches struct {
	prefix string // <inbox>.
	sub    *nats.Subscription

	mu      sync.Mutex
	next    uint64
	waiting map[string]chan *nats.Msg
}

func newBatches(nc *nats.Conn) (*batches, error) {
	b := &batches{prefix: nc.NewRespInbox() + ".", waiting: map[string]chan *nats.Msg{}}
	sub, err := nc.Subscribe(b.prefix+"*", func(m *nats.Msg) {
		b.mu.Lock()
		ch := b.waiting[m.Subject]
		b.mu.Unlock()
		select {
		case ch <- m: // a nil ch (a call that gave up) never receives
		default:
		}
	})
	if err != nil {
		return nil, err
	}
	b.sub = sub
	return b, nil
}

// open returns a reply subject and the channel its answers arrive on
// (room for size of them); call done when finished.
func (b *batches) open(size int) (reply string, ch <-chan *nats.Msg, done func()) {
	c := make(chan *nats.Msg, size)
	b.mu.Lock()
	b.next++
	reply = b.prefix + strconv.FormatUint(b.next, 36)
	b.waiting[reply] = c
	b.mu.Unlock()
	return reply, c, func() {
		b.mu.Lock()
		delete(b.waiting, reply)
		b.mu.Unlock()
	}
}

// directLinks fills out[i] with the message on prefix+(first+i) (link
// first+i of a chain whose subjects start with prefix), as one replica
// has them, in one direct batch get (multi_last over the links' literal
// subjects); what names the chain in errors. Links the replica lacks
// stay nil. A stream without direct gets leaves them all nil.
func (s *Store) directLinks(ctx context.Context, prefix, what string, first uint64, out [][]byte) error {
	subjects := make([]string, len(out))
	for i := range out {
		subjects[i] = prefix + strconv.FormatUint(first+uint64(i), 10)
	}
	// No up_to_seq: these subjects hold nothing newer than the head
	// anyway, and a bound below the stream's last sequence makes the
	// server search backwards through everything stored since.
	req, _ := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Batch     int      `json:"batch"`
	}{subjects, len(out)})
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	reply, answers, done := s.batches.open(len(out) + 1) // the links and the end marker
	defer done()
	if err := s.nc.PublishRequest(s.directGet, reply, req); err != nil {
		return fmt.Errorf("jsstore: reading links of %s: %w", what, err)
	}
	for got := 0; got < len(out); {
		var m *nats.Msg
		select {
		case m = <-answers:
		case <-ctx.Done():
			return fmt.Errorf("jsstore: reading links of %s: %w", what, ctx.Err())
		}
		if m.Header.Get("Status") != "" {
			// 204: the end of the batch; 404: none of them; 503: no
			// replica serves direct gets. The leader fills in the rest.
			return nil
		}
		subj := m.Header.Get("Nats-Subject")
		seqno, err := strconv.ParseUint(strings.TrimPrefix(subj, prefix), 10, 64)
		if !strings.HasPrefix(subj, prefix) || err != nil || seqno < first || seqno >= first+uint64(len(out)) {
			return fmt.Errorf("jsstore: reading links of %s: a direct get answered with %q", what, subj)
		}
		if out[seqno-first] == nil {
			got++
		}
		out[seqno-first] = m.Data
	}
	return nil
}

// seqLinks returns the n messages on prefix+seqno for seqno since+1 …
// since+n, all below the head seqno head: one direct batch from any
// replica, and what it lacks from the stream leader; what names the
// chain in errors.
func (s *Store) seqLinks(ctx context.Context, prefix, what string, since, head uint64, n int) ([][]byte, error) {
	out := make([][]byte, n)
	if err := s.directLinks(ctx, prefix, what, since+1, out); err != nil {
		return nil, err
	}
	var missing []int
	for i, b := range out {
		if b == nil {
			missing = append(missing, i)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	errs := make([]error, len(missing))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, parallelReads)
	var wg sync.WaitGroup
	for j, i := range missing {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			seqno := since + 1 + uint64(i)
			m, err := s.last(ctx, prefix+strconv.FormatUint(seqno, 10))
			switch {
			case err != nil:
				errs[j] = err
				cancel()
			case m == nil:
				errs[j] = fmt.Errorf("jsstore: link %d of %s is missing from the stream below its head %d", seqno, what, head)
				cancel()
			default:
				out[i] = m.data
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}
