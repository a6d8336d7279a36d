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
	"github.com/kez-lat/kez-chat/session"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Receive modes of the messaging rig.
const (
	modeDrain   = iota // ack and forget (leftovers of an earlier run)
	modeRaw            // count
	modeSealed         // open (decrypt, verify), then count
	modeSession        // open in the sender's session (format v2), then count
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

	// Format v2 (sessions.go): a sender's sessions by receiver; a
	// receiver's prekey and its sessions by the sender's key text (one
	// goroutine uses each map's sessions at a time: a sender's, or a
	// consumer's handler).
	seals  map[kez.PublicKey]*session.Session
	prekey *session.PrekeyPrivate
	opens  map[string]*session.Session
}

type msgRig struct {
	senders, receivers []*msgUser
	mode               atomic.Int32
	received, target   atomic.Int64
	done               chan struct{} // one signal when received reaches target
	failed             atomic.Int64  // envelopes that did not open
	opened             atomic.Int64  // session envelopes opened
	pubErrs            atomic.Int64
	lastErr            lastError
	floorPairs         []sessionPair // the session floor's, one per goroutine
}

// fail counts an envelope that did not open.
func (r *msgRig) fail(err error) {
	r.failed.Add(1)
	r.lastErr.set(err)
}

// measureMessaging runs N senders → M receivers through the inbox stream,
// sealed (chat.Seal, chat.Opener.Open), raw (the same number of messages
// of the plaintext size, no crypto, same users, same stream, same
// consumers) and in sessions (format v2: session.Seal and Open in an
// established session per sender and receiver), interleaved in rounds
// with the crypto floors: the same seals and opens done back to back by
// GOMAXPROCS goroutines without any network. Then one message at a time
// for the latencies, and last what a new session costs.
func measureMessaging(ctx context.Context, st *Stack, cfg Config, users []*User) ([]Figure, error) {
	rig, err := newMsgRig(ctx, st, cfg.Senders, users)
	if err != nil {
		return nil, err
	}
	defer rig.close()
	if err := rig.setupSessions(time.Now()); err != nil {
		return nil, fmt.Errorf("setting up the sessions: %w", err)
	}

	var out []Figure
	for _, size := range cfg.Sizes {
		body := []byte(strings.Repeat("k", size))
		label := sizeLabel(size)
		var raw, sealed, floor, sess, sessFloor phaseTime
		cpuRaw, cpuSealed, cpuFloor, cpuSess := make([]time.Duration, 3), make([]time.Duration, 3), make([]time.Duration, 3), make([]time.Duration, 3)
		// kez-bench's own CPU in the floors, to the microsecond.
		var selfFloor, selfSessFloor time.Duration
		var names []string
		rounds := max(1, cfg.Rounds)
		per := max(cfg.Messages/rounds, len(rig.senders)*len(rig.receivers))
		sessPer := max(per, sessionFloorMin)
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
			m, c0 := st.cpuMeter(), selfCPU()
			if d, err = rig.floor(body, per); err != nil {
				return nil, fmt.Errorf("crypto floor, %s: %w", label, err)
			}
			floor.add(per, d)
			selfFloor += selfCPU() - c0
			addCPU(cpuFloor, m.used())
			m = st.cpuMeter()
			if d, err = rig.throughput(ctx, modeSession, body, per); err != nil {
				return nil, fmt.Errorf("session messaging, %s: %w", label, err)
			}
			sess.add(per, d)
			addCPU(cpuSess, m.used())
			c0 = selfCPU()
			if d, err = rig.sessionFloor(body, sessPer); err != nil {
				return nil, fmt.Errorf("session crypto floor, %s: %w", label, err)
			}
			sessFloor.add(sessPer, d)
			selfSessFloor += selfCPU() - c0
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

		lat, err := rig.latency(ctx, body, cfg.LatencyMessages)
		if err != nil {
			return nil, fmt.Errorf("messaging latency, %s: %w", label, err)
		}
		rawLat, sealedLat, sessLat := lat[modeRaw], lat[modeSealed], lat[modeSession]
		out = append(out,
			Figure{Group: "messaging", Name: "sealed " + label + " p50", Unit: "µs", Value: percentile(sealedLat, 0.50),
				Baseline: "raw JetStream p50", Base: percentile(rawLat, 0.50)},
			Figure{Group: "messaging", Name: "sealed " + label + " p99", Unit: "µs", Value: percentile(sealedLat, 0.99),
				Baseline: "raw JetStream p99", Base: percentile(rawLat, 0.99)},
		)

		// Format v2, against the same raw rounds and latencies.
		targeted := size == sessionTargetSize
		out = append(out,
			Figure{Group: "messaging", Name: "session " + label + " " + shape, Unit: "msgs/s", Value: sess.rate(),
				Baseline: "raw JetStream", Base: raw.rate(), Goal: cond(targeted, MinRatio, NoTarget), Target: cond(targeted, sessionRateTarget, 0),
				CPURatio: cpuRatio(cpuRaw, raw.n, cpuSess, sess.n),
				Note: fmt.Sprintf("format v2: each sender→receiver pair has its own established session (set up before timing); every message is a type-2 envelope "+
					"(session.Seal of a plaintext the size of chat's inner message, %d B), which its receiver opens in the session of the subject's sender and checks. "+
					"Baseline, in the same rounds: %s. CPU per message, session / raw: %s / %s",
					size+innerV2Overhead, rawBaseline, perOp(names, cpuSess, sess.n), perOp(names, cpuRaw, raw.n))},
			Figure{Group: "messaging", Name: "session " + label + " p50", Unit: "µs", Value: percentile(sessLat, 0.50),
				Baseline: "raw JetStream p50", Base: percentile(rawLat, 0.50), Goal: cond(targeted, MaxRatio, NoTarget), Target: cond(targeted, sessionP50Target, 0),
				Note: "one message at a time from sender 0 to receiver 0, from before sealing to after opening, alternating raw, v1 and session messages"},
			Figure{Group: "messaging", Name: "session " + label + " p99", Unit: "µs", Value: percentile(sessLat, 0.99),
				Baseline: "raw JetStream p99", Base: percentile(rawLat, 0.99)},
			Figure{Group: "messaging", Name: "session " + label + " crypto CPU", Unit: "µs", Value: perMessage(selfSessFloor, sessFloor.n),
				Baseline: "v1 seal+open", Base: perMessage(selfFloor, floor.n), Goal: cond(targeted, MaxValue, NoTarget), Target: cond(targeted, sessionCPUTarget, 0),
				Note: fmt.Sprintf("kez-bench's process CPU (getrusage) per message while %d goroutines, each with a session pair of its own, seal and open messages back to back, no network "+
					"(steady state: no DH ratchet step): %s msgs/s wall. Baseline: the same for v1's crypto floor (chat.Seal + Opener.Open), %s msgs/s wall",
					len(rig.floorPairs), num(sessFloor.rate()), num(floor.rate()))},
		)
	}
	figs, err := measureHandshakes(cfg, rig.senders[0], rig.receivers[0])
	if err != nil {
		return out, fmt.Errorf("session handshakes: %w", err)
	}
	out = append(out, figs...)
	if n := rig.failed.Load(); n > 0 {
		return out, fmt.Errorf("%d envelopes did not open; last error: %v", n, rig.lastErr.get())
	}
	return out, nil
}

