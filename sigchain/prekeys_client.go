package sigchain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

func (c *Client) prekeyURL(key kez.PublicKey) string {
	return c.base() + wire.PrekeysPath + url.PathEscape(key.String())
}

// PublishPrekey sends p, signed by its owner, to the sig-server's prekey
// directory. It returns nil once the server holds it (also when it
// already did), or an error: [ErrStalePrekey] (the server holds a record
// made at the same time or later), [ErrNotFound] (the server has no
// chain for p.Owner: append the eldest link first), [ErrInvalid] (the
// server found the record invalid: expired, made in the future, valid
// longer than [MaxPrekeyLifetime]), [ErrRateLimited],
// [ServerError] (501: the server keeps no prekeys), [ErrUnreachable].
func (c *Client) PublishPrekey(ctx context.Context, p *session.Prekey) error {
	rec, err := p.MarshalBinary()
	if err != nil {
		return fmt.Errorf("sigchain: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.prekeyURL(p.Owner), bytes.NewReader(rec))
	if err != nil {
		return fmt.Errorf("sigchain: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	_, _, err = c.do(req, 4096)
	return err
}

// FetchPrekey fetches key's prekey record and returns it only if it
// verifies for key by the client's clock ([WithClock] among
// VerifyOptions, else time.Now) with [session.Prekey.Verify]: a record
// of another owner, badly signed, expired or made in the future is an
// error matching the session package's ErrPrekeyOwner,
// ErrPrekeySignature, ErrPrekeyExpired or ErrMalformedPrekey. Other
// errors: [ErrNoPrekey] (none published, the key has no chain, or the
// server has no prekey directory),
// [ErrRateLimited], [ServerError], [ErrUnreachable].
func (c *Client) FetchPrekey(ctx context.Context, key kez.PublicKey) (*session.Prekey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.prekeyURL(key), nil)
	if err != nil {
		return nil, fmt.Errorf("sigchain: %w", err)
	}
	body, _, err := c.do(req, MaxPrekeySize)
	if errors.Is(err, ErrNotFound) && !errors.Is(err, ErrNoPrekey) {
		err = fmt.Errorf("%w: %w", ErrNoPrekey, err) // a server without the directory
	}
	if err != nil {
		return nil, err
	}
	p, err := session.ParsePrekey(body)
	if err != nil {
		return nil, fmt.Errorf("sigchain: the sig-server's prekey for %s: %w", key, err)
	}
	if err := p.Verify(key, newConfig(c.VerifyOptions).now()); err != nil {
		return nil, fmt.Errorf("sigchain: the sig-server's prekey for %s: %w", key, err)
	}
	return p, nil
}
