package bench

// The fan-out through chat.Client: the same shape as the rig's fan-out
// figure, but every device is a chat.Client with its own state folder
// (SQLite history, outbox, sessions), as a person's installs are.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/chat"
)

// arrivals counts messages stored by the receiving clients of a phase.
type arrivals struct {
	n, target atomic.Int64
	done      chan struct{}
}

func (a *arrivals) reset(target int) {
	a.n.Store(0)
	a.target.Store(int64(target))
}

func (a *arrivals) add(e *chat.Entry) {
	if e.Kind == chat.KindText && a.n.Add(1) == a.target.Load() {
		a.done <- struct{}{}
	}
}

// clientFleet is the chat.Clients of the fan-out figure, each receiving
// (Run) in a goroutine of its own.
type clientFleet struct {
	dir     string // the clients' state folders
	arr     arrivals
	clients []*chat.Client
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	runErr  lastError
}

// newClientFleet makes a fleet whose state folders are in a new
// temporary folder named after pattern, and the context its clients
// receive with until it is closed.
func newClientFleet(ctx context.Context, pattern string) (*clientFleet, context.Context, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return nil, nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	return &clientFleet{dir: dir, arr: arrivals{done: make(chan struct{}, 1)}, cancel: cancel}, rctx, nil
}

// close stops the clients and removes their state folders.
func (f *clientFleet) close() {
	f.cancel()
	f.wg.Wait()
	for _, c := range f.clients {
		c.Close()
	}
	os.RemoveAll(f.dir)
}

// open opens a chat.Client for device dev of person (dev == person: its
// primary) in a state folder of its own.
func (f *clientFleet) open(ctx context.Context, st *Stack, person, dev *User) (*chat.Client, error) {
	var c *chat.Client
	var err error
	home := filepath.Join(f.dir, dev.Name)
	if dev == person {
		c, err = st.openClient(ctx, home, person, nil)
	} else {
		c, err = st.openClient(ctx, home, person, dev.Identity)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the chat.Client of %s: %w", dev.Name, err)
	}
	f.clients = append(f.clients, c)
	return c, nil
}

// stats describes what each client received and dropped.
func (f *clientFleet) stats() string {
	var b strings.Builder
	for i, c := range f.clients {
		s := c.Stats()
		fmt.Fprintf(&b, "client %d: sent %d, received %d, rejected %d, undecryptable %d, requests %d; ", i, s.Sent, s.Received, s.Rejected, s.Undecryptable, s.Requests)
	}
	return b.String()
}

// receive starts c receiving, counting what it stores.
func (f *clientFleet) receive(ctx context.Context, c *chat.Client) {
	f.wg.Go(func() {
		if err := c.Run(ctx, f.arr.add); err != nil && !errors.Is(err, chat.ErrClosed) {
			f.runErr.set(err)
		}
	})
}

