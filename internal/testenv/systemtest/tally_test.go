package systemtest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
)

// msgKey names one message: its sender and ID.
type msgKey struct {
	from kez.PublicKey
	id   chat.MessageID
}

// tally counts messages by ID: what senders had acknowledged by the
// stream, what senders tried without an acknowledgement, and what each
// receiver's handler was given (the user-visible delivery).
type tally struct {
	mu        sync.Mutex
	acked     map[msgKey]kez.PublicKey // → recipient
	unacked   int                      // sends that returned an error
	errs      []string                 // the first few of their errors
	delivered map[msgKey]int           // handler calls per message
	changed   chan struct{}
}

func newTally() *tally {
	return &tally{acked: map[msgKey]kez.PublicKey{}, delivered: map[msgKey]int{}, changed: make(chan struct{}, 1)}
}

func (t *tally) sent(from, to kez.PublicKey, s chat.Sent, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err != nil {
		t.unacked++
		if len(t.errs) < 5 {
			t.errs = append(t.errs, err.Error())
		}
		return
	}
	t.acked[msgKey{from, s.ID}] = to
}

// handler returns a chat.Client.Run handler for recipient me.
func (t *tally) handler(me kez.PublicKey) func(*chat.Entry) {
	return func(e *chat.Entry) {
		if !e.Incoming || e.Kind != chat.KindText {
			return
		}
		t.mu.Lock()
		t.delivered[msgKey{e.From, e.ID}]++
		t.mu.Unlock()
		select {
		case t.changed <- struct{}{}:
		default:
		}
	}
}

// figures are the outcome of a run.
type figures struct {
	Acked, Unacked, Delivered, Lost, Duplicated, ExtraDelivered int
	SendErrors                                                  []string
}

func (f figures) String() string {
	s := fmt.Sprintf("acknowledged %d, unacknowledged attempts %d, delivered %d, lost %d, duplicated %d, delivered without acknowledgement %d",
		f.Acked, f.Unacked, f.Delivered, f.Lost, f.Duplicated, f.ExtraDelivered)
	if len(f.SendErrors) > 0 {
		s += fmt.Sprintf(" (send errors: %q)", f.SendErrors)
	}
	return s
}

func (t *tally) figures() figures {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := figures{Acked: len(t.acked), Unacked: t.unacked, Delivered: len(t.delivered), SendErrors: t.errs}
	for k := range t.acked {
		if t.delivered[k] == 0 {
			f.Lost++
		}
	}
	for k, n := range t.delivered {
		if n > 1 {
			f.Duplicated += n - 1
		}
		if _, ok := t.acked[k]; !ok {
			f.ExtraDelivered++
		}
	}
	return f
}

// waitDelivered waits until every acknowledged message was delivered or
// the timeout passes, and returns the figures.
func (t *tally) waitDelivered(tb testing.TB, timeout time.Duration) figures {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		f := t.figures()
		if f.Lost == 0 {
			return f
		}
		select {
		case <-t.changed:
		case <-deadline.C:
			return t.figures()
		}
	}
}
