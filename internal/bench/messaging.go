package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Receive modes of the messaging rig.
const (
	modeDrain  = iota // ack and forget (leftovers of an earlier run)
	modeRaw           // count
	modeSealed        // open (decrypt, verify), then count
)

// msgUser is one end of the messaging rig: a registered user logged in
// through the callout, with its own JetStream context (for publish
// acknowledgements) and, for a receiver, its consumer on the inbox
// stream, reached through the chat-server's gate as chat.Client reaches
// it.
type msgUser struct {
	*User
	nc     *nats.Conn
	js     *inbox.Publisher
	rcpt   chat.Recipient
	opener *chat.Opener
	cons   *inbox.Puller
	cc     *inbox.Consumer
	// senders caches the keys parsed from subjects (one goroutine runs a
	// consumer's handler).
	senders map[string]kez.PublicKey
}

type msgRig struct {
	senders, receivers []*msgUser
	mode               atomic.Int32
	received, target   atomic.Int64
	done               chan struct{} // one signal when received reaches target
	failed             atomic.Int64  // envelopes that did not open
	pubErrs            atomic.Int64
	lastErr            atomic.Value
}

// measureMessaging runs N senders → M receivers through the inbox stream,
// sealed (chat.Seal, chat.Opener.Open) and raw (the same number of
// messages of the plaintext size, no crypto, same users, same stream, same
// consumers), interleaved in rounds with the crypto floor: the same seals
// and opens done back to back by GOMAXPROCS goroutines without any
// network. Then one message at a time for the latencies.
func measureMessaging(ctx context.Context, st *Stack, cfg Config, users []*User) ([]Figure, error) {
	ns := cfg.Senders
	rig := &msgRig{done: make(chan struct{}, 1)}
	defer rig.close()
	for i, u := range users {
		mu, err := rig.connect(ctx, st, u, i >= ns)
		if err != nil {
			return nil, err
		}
		if i < ns {
			rig.senders = append(rig.senders, mu)
		} else {
			rig.receivers = append(rig.receivers, mu)
		}
	}
	if err := rig.drain(ctx); err != nil {
		return nil, err
	}

	var out []Figure
	for _, size := range cfg.Sizes {
		body := []byte(strings.Repeat("k", size))
		label := sizeLabel(size)
		var raw, sealed, floor phaseTime
		cpuRaw, cpuSealed, cpuFloor := make([]time.Duration, 3), make([]time.Duration, 3), make([]time.Duration, 3)
		var names []string
		rounds := max(1, cfg.Rounds)
		per := max(cfg.Messages/rounds, len(rig.senders)*len(rig.receivers))
		for range rounds {
			m := st.cpuMeter()
			d, err := rig.throughput(ctx, modeRaw, body, per)
			if err != nil {
				return nil, fmt.Errorf("raw messaging, %s: %w", label, err)
			}
			raw.add(per, d)
			addCPU(cpuRaw, m.used())
			m = st.cpuMeter()
			if d, err = rig.throughput(ctx, modeSealed, body, per); err != nil {
				return nil, fmt.Errorf("sealed messaging, %s: %w", label, err)
			}
			sealed.add(per, d)
			addCPU(cpuSealed, m.used())
			m = st.cpuMeter()
			if d, err = rig.floor(body, per); err != nil {
				return nil, fmt.Errorf("crypto floor, %s: %w", label, err)
			}
			floor.add(per, d)
			addCPU(cpuFloor, m.used())
			names = m.names
		}
		shape := fmt.Sprintf("%d→%d", len(rig.senders), len(rig.receivers))
		out = append(out,
			Figure{Group: "messaging", Name: "sealed " + label + " " + shape, Unit: "msgs/s", Value: sealed.rate(),
				Baseline: "crypto floor", Base: floor.rate(), Goal: MinRatio, Target: 0.80,
				Note: fmt.Sprintf("crypto floor: seal+open of the same messages by %d goroutines, no network; CPU per message, sealed / floor / raw: %s / %s / %s",
					runtime.GOMAXPROCS(0), perOp(names, cpuSealed, sealed.n), perOp(names, cpuFloor, floor.n), perOp(names, cpuRaw, raw.n)),
				CPURatio: cpuRatio(cpuFloor, floor.n, cpuSealed, sealed.n)},
			Figure{Group: "messaging", Name: "sealed " + label + " " + shape, Unit: "msgs/s", Value: sealed.rate(),
				Baseline: "raw JetStream", Base: raw.rate(), CPURatio: cpuRatio(cpuRaw, raw.n, cpuSealed, sealed.n)},
		)

		rawLat, sealedLat, err := rig.latency(ctx, body, cfg.LatencyMessages)
		if err != nil {
			return nil, fmt.Errorf("messaging latency, %s: %w", label, err)
		}
		out = append(out,
			Figure{Group: "messaging", Name: "sealed " + label + " p50", Unit: "µs", Value: percentile(sealedLat, 0.50),
				Baseline: "raw JetStream p50", Base: percentile(rawLat, 0.50)},
			Figure{Group: "messaging", Name: "sealed " + label + " p99", Unit: "µs", Value: percentile(sealedLat, 0.99),
				Baseline: "raw JetStream p99", Base: percentile(rawLat, 0.99)},
		)
	}
	if n := rig.failed.Load(); n > 0 {
		return out, fmt.Errorf("%d envelopes did not open; last error: %v", n, rig.lastErr.Load())
	}
	return out, nil
}