// rawBaseline says what the raw JetStream baseline is.
const rawBaseline = "raw JetStream: the same users (logged in through the auth callout) publish a body of the message's size, no envelope and no crypto, " +
	"asynchronously (at most 1024 in flight each, with a Nats-Msg-Id) on kez.v1.send.<receiver>.<sender>, which the chat-server's gate checks and stores on the inbox stream; " +
	"each receiver pulls from its durable consumer through the gate (batches of 256) and acknowledges in batches through it, as chat.Client does; " +
	"timed from the first publish to the last message received"

// sessionFloorMin is the fewest messages a round of the session floor
// seals and opens: at a few µs each, fewer would be over before the
// process's CPU time says much.
const sessionFloorMin = 5000

// perMessage returns cpu per message in µs.
func perMessage(cpu time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(cpu.Nanoseconds()) / 1e3 / float64(n)
}

// newMsgRig logs users in, the first senders of them as senders and the
// rest as receivers (each with its consumer), and drains the receivers'
// consumers of anything an earlier run left.
func newMsgRig(ctx context.Context, st *Stack, senders int, users []*User) (*msgRig, error) {
	rig := &msgRig{done: make(chan struct{}, 1)}
	for i, u := range users {
		mu, err := rig.connect(ctx, st, u, i >= senders)
		if err != nil {
			rig.close()
			return nil, err
		}
		if i < senders {
			rig.senders = append(rig.senders, mu)
		} else {
			rig.receivers = append(rig.receivers, mu)
		}
	}
	if err := rig.drain(ctx); err != nil {
		rig.close()
		return nil, err
	}
	return rig, nil
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
		r.lastErr.set(err)
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
		func(err error) { r.lastErr.set(err) })
	return mu, nil
}

