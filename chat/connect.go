package chat

import (
	"context"
	"log/slog"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/natsconn"
	"github.com/nats-io/nats.go"
)

// ConnectTimeout bounds one connection attempt, login included; see
// [natsconn.ConnectTimeout].
const ConnectTimeout = natsconn.ConnectTimeout

var (
	// ErrNotRegistered reports that the NATS server refused the key: it has
	// no registered handle, is suspended, or the server's auth service did
	// not answer (it fails closed). It is [natsconn.ErrNotRegistered].
	ErrNotRegistered = natsconn.ErrNotRegistered
	// ErrUnreachable reports that no NATS server could be reached at the
	// URL. It is [natsconn.ErrUnreachable].
	ErrUnreachable = natsconn.ErrUnreachable
)

// Connect logs in to the NATS server at natsURL as id with
// [natsconn.Connect], naming the connection "kez-chat" and logging
// disconnects and reconnects with slog.Default(). opts are applied after
// these defaults and may override them. A refused login returns an error
// wrapping [ErrNotRegistered], a server that cannot be reached one
// wrapping [ErrUnreachable]. [Open] logs in this way; call Connect for a
// connection of your own.
func Connect(ctx context.Context, natsURL string, id *kez.Identity, opts ...nats.Option) (*nats.Conn, error) {
	all := []nats.Option{nats.Name("kez-chat")}
	if id != nil {
		all = append(all, natsconn.Logger(slog.Default().With("component", "chat", "key", id.PublicKey().String())))
	}
	return natsconn.Connect(ctx, natsURL, id, append(all, opts...)...)
}
