package bench

// Revocation that bites: how long a revoked device keeps its open
// connection and its logins once the revocation is registered at the
// chat-server.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// Targets of the revocation figures (docs/performance.md, "Devices").
const (
	// revokeCloseTarget: the revoked device's open connection is closed
	// within this many ms of the revocation being registered ("within
	// seconds").
	revokeCloseTarget = 5000.0
	// revokeLoginTarget: the time until a login of the revoked device is
	// refused, over one refused login of a key that holds no handle, at
	// most: the next login after the revocation is refused, not a later
	// one.
	revokeLoginTarget = 1.5
)

// revocation is one timed revocation.
type revocation struct {
	post     time.Duration // the revocation's POST /v1/devices, sent to answered
	closed   time.Duration // from the POST sent to the open connection closed
	refused  time.Duration // from the POST answered to a login refused
	accepted int           // logins accepted after the revocation was registered
	rtt      time.Duration // the open connection's round trip to the broker before
	unknown  time.Duration // one refused login of an unregistered key, just before
}

// revokeOnce links a fresh device to u, logs it in with its consumer
// open, revokes it and times its open connection being closed by the
// servers, from the moment the revocation's POST /v1/devices is sent (the
// chat-server may close it before it answers), and the first of its
// logins (tried one after another once the POST was answered, each
// accepted one closed) being refused, from the answer. wait bounds both.
func (s *Stack) revokeOnce(ctx context.Context, u *User, name string, wait time.Duration) (revocation, error) {
	var out revocation
	dev, _, err := kez.NewIdentity()
	if err != nil {
		return out, err
	}
	if _, err := s.LinkDevice(ctx, u, dev, name); err != nil {
		return out, err
	}
	closed := make(chan time.Time, 1)
	note := func(*nats.Conn) {
		select {
		case closed <- time.Now():
		default:
		}
	}
	nc, err := chat.Connect(ctx, s.NATSURL, dev, nats.NoReconnect(), nats.ClosedHandler(note),
		nats.DisconnectErrHandler(func(c *nats.Conn, _ error) { note(c) }))
	if err != nil {
		return out, fmt.Errorf("logging in the device to revoke: %w", err)
	}
	defer nc.Close()
	if _, err := inbox.Open(ctx, nc, dev.PublicKey().String(), chat.DefaultAckWait); err != nil {
		return out, fmt.Errorf("opening the consumer of the device to revoke: %w", err)
	}
	if out.rtt, err = nc.RTT(); err != nil {
		return out, err
	}
	if out.unknown, err = s.refusedLogin(ctx); err != nil {
		return out, err
	}

	rv, err := s.revoke(ctx, u, dev.PublicKey())
	if err != nil {
		return out, err
	}
	out.post = rv.answered.Sub(rv.sent)
	registered := rv.answered
	deadline := registered.Add(wait)
	for {
		c, err := chat.Connect(ctx, s.NATSURL, dev, nats.NoReconnect())
		if err == nil {
			c.Close()
			out.accepted++
			if time.Now().After(deadline) {
				return out, fmt.Errorf("the revoked device still logs in %s after its revocation (%d logins accepted)", wait, out.accepted)
			}
			continue
		}
		if !errors.Is(err, chat.ErrNotRegistered) {
			return out, fmt.Errorf("a login of the revoked device: %w", err)
		}
		out.refused = time.Since(registered)
		break
	}
	select {
	case at := <-closed:
		out.closed = at.Sub(rv.sent)
	case <-time.After(time.Until(deadline)):
		return out, fmt.Errorf("the revoked device's open connection was still open %s after its revocation", wait)
	case <-ctx.Done():
		return out, ctx.Err()
	}
	return out, nil
}

// refusedLogin returns how long a login of a fresh key that holds no
// handle takes to be refused.
func (s *Stack) refusedLogin(ctx context.Context) (time.Duration, error) {
	id, _, err := kez.NewIdentity()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	c, err := chat.Connect(ctx, s.NATSURL, id, nats.NoReconnect())
	d := time.Since(t0)
	if err == nil {
		c.Close()
		return 0, errors.New("a key that holds no handle logged in")
	}
	if !errors.Is(err, chat.ErrNotRegistered) {
		return 0, err
	}
	return d, nil
}

// measureRevocation revokes cfg.Revocations devices of u one after
// another and reports the medians.
func measureRevocation(ctx context.Context, st *Stack, cfg Config, u *User) ([]Figure, error) {
	var closed, refused, rtt, unknown, post []time.Duration
	accepted := 0
	for i := range cfg.Revocations {
		r, err := st.revokeOnce(ctx, u, fmt.Sprintf("revoked-%d-%d", time.Now().Unix(), i), cfg.RevokeWait)
		if err != nil {
			return nil, fmt.Errorf("revocation %d: %w", i+1, err)
		}
		closed, refused = append(closed, r.closed), append(refused, r.refused)
		rtt, unknown, post = append(rtt, r.rtt), append(unknown, r.unknown), append(post, r.post)
		accepted += r.accepted
	}
	n := len(closed)
	return []Figure{
		{Group: "devices", Name: "revocation → open connection closed", Unit: "ms", Value: medianMS(closed),
			Baseline: "the revocation's POST /v1/devices", Base: medianMS(post), Goal: MaxValue, Target: revokeCloseTarget,
			Note: fmt.Sprintf("median of %d: a device linked (its link request at the sig-server, add_device registered at the chat-server and appended at the sig-server), "+
				"logged in with its own key and its consumer open, then revoked (revoke_device appended at the sig-server, then POST /v1/devices at the chat-server); "+
				"timed from the moment the POST is sent until the device's connection is closed by the servers (slowest %.1f ms). "+
				"Baseline: the POST's round trip, sent to answered (a ratio under 1: closed before the chat-server answered). "+
				"The connection's PING/PONG round trip to the broker before the revocation: %.2f ms",
				n, maxMS(closed), medianMS(rtt))},
		{Group: "devices", Name: "revocation → next login refused", Unit: "ms", Value: medianMS(refused),
			Baseline: "a login refused for a key without a handle", Base: medianMS(unknown), Goal: MaxRatio, Target: revokeLoginTarget,
			Note: fmt.Sprintf("median of %d: from the chat-server's answer to the revocation's POST until a login of the revoked device (tried one after another from then) is refused; "+
				"logins accepted after the revocation was registered: %d in all. Baseline: one login of a fresh key that holds no handle, refused by the callout, just before",
				n, accepted)},
	}, nil
}

// medianMS returns the median of ds in ms.
func medianMS(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	m := ds[len(ds)/2]
	if len(ds)%2 == 0 {
		m = (ds[len(ds)/2-1] + m) / 2
	}
	return ms(m)
}

// maxMS returns the largest of ds in ms.
func maxMS(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	return ms(slices.Max(ds))
}
