package chatserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// Revocation (docs/security.md, "Devices"). When the registry stores a
// revoke_device link, the chat-server that stored it
//
//  1. marks the device revoked in its gate, and tells the other
//     chat-servers (kez.v1.revoked), whose gates look it up again;
//  2. deletes the device's consumer and purges its inbox;
//  3. closes the device's connections on every NATS server through the
//     kicker, a system-account login that may only list the user
//     account's connections and kick one ([callout.Keys].Kicker); the
//     client's reconnect is then refused by the callout;
//  4. does 3 again kickAgainAfter later, for a login the callout admitted
//     just before the revocation that had not connected yet.
//
// Sending the revocation link again does it all again.

// kickPageSize is how many of a device's connections the kicker asks
// each server for at a time.
var kickPageSize = 1024

// kickAgainAfter is how long after a revocation its connections are
// looked for a second time: longer than a login takes from the callout's
// registry lookup to the connection's registration (the callout's lookup
// timeout and the server's auth timeout).
const kickAgainAfter = 5 * time.Second

// errNoKicker: the kicker is not logged in (the snippet in nats.conf
// predates it, or NATS is down).
var errNoKicker = errors.New("the kicker is not logged in to NATS (is nats.conf's snippet older than its key? print it again with \"kez-chat-server nats-config\")")

// deviceRevoked is the registry server's hook: it runs after a
// revocation was stored.
func (s *Server) deviceRevoked(ctx context.Context, person, device kez.PublicKey) {
	start := time.Now()
	s.metrics.revocations.Inc()
	s.gate.markRevoked(device, s.Now())
	if nc := s.provConn.Load(); nc != nil {
		m := nats.NewMsg(wire.RevokedSubject)
		m.Data = []byte(device.String())
		m.Header.Set(revokedFromHeader, s.gate.self)
		if err := nc.PublishMsg(m); err != nil {
			s.log.Warn("cannot tell the other chat-servers of a revocation", "device", device, "err", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	log := s.log.With("person", person.String(), "device", device.String())
	if err := s.gate.clearDevice(ctx, device); err != nil {
		log.Warn("cannot clear a revoked device's inbox; sending its revocation again retries", "err", err)
	}
	// The device's reconnect must meet a view that knows the revocation.
	if err := s.SyncRegistry(ctx); err != nil {
		log.Warn("the registry's view did not catch up with a revocation; logins of the device are refused once it does, or once it is stale", "err", err)
	}
	n, err := s.kickDevice(ctx, device)
	if err != nil {
		log.Warn("cannot close a revoked device's connections; they end when their login expires, and the gate refuses them meanwhile", "err", err)
	}
	log.Info("device revoked", "connections_closed", n, "took", time.Since(start))
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		if !lifecycle.Sleep(s.runCtx, kickAgainAfter) {
			return
		}
		ctx, cancel := context.WithTimeout(s.runCtx, 10*time.Second)
		defer cancel()
		if n, err := s.kickDevice(ctx, device); err != nil || n > 0 {
			log.Info("revoked device: second sweep", "connections_closed", n, "err", err)
		}
	}()
}

// revokedFromHeader names, in a revocation notice, the chat-server that
// sent it (a random ID per Start), so that a server does not count its
// own notices, which NATS echoes back to it, as another's. It only sorts
// a metric: nothing else is trusted from it.
const revokedFromHeader = "Kez-Revoked-By"

// connz is the part of a CONNZ answer the kicker reads.
type connz struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Data struct {
		Conns []struct {
			Cid  uint64 `json:"cid"`
			User string `json:"authorized_user"`
		} `json:"connections"`
	} `json:"data"`
	Error *struct {
		Description string `json:"description"`
	} `json:"error"`
}

// kickDevice closes every connection of device on every NATS server and
// returns how many it closed. It asks every server for the user
// account's connections of that user ($SYS.REQ.ACCOUNT.<users>.CONNZ,
// answered by each server) and kicks each one on its server as its answer
// comes ($SYS.REQ.SERVER.<id>.KICK), waiting for answers while they keep
// coming. While a server answers with a full page (a device holding more
// connections than kickPageSize, to outlast the kick), it asks again, up
// to maxKickRounds times.
func (s *Server) kickDevice(ctx context.Context, device kez.PublicKey) (int, error) {
	nc := s.kickConn.Load()
	if nc == nil || !nc.IsConnected() {
		s.metrics.kicks.WithLabelValues(kickUnavailable).Inc()
		return 0, errNoKicker
	}
	kicked := 0
	for range maxKickRounds {
		n, more, err := s.kickRound(ctx, nc, device)
		kicked += n
		if err != nil || !more || n == 0 {
			return kicked, err
		}
	}
	return kicked, fmt.Errorf("%s still holds connections after %d rounds of %d kicks", device, maxKickRounds, kickPageSize)
}

// maxKickRounds bounds the rounds of one kickDevice.
const maxKickRounds = 64

// kickRound is one round of kickDevice: it returns how many connections
// it closed and whether a server listed a full page (there may be more).
func (s *Server) kickRound(ctx context.Context, nc *nats.Conn, device kez.PublicKey) (int, bool, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return 0, false, err
	}
	defer sub.Unsubscribe()
	req, _ := json.Marshal(map[string]any{"user": device.String(), "acc": callout.DefaultUserAccount, "auth": true, "limit": kickPageSize})
	if err := nc.PublishRequest("$SYS.REQ.ACCOUNT."+callout.DefaultUserAccount+".CONNZ", inbox, req); err != nil {
		return 0, false, err
	}
	kicked, answers, more := 0, 0, false
	var errs []error
	wait := 2 * time.Second // for the first answer
	for {
		wctx, cancel := context.WithTimeout(ctx, wait)
		m, err := sub.NextMsgWithContext(wctx)
		cancel()
		if err != nil {
			break
		}
		wait = 250 * time.Millisecond // for the other servers' answers
		answers++
		var a connz
		if err := json.Unmarshal(m.Data, &a); err != nil || a.Error != nil || a.Server.ID == "" {
			errs = append(errs, fmt.Errorf("a connection list that is not one: %.200s", m.Data))
			continue
		}
		if len(a.Data.Conns) >= kickPageSize {
			more = true
		}
		for _, c := range a.Data.Conns {
			if c.User != device.String() {
				continue // not asked for: never kick it
			}
			if err := s.kickConnection(ctx, nc, a.Server.ID, c.Cid); err != nil {
				s.metrics.kicks.WithLabelValues(kickFailed).Inc()
				errs = append(errs, err)
				continue
			}
			s.metrics.kicks.WithLabelValues(kickClosed).Inc()
			kicked++
		}
	}
	if answers == 0 {
		s.metrics.kicks.WithLabelValues(kickUnavailable).Inc()
		errs = append(errs, errors.New("no NATS server answered the connection list request"))
	}
	return kicked, more, errors.Join(errs...)
}

