package callout

import (
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
)

// heldDenial is a denial the backoff holds before sending.
type heldDenial struct {
	timer *time.Timer
}

// hold sends the signed denial with reason after delay, unless MaxHeld
// denials are held already (then it returns false and sends nothing) or
// the service closes first.
func (s *Service) hold(delay time.Duration, m *nats.Msg, rc *jwt.AuthorizationRequestClaims, serverXKey, reason string) bool {
	if m.Reply == "" {
		return true // nothing to send
	}
	full := func() bool { return s.held == nil || len(s.held) >= s.lim.MaxHeld }
	s.heldMu.Lock()
	f := full()
	s.heldMu.Unlock()
	if f {
		return false
	}
	data := s.response(rc, serverXKey, "", reason)
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if full() {
		return false
	}
	h := &heldDenial{}
	s.heldWG.Add(1)
	h.timer = time.AfterFunc(delay, func() {
		defer s.heldWG.Done()
		s.heldMu.Lock()
		_, ok := s.held[h]
		delete(s.held, h)
		s.heldMu.Unlock()
		if ok {
			s.send(m, data)
		}
	})
	s.held[h] = struct{}{}
	s.delayed.Add(1)
	return true
}

// dropHeld stops every held denial and waits for those being sent.
func (s *Service) dropHeld() {
	s.heldMu.Lock()
	for h := range s.held {
		if h.timer.Stop() {
			s.heldWG.Done()
		}
	}
	s.held = nil
	s.heldMu.Unlock()
	s.heldWG.Wait()
}