// handle is a receiver's consumer handler.
func (r *msgRig) handle(mu *msgUser, m jetstream.Msg) {
	mode := r.mode.Load()
	switch mode {
	case modeSealed:
		subj := m.Subject()
		tok := subj[strings.LastIndexByte(subj, '.')+1:]
		from, ok := mu.senders[tok]
		if !ok {
			var err error
			if from, err = kez.ParsePublicKey(tok); err != nil {
				r.fail(err)
			}
			mu.senders[tok] = from
		}
		if _, err := mu.opener.Open(m.Data(), from); err != nil {
			r.fail(err)
		}
	case modeSession:
		r.openSession(mu, m)
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
// when sealed, opened). In sessions, every message must have opened.
func (r *msgRig) throughput(ctx context.Context, mode int32, body []byte, total int) (time.Duration, error) {
	r.mode.Store(mode)
	r.received.Store(0)
	r.target.Store(int64(total))
	errs0, opened0 := r.pubErrs.Load(), r.opened.Load()
	per := total / len(r.senders)
	extra := total % len(r.senders)
	var wg sync.WaitGroup
	var sendErr lastError
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
					sendErr.set(err)
					return
				}
			}
			<-s.js.PublishAsyncComplete()
		}()
	}
	wg.Wait()
	if err := sendErr.get(); err != nil {
		return 0, err
	}
	if n := r.pubErrs.Load() - errs0; n > 0 {
		return 0, fmt.Errorf("%d publishes failed: %v", n, r.lastErr.get())
	}
	select {
	case <-r.done:
		d := time.Since(start)
		if n := r.opened.Load() - opened0; mode == modeSession && n != int64(total) {
			return 0, fmt.Errorf("%d of %d session messages opened; last error: %v", n, total, r.lastErr.get())
		}
		return d, nil
	case <-time.After(2 * time.Minute):
		return 0, fmt.Errorf("received %d of %d messages within 2 minutes", r.received.Load(), total)
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// message builds what sender s publishes to receiver to: a sealed
// envelope (v1, or v2 in s's session with to) or the raw body, with a
// fresh Nats-Msg-Id either way.
func (r *msgRig) message(mode int32, s, to *msgUser, body []byte) (*nats.Msg, error) {
	id := chat.NewMessageID()
	msg := nats.NewMsg(callout.SendSubjectPrefix + to.Key.String() + "." + s.Key.String())
	msg.Header.Set(jetstream.MsgIDHeader, id.String())
	switch mode {
	case modeSealed:
		env, err := chat.Seal(s.Identity, to.rcpt, chat.Message{ID: id, Kind: chat.KindText, Body: body})
		if err != nil {
			return nil, err
		}
		msg.Data = env
	case modeSession:
		env, err := s.seals[to.Key].Seal(nil, sessionPlaintext(id, body))
		if err != nil {
			return nil, err
		}
		msg.Data = env
	default:
		msg.Data = body
	}
	return msg, nil
}

// floor seals and opens total messages (senders and receivers as in the
// throughput run) with GOMAXPROCS goroutines and no network.
func (r *msgRig) floor(body []byte, total int) (time.Duration, error) {
	return parallel(runtime.GOMAXPROCS(0), total, func(_, k int) error {
		s := r.senders[k%len(r.senders)]
		to := r.receivers[k%len(r.receivers)]
		env, err := chat.Seal(s.Identity, to.rcpt, chat.Message{ID: chat.NewMessageID(), Kind: chat.KindText, Body: body})
		if err == nil {
			_, err = to.opener.Open(env, s.Key)
		}
		return err
	})
}

// parallel runs op for k = 0 … total-1 on workers goroutines, each call
// told its worker's number, and returns the time they took. It stops at
// the first error.
func parallel(workers, total int, op func(worker, k int) error) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var ferr lastError
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for k := int(next.Add(1) - 1); k < total; k = int(next.Add(1) - 1) {
				if err := op(w, k); err != nil {
					ferr.set(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := ferr.get(); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// latency sends n messages of each kind one at a time from the first
// sender to the first receiver, alternating raw, sealed (v1) and session
// (v2) messages, and returns each mode's send-to-received times (sealed:
// from before sealing until opened).
func (r *msgRig) latency(ctx context.Context, body []byte, n int) (map[int32][]time.Duration, error) {
	s, to := r.senders[0], r.receivers[0]
	out := map[int32][]time.Duration{}
	for range n {
		for _, mode := range []int32{modeRaw, modeSealed, modeSession} {
			start := time.Now()
			msg, err := r.message(mode, s, to, body)
			if err != nil {
				return nil, err
			}
			d, err := r.deliverOne(ctx, mode, s, msg, start)
			if err != nil {
				return nil, err
			}
			out[mode] = append(out[mode], d)
		}
	}
	return out, nil
}

// deliverOne publishes msg from s, waits until its receiver handled it in
// mode and returns the time from start until then. It returns once the
// stream answered the publish.
func (r *msgRig) deliverOne(ctx context.Context, mode int32, s *msgUser, msg *nats.Msg, start time.Time) (time.Duration, error) {
	r.mode.Store(mode)
	r.received.Store(0)
	r.target.Store(1)
	if _, err := s.js.PublishMsgAsync(msg); err != nil {
		return 0, err
	}
	defer func() { <-s.js.PublishAsyncComplete() }()
	select {
	case <-r.done:
		return time.Since(start), nil
	case <-time.After(30 * time.Second):
		return 0, errors.New("a message did not arrive within 30 s")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
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