// kick closes connection cid on the server with ID server.
func (s *Server) kickConnection(ctx context.Context, nc *nats.Conn, server string, cid uint64) error {
	body, _ := json.Marshal(map[string]uint64{"cid": cid})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := nc.RequestWithContext(ctx, "$SYS.REQ.SERVER."+server+".KICK", body)
	if err != nil {
		return fmt.Errorf("kicking connection %d on %s: %w", cid, server, err)
	}
	var a struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if json.Unmarshal(m.Data, &a) == nil && a.Error != nil {
		return fmt.Errorf("kicking connection %d on %s: %s", cid, server, a.Error.Description)
	}
	return nil
}

// currentDevices lists person's current devices for the gate's unread
// count: the person's own key first unless revoked, then the others.
func (s *Server) currentDevices(ctx context.Context, person kez.PublicKey) ([]kez.PublicKey, error) {
	store := s.Store()
	if store == nil {
		return nil, errRegistryNotOpen
	}
	ds, err := store.Devices(ctx, person)
	if err != nil {
		return nil, err
	}
	out := []kez.PublicKey{person}
	for _, d := range ds {
		switch {
		case d.Device == person && d.Revoked:
			out = out[1:]
		case d.Device != person && !d.Revoked:
			out = append(out, d.Device)
		}
	}
	return out, nil
}
