package chatserver

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Bounds of a pull request the gate forwards.
const (
	maxPullBatch   = 1024
	maxPullExpires = time.Minute
	// maxNoWaitExpires bounds the expiry of a no-wait pull.
	maxNoWaitExpires = time.Second
	maxPullBody      = 1024
	// minPullHeartbeat is the shortest idle heartbeat a pull may ask for.
	// nats-server sets none for pulls: a heartbeat of 1 ns makes the
	// consumer send one about every millisecond for as long as the pull
	// waits, from the stream's outgoing queue, which carries everyone's
	// acknowledgements and deliveries.
	minPullHeartbeat = time.Second
)

// onConsumer handles kez.v1.consumer.<key>: the gate makes (or updates)
// the user's durable consumer, with the AckWait the request's header asks
// for, and answers {"num_pending":N,"num_ack_pending":M} or an error.
func (g *gate) onConsumer(m *nats.Msg) {
	// A service import: answered on its "_R_." reply subject only, and
	// only when nats-server stamped it as coming from the user account.
	t, ok := subjectKey(m.Subject, callout.ConsumerSubjectPrefix)
	if !ok || !strings.HasPrefix(m.Reply, respPrefix) || !g.fromUserAccount(m) {
		g.drop("consumer", reasonForged)
		return
	}
	key, err := kez.ParsePublicKey(t)
	if err != nil {
		g.drop("consumer", reasonForged)
		return
	}
	if g.revoked(t, g.now()) {
		g.refuse("consumer", m.Reply, reasonRevoked, 403, callout.ErrCodeSenderRevoked, "a revoked device")
		return
	}
	if !g.takePull(key) {
		g.refuse("consumer", m.Reply, reasonAPIQuota, 429, callout.ErrCodeSenderQuota, "too many consumer requests")
		return
	}
	var wait time.Duration
	if v := m.Header.Get(callout.AckWaitHeader); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			g.refuse("consumer", m.Reply, reasonBadRequest, 400, callout.ErrCodeBadRequest, "bad "+callout.AckWaitHeader)
			return
		}
		wait = d
	}
	withDevices := false
	switch v := m.Header.Values(callout.DevicesHeader); {
	case len(v) == 1 && v[0] == "1":
		withDevices = true
	case len(v) != 0:
		g.refuse("consumer", m.Reply, reasonBadRequest, 400, callout.ErrCodeBadRequest, "bad "+callout.DevicesHeader)
		return
	}
	// Answer within the import's response threshold, an error if need
	// be (the client asks again), rather than after nats-server dropped
	// the way back.
	ctx, cancel := context.WithTimeout(context.Background(), callout.ResponseThreshold-time.Second)
	defer cancel()
	info, err := g.consumerInfo(ctx, key, wait)
	if err != nil {
		g.log.Warn("gate: cannot make a user's consumer", "user", key, "err", err)
		g.refuse("consumer", m.Reply, reasonUnavailable, 503, callout.ErrCodeUnavailable, "inbox unavailable")
		return
	}
	answer := consumerAnswer{Pending: info.NumPending, AckPending: uint64(info.NumAckPending)}
	if withDevices {
		devs, err := g.devicesSeen(ctx, key, g.now())
		switch {
		case errors.Is(err, errSeenQuota):
			g.refuse("consumer", m.Reply, reasonAPIQuota, 429, callout.ErrCodeSenderQuota, "too many consumer requests")
			return
		case err != nil:
			g.log.Warn("gate: cannot tell when a person's devices were seen", "user", key, "err", err)
			g.refuse("consumer", m.Reply, reasonUnavailable, 503, callout.ErrCodeUnavailable, "devices unavailable")
			return
		}
		answer.Devices = devs
	}
	body, _ := json.Marshal(answer)
	g.nc.Publish(m.Reply, body)
	g.forwarded("consumer")
}

// consumerAnswer is the gate's answer to a consumer request.
type consumerAnswer struct {
	Pending    uint64            `json:"num_pending"`
	AckPending uint64            `json:"num_ack_pending"`
	Devices    []wire.DeviceSeen `json:"devices,omitempty"` // asked for with the Kez-Devices header
}

