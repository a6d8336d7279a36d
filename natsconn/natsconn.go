// Package natsconn logs a KEZ user in to their operator's NATS. The user's
// primary key is their NATS credential: the user nkey is the key's public
// half, the server's nonce is signed with [kez.Identity.SignNATSNonce], and
// there is no password or token. The operator's auth callout (package
// callout) admits registered keys only.
//
//	nc, err := natsconn.Connect(ctx, os.Getenv("NATS_URL"), id)
//	switch {
//	case errors.Is(err, natsconn.ErrNotRegistered): // not registered, or the chat-server is down
//	case errors.Is(err, natsconn.ErrUnreachable): // is NATS running?
//	}
//
// Packages chat and files log in with it; most programs open those
// (chat.Open, files.Open) and never call it. It does not subscribe or
// publish anything itself.
package natsconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
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
	ErrNotRegistered = errors.New("natsconn: the NATS server refused this key")
	// ErrUnreachable reports that no NATS server could be reached at the URL.
	ErrUnreachable = errors.New("natsconn: cannot reach the NATS server")
)

// InboxPrefix returns the reply-subject prefix of key, "_INBOX.<key>": the
// only one the auth callout lets the user subscribe to for replies.
func InboxPrefix(key kez.PublicKey) string { return wire.ReplyInbox(key.String()) }

// Connect logs in to the NATS server at url (comma-separated URLs are tried
// in turn) as id: the user nkey is id's public key and the server's nonce
// is signed with [kez.Identity.SignNATSNonce]. Replies use the private
// prefix [InboxPrefix]. Each attempt may take [ConnectTimeout]; once
// connected the client reconnects forever, also after refused logins (the
// auth callout may be restarting), waiting between rounds of attempts as
// [DefaultBackoff] says, and logs disconnects and reconnects with
// slog.Default() (see [Logger]). opts are applied after these defaults and
// may override them (e.g. nats.Name, [Logger]); an option that sets
// nats.ReconnectWait to other than its default, or nats.CustomReconnectDelay,
// replaces the backoff.
//
// A refused login returns an error wrapping [ErrNotRegistered], a server
// that cannot be reached one wrapping [ErrUnreachable]; both also wrap the
// nats.go error. If ctx ends first, Connect returns ctx's error and closes
// the connection should it still succeed. Connect is safe for concurrent
// use.
func Connect(ctx context.Context, url string, id *kez.Identity, opts ...nats.Option) (*nats.Conn, error) {
	if id == nil {
		return nil, errors.New("natsconn: Connect needs an identity")
	}
	key := id.PublicKey()
	all := []nats.Option{
		nats.Nkey(key.String(), id.SignNATSNonce),
		nats.CustomInboxPrefix(InboxPrefix(key)),
		nats.Name("kez"),
		nats.Timeout(ConnectTimeout),
		nats.MaxReconnects(-1),
		// By default nats.go gives up for good after a server refused two
		// logins in a row. A refusal while reconnecting means the auth
		// callout is down or cannot read its registry for a moment (a
		// chat-server restart, a JetStream leader election), so keep
		// trying; the first login still fails at once if refused.
		nats.IgnoreAuthErrorAbort(),
		Logger(slog.Default().With("key", key.String())),
	}
	all = append(all, opts...)
	all = append(all, defaultBackoff)

	type result struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		nc, err := nats.Connect(url, all...)
		done <- result{nc, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, classify(url, r.err)
		}
		return r.nc, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.nc != nil {
				r.nc.Close()
			}
		}()
		return nil, fmt.Errorf("natsconn: connecting to NATS at %s: %w", RedactURL(url), ctx.Err())
	}
}

// defaultBackoff, the last option of [Connect], sets [DefaultBackoff]
// unless an earlier option chose the reconnect timing.
func defaultBackoff(o *nats.Options) error {
	if o.CustomReconnectDelayCB == nil && o.ReconnectWait == nats.DefaultReconnectWait {
		o.CustomReconnectDelayCB = DefaultBackoff.Delay
	}
	return nil
}

// Logger returns a nats.Option that logs each disconnect (at Warn) and
// reconnect (at Info) to log. It replaces the connection's disconnect and
// reconnect handlers; a later nats.DisconnectErrHandler or
// nats.ReconnectHandler replaces it in turn.
func Logger(log *slog.Logger) nats.Option {
	return func(o *nats.Options) error {
		o.DisconnectedErrCB = func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("disconnected from NATS", "err", err)
			}
		}
		o.ReconnectedCB = func(nc *nats.Conn) {
			log.Info("reconnected to NATS", "url", nc.ConnectedUrlRedacted())
		}
		return nil
	}
}

// RedactURL returns a NATS URL (or a comma-separated list of them) with
// any user information (user:password@, token@) replaced by "redacted@",
// for logs and error messages.
func RedactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		scheme, rest, ok := strings.Cut(strings.TrimSpace(p), "://")
		if !ok {
			continue
		}
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			rest = "redacted@" + rest[at+1:]
		}
		parts[i] = scheme + "://" + rest
	}
	return strings.Join(parts, ",")
}

func classify(url string, err error) error {
	var netErr net.Error
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return fmt.Errorf("%w (%w)", ErrNotRegistered, err)
	case errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrTimeout), errors.As(err, &netErr):
		return fmt.Errorf("%w at %s: %w", ErrUnreachable, RedactURL(url), err)
	default:
		return fmt.Errorf("natsconn: connecting to NATS at %s: %w", RedactURL(url), err)
	}
}
