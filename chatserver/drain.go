package chatserver

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/internal/natsdrain"
)

// Drain begins a graceful stop, for a rolling restart of replicas: at once
// [Server.Ready] (and so /readyz) answers [ErrDraining], so that load
// balancers stop sending; the auth callout leaves its queue group, so
// NATS gives new logins to the other replicas, and answers the logins it
// has received; the gate does the same with the users' requests (sends,
// pulls, acknowledgements). The HTTP handler keeps serving: stop the
// HTTP server (http.Server.Shutdown) beside Drain, then call
// [Server.Close].
//
// If ctx ends first, Drain returns an error wrapping ctx's: the logins
// not yet answered are refused by NATS after its auth timeout, and users
// retry the requests the gate did not answer. Drain on a server not
// started, closed, or draining already returns nil at once.
func (s *Server) Drain(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.closed || s.draining {
		s.mu.Unlock()
		return nil
	}
	s.draining = true
	s.mu.Unlock()
	s.log.Info("chat-server draining: no new logins or gate requests; answering those received")
	// The NATS loop (provisioning, the readiness log, the removal of read
	// mail) ends first: after it, nothing subscribes any more.
	s.cancel()
	<-s.done
	<-s.watched
	var errs []error
	if err := s.svc.Drain(ctx); err != nil {
		errs = append(errs, err)
	}
	err := natsdrain.Subs(ctx, s.gate.subs...)
	if err == nil {
		err = lifecycle.Wait(ctx, waitGroupDone(&s.gate.answering))
	}
	if err != nil {
		errs = append(errs, fmt.Errorf("chatserver: draining the gate: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		s.log.Warn("chat-server drained in part", "err", err)
		return err
	}
	s.log.Info("chat-server drained")
	return nil
}

// waitGroupDone returns a channel closed once wg's count is zero.
func waitGroupDone(wg *sync.WaitGroup) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}
