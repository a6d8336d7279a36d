package chat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// ConnectTimeout bounds one connection attempt, login included. It is
// longer than nats-server's default auth timeout (2 s), so a slow auth
// callout answer still arrives.
const ConnectTimeout = 5 * time.Second

var (
	// ErrNotRegistered reports that the NATS server refused the key: it has
	// no registered handle, is suspended, or the server's auth service did
	// not answer (it fails closed). The server does not tell which.
	ErrNotRegistered = errors.New("chat: the NATS server refused this key; register a handle first (kez register NAME), or ask the operator whether the chat server is running")
	// ErrUnreachable reports that no NATS server could be reached at the URL.
	ErrUnreachable = errors.New("chat: cannot reach the NATS server")
)

// Connect logs in to the NATS server at natsURL (comma-separated URLs are
// tried in turn) as id: the user nkey is id's public key and the server's
// nonce is signed with [kez.Identity.SignNATSNonce]. Replies use the
// private prefix _INBOX.<key>, the only one the auth callout lets the user
// subscribe to. Each attempt may take [ConnectTimeout]; once connected the
// client reconnects forever, also after refused logins (the auth callout
// may be restarting), logging disconnects and reconnects with
// slog.Default() unless opts supply their own handlers. opts are applied
// after these defaults and may override them.
//
// A refused login returns an error wrapping [ErrNotRegistered], a server
// that cannot be reached one wrapping [ErrUnreachable]; both also wrap the
// nats.go error. If ctx ends first, Connect returns ctx's error and closes
// the connection should it still succeed.
func Connect(ctx context.Context, natsURL string, id *kez.Identity, opts ...nats.Option) (*nats.Conn, error) {
	if id == nil {
		return nil, errors.New("chat: Connect needs an identity")
	}
	key := id.PublicKey().String()
	log := slog.Default().With("component", "chat", "key", key)
	all := []nats.Option{
		nats.Nkey(key, id.SignNATSNonce),
		nats.CustomInboxPrefix("_INBOX." + key),
		nats.Name("kez-chat"),
		nats.Timeout(ConnectTimeout),
		nats.MaxReconnects(-1),
		// By default nats.go gives up for good after a server refused two
		// logins in a row. A refusal while reconnecting means the auth
		// callout is down or cannot read its registry for a moment (a
		// chat-server restart, a JetStream leader election), so keep
		// trying; the first login still fails at once if refused.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}),
	}
	all = append(all, opts...)

	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(natsURL, all...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, classify(natsURL, r.err)
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("chat: connecting to NATS at %s: %w", natsURL, ctx.Err())
	}
}

func classify(url string, err error) error {
	var netErr net.Error
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return fmt.Errorf("%w (%w)", ErrNotRegistered, err)
	case errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrTimeout), errors.As(err, &netErr):
		return fmt.Errorf("%w at %s; check NATS_URL and that the server is running (%w)", ErrUnreachable, url, err)
	default:
		return fmt.Errorf("chat: connecting to NATS at %s: %w", url, err)
	}
}
