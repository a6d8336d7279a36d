package callout

import (
	"context"
	"fmt"

	"github.com/kez-lat/kez-chat/internal/natsdrain"
)

// Drain stops the service gracefully, for a rolling restart: it leaves the
// queue group (NATS gives new authorization requests to the other
// replicas), answers every request it has received, those still queued
// included, and then stops as [Service.Close] does. If ctx ends first, the
// requests not yet taken are dropped (NATS denies those logins after its
// auth timeout), the ones in progress finish, and Drain returns ctx's
// error. Denials held by the backoff are dropped either way. Drain does
// not close the connection; after it, Close does nothing.
func (s *Service) Drain(ctx context.Context) error {
	s.mu.Lock()
	sub, stop := s.sub, s.stop
	s.sub, s.closed = nil, true
	s.mu.Unlock()
	if sub == nil {
		return nil
	}
	s.finishing.Store(true)
	err := natsdrain.Subs(ctx, sub)
	if err != nil && ctx.Err() == nil {
		// The connection is gone: nothing more will arrive.
		s.log.Warn("draining the authorization requests", "err", err)
		err = nil
	}
	close(stop)
	workers := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(workers)
	}()
	select {
	case <-workers:
	case <-ctx.Done():
		s.finishing.Store(false)
		<-workers
	}
	s.dropHeld()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err != nil {
		queued := 0
		for _, l := range s.lanes {
			queued += len(l)
		}
		return fmt.Errorf("callout: draining (%d requests left unanswered): %w", queued, err)
	}
	return nil
}

// finish answers what the lanes hold, in lane order, while the service is
// finishing (see [Service.Drain]); a worker calls it once told to stop.
func (s *Service) finish(lanes ...chan *request) {
	for s.finishing.Load() {
		r := next(lanes)
		if r == nil {
			return
		}
		s.process(r)
	}
}

// next takes the first request of the first lane that has one, or returns
// nil when all are empty.
func next(lanes []chan *request) *request {
	for _, l := range lanes {
		select {
		case r := <-l:
			return r
		default:
		}
	}
	return nil
}
