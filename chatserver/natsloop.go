package chatserver

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/lifecycle"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Backoff bounds of the retries while NATS is down or refuses a login.
const (
	minRetry = 50 * time.Millisecond
	maxRetry = 5 * time.Second
)

// runNATS is the server's NATS life: log in as the callout service and
// listen, log in as the provisioner, then provision the inbox stream
// whenever asked (first connection, every reconnect, a missing stream
// seen by Ready) until ctx ends.
func (s *Server) runNATS(ctx context.Context) {
	defer close(s.done)

	up := make(chan struct{}, 1)
	svcConn, err := s.dial("callout service", s.keys.ServiceOptions(), up, nil,
		"check that its nats.conf holds the snippet \"kez-chat-server nats-config\" prints for this keys folder, and restart NATS after changing it")
	if err != nil {
		s.log.Error("cannot use the NATS URL; fix it and restart", "nats", natsconn.RedactURL(s.NATSURL), "err", err)
		return
	}
	s.svcConn.Store(svcConn)
	if s.StoreBackend == StoreJetStream && !s.openJetStreamRegistry(ctx, svcConn) {
		return
	}
	for retry := minRetry; ; retry = min(2*retry, maxRetry) {
		if !waitUp(ctx, svcConn, up) {
			return
		}
		err := s.svc.Listen(svcConn)
		if err == nil {
			break
		}
		s.log.Warn("the callout service could not subscribe yet; retrying", "err", err)
		if !lifecycle.Sleep(ctx, retry) {
			return
		}
	}
	s.listening.Store(true)
	s.log.Info("auth callout listening", "subject", callout.AuthSubject, "queue", callout.DefaultQueueGroup)

	provConn, err := s.dial("provisioner", s.keys.ProvisionerOptions(), s.kick, s.kick,
		"the auth callout did not admit it yet (it answers once its own login is back); retrying")
	if err != nil {
		s.log.Error("cannot use the NATS URL; fix it and restart", "nats", natsconn.RedactURL(s.NATSURL), "err", err)
		return
	}
	js, err := jetstream.New(provConn)
	if err != nil {
		s.log.Error("cannot use JetStream", "err", err)
		return
	}
	copiesJS, err := jetstream.New(provConn, jetstream.WithPublishAsyncMaxPending(s.gate.lim.CopiesInFlight), jetstream.WithPublishAsyncTimeout(copyTimeout))
	if err != nil {
		s.log.Error("cannot use JetStream", "err", err)
		return
	}
	s.gate.nc, s.gate.js, s.gate.copiesJS = provConn, js, copiesJS
	for retry := minRetry; ; retry = min(2*retry, maxRetry) {
		if !waitUp(ctx, provConn, nil) {
			return
		}
		err := s.gate.listen()
		if err == nil {
			break
		}
		s.log.Warn("the gate could not subscribe yet; retrying", "err", err)
		if !lifecycle.Sleep(ctx, retry) {
			return
		}
	}
	removing := make(chan struct{})
	go func() {
		defer close(removing)
		s.gate.removeRead(ctx)
	}()
	defer func() { <-removing }()
	s.js.Store(&js)
	s.provConn.Store(provConn)
	if s.keys.Kicker != nil {
		kickConn, err := s.dial("kicker", s.keys.KickerOptions(), nil, nil,
			"revoked devices stay connected until their login expires (the gate refuses them meanwhile): add the kicker to nats.conf by printing the snippet \"kez-chat-server nats-config\" prints again, and restart NATS")
		if err != nil {
			s.log.Error("cannot use the NATS URL; fix it and restart", "nats", natsconn.RedactURL(s.NATSURL), "err", err)
			return
		}
		s.kickConn.Store(kickConn)
	}
	if provConn.IsConnected() {
		s.provision()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		for retry := minRetry; ; retry = min(2*retry, maxRetry) {
			if !waitUp(ctx, provConn, nil) {
				return
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			st, err := callout.ProvisionInbox(pctx, js, s.Inbox)
			cancel()
			if err == nil {
				purges := callout.RemovesReadMail(st.CachedInfo().Config)
				s.gate.purges.Store(purges)
				if !purges && !s.legacyWarned.Swap(true) {
					s.log.Warn("the inbox stream was made by an earlier release and denies purges, so it stays on interest retention, where every acknowledgement costs time in proportion to the users; docs/operators.md tells how to move to a new stream", "stream", s.stream)
				}
				s.log.Info("inbox stream ready", "stream", s.stream)
				break
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("cannot provision the inbox stream yet; retrying", "stream", s.stream, "err", err, "retry_in", retry)
			if !lifecycle.Sleep(ctx, retry) {
				return
			}
		}
	}
}

// dial connects with the given login options plus the server's: retry
// forever, including after refused logins (the callout may be restarting).
// connected (may be nil) is signalled on the first connection, reconnected
// (may be nil) on every reconnection. refused is the advice logged, once
// per outage, when NATS refuses the login.
func (s *Server) dial(who string, login []nats.Option, connected, reconnected chan struct{}, refused string) (*nats.Conn, error) {
	log := s.log.With("nats_login", who)
	var warned atomic.Bool // one warning per outage, not one per retry
	authErr := func(err error) {
		if !warned.Swap(true) {
			log.Warn("NATS refused the login; "+refused, "err", err)
		}
	}
	opts := append([]nats.Option{
		nats.Timeout(5 * time.Second), // longer than the server's auth timeout
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.IgnoreAuthErrorAbort(),
		nats.ConnectHandler(func(nc *nats.Conn) {
			log.Info("connected to NATS", "url", nc.ConnectedUrlRedacted())
			warned.Store(false)
			signal(connected)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
			warned.Store(false)
			signal(connected)
			signal(reconnected)
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		// The first failure of the first connection comes here…
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) {
			if errors.Is(err, nats.ErrAuthorization) {
				authErr(err)
				return
			}
			log.Debug("cannot reach NATS yet", "err", err)
		}),
		// … refused logins after a connection was up, and other errors here.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrAuthorization) {
				authErr(err)
				return
			}
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Warn("NATS error", "err", err, "subject", subject)
		}),
	}, login...)
	opts = append(opts, s.NATSOptions...)
	nc, err := nats.Connect(s.NATSURL, opts...)
	if err != nil {
		return nil, err
	}
	if nc.IsConnected() {
		signal(connected)
	}
	return nc, nil
}

func signal(ch chan struct{}) {
	if ch == nil {
		return
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// waitUp waits until nc is connected (up, if not nil, is signalled on
// each connection; without it the connection is polled) or ctx ends.
func waitUp(ctx context.Context, nc *nats.Conn, up <-chan struct{}) bool {
	for retry := minRetry; !nc.IsConnected(); retry = min(2*retry, 500*time.Millisecond) {
		var tick <-chan time.Time
		if up == nil {
			tick = time.After(retry)
		}
		select {
		case <-ctx.Done():
			return false
		case <-up:
		case <-tick:
		}
	}
	return ctx.Err() == nil
}
