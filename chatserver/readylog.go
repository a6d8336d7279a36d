package chatserver

import (
	"context"
	"errors"
	"time"
)

// How often the server checks its own readiness to log it: often while it
// is not ready, so the reason is in the log within a second of starting
// or of a change, and seldom once it is.
const (
	readyCheckNotReady = 250 * time.Millisecond
	readyCheckReady    = 5 * time.Second
)

// logReadiness logs why the server is not ready (a warning each time the
// reason changes) and when it becomes ready, until ctx ends. It closes
// s.watched when it returns.
func (s *Server) logReadiness(ctx context.Context) {
	defer close(s.watched)
	t := time.NewTimer(readyCheckNotReady)
	defer t.Stop()
	ready, last := false, ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := s.Ready(cctx)
		cancel()
		switch {
		case ctx.Err() != nil, errors.Is(err, ErrClosed):
			return
		case err == nil:
			if !ready {
				s.log.Info("chat-server ready")
			}
			ready, last = true, ""
			t.Reset(readyCheckReady)
		default:
			if err.Error() != last {
				s.log.Warn("chat-server not ready", "reason", err.Error())
			}
			ready, last = false, err.Error()
			t.Reset(readyCheckNotReady)
		}
	}
}
