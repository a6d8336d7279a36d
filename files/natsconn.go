package files

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
)

// natsConnectTimeout is longer than nats-server's default auth timeout
// (2 s), so a slow auth callout answer still arrives.
const natsConnectTimeout = 5 * time.Second

// connectNATS logs in to NATS as id, the way chat.Connect does (the user
// nkey is the identity's key, the nonce signed with SignNATSNonce, replies
// under the private prefix _INBOX.<key>, the only one the auth callout lets
// the user subscribe to). The files package does not import chat, so it
// repeats these few lines.
func connectNATS(url string, id *kez.Identity, log *slog.Logger, extra []nats.Option) (*nats.Conn, error) {
	key := id.PublicKey().String()
	opts := []nats.Option{
		nats.Name("kez files " + key),
		nats.Nkey(key, id.SignNATSNonce),
		nats.CustomInboxPrefix("_INBOX." + key),
		nats.Timeout(natsConnectTimeout),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("files: disconnected from NATS; reconnecting", "err", err)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { log.Info("files: reconnected to NATS") }),
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired):
		return nil, fmt.Errorf("files: the NATS server refused this key; register a handle first (kez register NAME), or ask the operator whether the chat server is running: %w", err)
	case err != nil:
		return nil, fmt.Errorf("files: cannot reach the NATS server at %s: %w", url, err)
	}
	return nc, nil
}