// consumerInfo makes key's consumer if need be and returns its state.
func (g *gate) consumerInfo(ctx context.Context, key kez.PublicKey, ackWait time.Duration) (*jetstream.ConsumerInfo, error) {
	if err := g.ensure(ctx, key, ackWait); err != nil {
		return nil, err
	}
	c, err := g.js.Consumer(ctx, g.stream, callout.ConsumerName(key))
	if err != nil {
		g.ensured.Delete(callout.ConsumerName(key)) // deleted behind the gate's back: make it again next time
		return nil, err
	}
	return c.CachedInfo(), nil
}

// subjectKey returns the key token of kez.v1.<kind>.<key>, a subject
// that names only its sender.
func subjectKey(subject, prefix string) (string, bool) {
	t, ok := strings.CutPrefix(subject, prefix)
	return t, ok && t != "" && strings.IndexByte(t, '.') < 0
}

// takePull takes a token from key's pull bucket.
func (g *gate) takePull(key kez.PublicKey) bool {
	now := g.now()
	allowed := true
	g.users.with(key.String(), now, func(b *userBuckets) {
		if allowed = b.api.take(now, g.lim.APIRate, g.lim.APIBurst, 1); allowed {
			b.pulledAt = now // the device is seen: it pulls, or asks for its consumer
		}
	})
	return allowed
}

// onPull handles kez.v1.pull.<key>: a pull request for the user's own
// consumer, passed on to JetStream (clamped) with the reply
// kez.v1.deliver.<key>.<token>, the user's own deliver subject. It is
// not answered: what the pull delivers is the answer. It crossed from the
// user account as a stream: its reply subject, if any, is not used.
func (g *gate) onPull(m *nats.Msg) {
	t, ok := subjectKey(m.Subject, callout.PullSubjectPrefix)
	now := g.now()
	if !ok || !g.senderKey(t, now) {
		g.drop("pull", reasonForged)
		return
	}
	if g.revoked(t, now) {
		g.drop("pull", reasonRevoked)
		return
	}
	key, _ := kez.ParsePublicKey(t)
	var req wire.PullRequest
	if len(m.Data) > maxPullBody || json.Unmarshal(m.Data, &req) != nil || !deliverToken(req.Deliver) {
		g.drop("pull", reasonBadRequest)
		return
	}
	if !g.takePull(key) {
		g.drop("pull", reasonAPIQuota)
		return
	}
	req.Batch = min(max(req.Batch, 1), maxPullBatch)
	switch {
	case req.NoWait:
		// What is waiting now. With a short expiry the consumer also
		// delivers what the stream stored a moment before but has not
		// signalled to it yet; without one it answers 404 at once.
		req.Expires = min(max(req.Expires, 0), int64(maxNoWaitExpires))
	case req.Expires <= 0 || req.Expires > int64(maxPullExpires):
		req.Expires = int64(maxPullExpires)
	}
	if req.Heartbeat > 0 {
		req.Heartbeat = max(req.Heartbeat, int64(minPullHeartbeat))
	}
	if req.Heartbeat < 0 || req.Heartbeat > req.Expires/2 {
		req.Heartbeat = 0
	}
	body, _ := json.Marshal(struct {
		Batch     int   `json:"batch"`
		Expires   int64 `json:"expires,omitempty"`
		NoWait    bool  `json:"no_wait,omitempty"`
		Heartbeat int64 `json:"idle_heartbeat,omitempty"`
	}{req.Batch, req.Expires, req.NoWait, req.Heartbeat})
	out := nats.NewMsg("$JS.API.CONSUMER.MSG.NEXT." + g.stream + "." + callout.ConsumerName(key))
	out.Data, out.Reply = body, callout.DeliverSubjectPrefix+key.String()+"."+req.Deliver
	if err := g.nc.PublishMsg(out); err != nil {
		g.drop("pull", reasonUnavailable)
		return
	}
	g.pullsForwarded.Inc()
}

// deliverToken reports whether t may end a deliver subject: 1 to 32
// ASCII letters and digits.
func deliverToken(t string) bool {
	if len(t) == 0 || len(t) > 32 {
		return false
	}
	for _, c := range []byte(t) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}