// send sends n messages from c to handle and waits until the stream
// stored every copy, then until the receivers stored want messages.
func (f *clientFleet) send(ctx context.Context, c *chat.Client, handle string, n, want int) (time.Duration, error) {
	f.arr.reset(want)
	start := time.Now()
	pending := make([]*chat.Pending, 0, n)
	for i := range n {
		p, err := c.SendAsync(ctx, handle, historyMessage(i))
		if err != nil {
			return 0, err
		}
		pending = append(pending, p)
	}
	for _, p := range pending {
		if _, err := p.Wait(ctx); err != nil {
			return 0, err
		}
	}
	select {
	case <-f.arr.done:
		return time.Since(start), nil
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("the receiving devices stored %d of %d messages within 2 minutes (%v); %s", f.arr.n.Load(), want, f.runErr.get(), f.stats())
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// measureClientFanout measures logical messages per second through
// chat.Client from sdevs[0] (the sender's primary, its other devices
// sdevs[1:] receiving the sent copies) to every device of rdevs, against
// one chat.Client to another of two persons with one device each (one, to),
// alternating in rounds.
func measureClientFanout(ctx context.Context, st *Stack, cfg Config, sdevs, rdevs []*User, one, to *User) (*Figure, error) {
	f, rctx, err := newClientFleet(ctx, "kez-bench-devices-")
	if err != nil {
		return nil, err
	}
	defer f.close()

	// Every client is opened (which publishes its device's prekey) before
	// any adds a contact (which tells the person's other devices).
	type pending struct {
		c       *chat.Client
		dev     *User
		contact string
		receive bool
	}
	var opened []pending
	open := func(person, dev, contact *User, receive bool) (*chat.Client, error) {
		c, err := f.open(ctx, st, person, dev)
		if err != nil {
			return nil, err
		}
		opened = append(opened, pending{c, dev, contact.Name + "@" + st.Domain, receive})
		return c, nil
	}
	sender, recipient := sdevs[0], rdevs[0]
	from, err := open(sender, sender, recipient, false)
	if err != nil {
		return nil, err
	}
	for _, d := range sdevs[1:] {
		if _, err := open(sender, d, recipient, true); err != nil {
			return nil, err
		}
	}
	for _, d := range rdevs {
		if _, err := open(recipient, d, sender, true); err != nil {
			return nil, err
		}
	}
	oneFrom, err := open(one, one, to, false)
	if err != nil {
		return nil, err
	}
	if _, err := open(to, to, one, true); err != nil {
		return nil, err
	}

	for _, p := range opened {
		if _, err := p.c.AddContact(ctx, p.contact); err != nil {
			return nil, fmt.Errorf("%s adding %s: %w", p.dev.Name, p.contact, err)
		}
		if p.receive {
			f.receive(rctx, p.c)
		}
	}

	copies := len(rdevs) + len(sdevs) - 1
	rh, th := recipient.Name+"@"+st.Domain, to.Name+"@"+st.Domain
	// Untimed: the sessions' handshakes, and the chains' first fetches.
	if _, err := f.send(ctx, from, rh, 1, copies); err != nil {
		return nil, fmt.Errorf("the first fan-out message: %w", err)
	}
	if _, err := f.send(ctx, oneFrom, th, 1, 1); err != nil {
		return nil, fmt.Errorf("the first 1 → 1 message: %w", err)
	}
	rounds := max(1, cfg.Rounds)
	per := max(1, cfg.DeviceMessages/rounds)
	var base, fan phaseTime
	cpuBase, cpuFan := make([]time.Duration, 3), make([]time.Duration, 3)
	var names []string
	for range rounds {
		m := st.cpuMeter()
		d, err := f.send(ctx, oneFrom, th, per, per)
		if err != nil {
			return nil, fmt.Errorf("1 device → 1 device: %w", err)
		}
		base.add(per, d)
		addCPU(cpuBase, m.used())
		m = st.cpuMeter()
		if d, err = f.send(ctx, from, rh, per, per*copies); err != nil {
			return nil, fmt.Errorf("%d devices → %d devices: %w", len(sdevs), len(rdevs), err)
		}
		fan.add(per, d)
		addCPU(cpuFan, m.used())
		names = m.names
	}
	return &Figure{
		Group: "devices", Name: fmt.Sprintf("chat.Client messages, %d devices → %d devices, %s", len(sdevs), len(rdevs), sizeLabel(historyBodySize)), Unit: "msgs/s",
		Value: fan.rate(), Baseline: "chat.Client 1 device → 1 device", Base: base.rate(), Goal: MinRatio, Target: fanoutTarget,
		CPURatio: cpuRatio(cpuBase, base.n, cpuFan, fan.n),
		Note: fmt.Sprintf("every device a chat.Client with its own state folder, logged in with its own key, receiving (Run) in this process: "+
			"the sender's primary sends (SendAsync) to the recipient person's handle, which seals a copy to each of its %d devices and a sent copy to each of the sender's %d other devices "+
			"(%d envelopes, the outbox rows, history, receipts), timed until each of those devices has stored its copy; "+
			"the sessions and chains are set up by one message before timing. Baseline, alternating rounds: one chat.Client to another, two persons with one device each. "+
			"CPU per logical message, fan-out / 1→1: %s / %s",
			len(rdevs), len(sdevs)-1, copies, perOp(names, cpuFan, fan.n), perOp(names, cpuBase, base.n)),
	}, nil
}