func sizeLabel(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// phaseTime collects the rounds of one measured path.
type phaseTime struct {
	n     int           // operations (or bytes) over all rounds
	d     time.Duration // their time
	rates []float64     // each round's rate
}

func (p *phaseTime) add(n int, d time.Duration) {
	p.n += n
	p.d += d
	if d > 0 {
		p.rates = append(p.rates, float64(n)/d.Seconds())
	}
}

// rate is the median of the rounds' rates: on a shared machine a round
// that another process slowed down moves it less than it moves the mean.
func (p *phaseTime) rate() float64 {
	if len(p.rates) == 0 {
		return 0
	}
	r := slices.Clone(p.rates)
	slices.Sort(r)
	if len(r)%2 == 1 {
		return r[len(r)/2]
	}
	return (r[len(r)/2-1] + r[len(r)/2]) / 2
}

func (r *msgRig) connect(ctx context.Context, st *Stack, u *User, receiver bool) (*msgUser, error) {
	nc, err := chat.Connect(ctx, st.NATSURL, u.Identity, nats.NoReconnect())
	if err != nil {
		return nil, fmt.Errorf("logging in %s: %w", u.Name, err)
	}
	mu := &msgUser{User: u, nc: nc, senders: map[string]kez.PublicKey{}}
	mu.rcpt = chat.Recipient{Key: u.Key, EncryptionKey: u.Identity.EncryptionKey(0).PublicKey()}
	// Sends go to the chat-server's gate, their answers come back on the
	// user's own subject: what chat.Client does.
	if mu.js, err = inbox.NewPublisher(nc, u.Key.String(), 1024, time.Minute); err != nil {
		nc.Close()
		return nil, err
	}
	// A sender with 1024 sends in flight waits for answers, however slow
	// a shared machine makes them.
	mu.js.StallWait = time.Minute
	mu.js.OnError = func(err error) {
		r.pubErrs.Add(1)
		r.lastErr.Store(err)
	}
	if !receiver {
		return mu, nil
	}
	if mu.opener, err = chat.NewOpener(u.Identity, nil); err != nil {
		nc.Close()
		return nil, err
	}
	key := u.Key.String()
	if _, err := inbox.Open(ctx, nc, key, chat.DefaultAckWait); err != nil {
		nc.Close()
		return nil, fmt.Errorf("opening the consumer of %s: %w", u.Name, err)
	}
	mu.cons = inbox.NewPuller(nc, key, chat.DefaultStream)
	never := make(chan struct{})
	mu.cc = mu.cons.Consume(256, func() <-chan struct{} { return never }, func(m jetstream.Msg) { r.handle(mu, m) },
		func(err error) { r.lastErr.Store(err) })
	return mu, nil
}

// handle is a receiver's consumer handler.
func (r *msgRig) handle(mu *msgUser, m jetstream.Msg) {
	mode := r.mode.Load()
	if mode == modeSealed {
		subj := m.Subject()
		tok := subj[strings.LastIndexByte(subj, '.')+1:]
		from, ok := mu.senders[tok]
		if !ok {
			var err error
			if from, err = kez.ParsePublicKey(tok); err != nil {
				r.failed.Add(1)
				r.lastErr.Store(err)
			}
			mu.senders[tok] = from
		}
		if _, err := mu.opener.Open(m.Data(), from); err != nil {
			r.failed.Add(1)
			r.lastErr.Store(err)
		}
	}
	_ = m.Ack()
	if mode != modeDrain && r.received.Add(1) == r.target.Load() {
		r.done <- struct{}{}
	}
}

// drain waits until the receivers' consumers have nothing pending (left
// over from an earlier run against the same stack).
func (r *msgRig) drain(ctx context.Context) error {
	r.mode.Store(modeDrain)
	deadline := time.Now().Add(time.Minute)
	for _, mu := range r.receivers {
		for {
			info, err := inbox.Open(ctx, mu.nc, mu.Key.String(), 0)
			if err != nil {
				return err
			}
			if info.Pending == 0 && info.AckPending == 0 {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("the receivers' consumers did not drain within a minute")
			}
			time.Sleep(50 * time.Millisecond) // polling the server's state
		}
	}
	return nil
}

// throughput sends total messages from all senders, round robin over the
// receivers, and returns the time until the last one was received (and,
// when sealed, opened).
func (r *msgRig) throughput(ctx context.Context, mode int32, body []byte, total int) (time.Duration, error) {
	r.mode.Store(mode)
	r.received.Store(0)
	r.target.Store(int64(total))
	errs0 := r.pubErrs.Load()
	per := total / len(r.senders)
	extra := total % len(r.senders)
	var wg sync.WaitGroup
	var sendErr atomic.Value
	start := time.Now()
	for i, s := range r.senders {
		n := per + cond(i < extra, 1, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range n {
				to := r.receivers[(i+k)%len(r.receivers)]
				msg, err := r.message(mode, s, to, body)
				if err == nil {
					_, err = s.js.PublishMsgAsync(msg)
				}
				if err != nil {
					sendErr.Store(err)
					return
				}
			}
			<-s.js.PublishAsyncComplete()
		}()
	}
	wg.Wait()
	if err, _ := sendErr.Load().(error); err != nil {
		return 0, err
	}
	if n := r.pubErrs.Load() - errs0; n > 0 {
		return 0, fmt.Errorf("%d publishes failed: %v", n, r.lastErr.Load())
	}
	select {
	case <-r.done:
		return time.Since(start), nil
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("received %d of %d messages within 2 minutes", r.received.Load(), total)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// message builds what sender s publishes to receiver to: a sealed
// envelope or the raw body, with a fresh Nats-Msg-Id either way.
func (r *msgRig) message(mode int32, s, to *msgUser, body []byte) (*nats.Msg, error) {
	id := chat.NewMessageID()
	msg := nats.NewMsg(callout.SendSubjectPrefix + to.Key.String() + "." + s.Key.String())
	msg.Header.Set(jetstream.MsgIDHeader, id.String())
	if mode == modeSealed {
		env, err := chat.Seal(s.Identity, to.rcpt, chat.Message{ID: id, Kind: chat.KindText, Body: body})
		if err != nil {
			return nil, err
		}
		msg.Data = env
	} else {
		msg.Data = body
	}
	return msg, nil
}

// floor seals and opens total messages (senders and receivers as in the
// throughput run) with GOMAXPROCS goroutines and no network.
func (r *msgRig) floor(body []byte, total int) (time.Duration, error) {
	workers := runtime.GOMAXPROCS(0)
	var next atomic.Int64
	var wg sync.WaitGroup
	var ferr atomic.Value
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := int(next.Add(1) - 1)
				if k >= total {
					return
				}
				s := r.senders[k%len(r.senders)]
				to := r.receivers[k%len(r.receivers)]
				env, err := chat.Seal(s.Identity, to.rcpt, chat.Message{ID: chat.NewMessageID(), Kind: chat.KindText, Body: body})
				if err == nil {
					_, err = to.opener.Open(env, s.Key)
				}
				if err != nil {
					ferr.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := ferr.Load().(error); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// latency sends n messages one at a time from the first sender to the
// first receiver, alternating raw and sealed, and returns each kind's
// send-to-received times (sealed: from before sealing until opened).
func (r *msgRig) latency(ctx context.Context, body []byte, n int) (raw, sealed []time.Duration, err error) {
	s, to := r.senders[0], r.receivers[0]
	for range n {
		for _, mode := range []int32{modeRaw, modeSealed} {
			r.mode.Store(mode)
			r.received.Store(0)
			r.target.Store(1)
			start := time.Now()
			msg, err := r.message(mode, s, to, body)
			if err != nil {
				return nil, nil, err
			}
			if _, err := s.js.PublishMsgAsync(msg); err != nil {
				return nil, nil, err
			}
			select {
			case <-r.done:
			case <-time.After(30 * time.Second):
				return nil, nil, errors.New("a message did not arrive within 30 s")
			case <-ctx.Done():
				return nil, nil, ctx.Err()
			}
			d := time.Since(start)
			if mode == modeRaw {
				raw = append(raw, d)
			} else {
				sealed = append(sealed, d)
			}
			<-s.js.PublishAsyncComplete()
		}
	}
	return raw, sealed, nil
}

func (r *msgRig) close() {
	for _, mu := range append(r.senders, r.receivers...) {
		if mu.cc != nil {
			mu.cc.Drain()
		}
		mu.nc.Close()
	}
}

// percentile returns the p-th percentile of ds in µs.
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Nanoseconds()) / 1e3
}
