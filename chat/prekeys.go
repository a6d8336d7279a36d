package chat

// This device's prekeys (docs/spec/session.md): made at random, kept in
// chat.db only, published signed on the user's sig-server, rotated and
// deleted by the policy of session.Ring. A peer starts a session by
// encapsulating to the published one; this client opens that handshake
// with the private half, which it keeps until the grace period after its
// expiry is over.

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
	"github.com/kez-lat/kez-chat/sigchain"
)

// prekeyCheckInterval is how often a running client applies the rotation
// policy (a new prekey once the newest is a week old, by default).
const prekeyCheckInterval = time.Hour

// metaPrekeyPublished names the meta row holding the ID of the prekey last
// published.
const metaPrekeyPublished = "prekey_published"

// prekey returns the private prekey with this ID from chat.db, read in tx
// (another process sharing the state folder may have made it): false if
// there is none, an error if the database could not be read (the batch
// is then tried again, rather than the handshake taken for one to an
// unknown prekey).
func (s *store) prekey(tx *sql.Tx, id uint32) (*session.PrekeyPrivate, bool, error) {
	var b []byte
	err := tx.QueryRow(`SELECT private FROM prekeys WHERE id = ?`, int64(id)).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("chat: database: %w", err)
	}
	k, err := session.ParsePrekeyPrivate(b)
	if err != nil || k.Public.ID != id {
		return nil, false, nil
	}
	return k, true, nil
}

// loadPrekeys returns every stored private prekey, read in tx.
func (s *store) loadPrekeys(tx *sql.Tx) ([]*session.PrekeyPrivate, error) {
	rows, err := tx.Query(`SELECT id, private FROM prekeys ORDER BY created`)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []*session.PrekeyPrivate
	for rows.Next() {
		var id int64
		var b []byte
		if err := rows.Scan(&id, &b); err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		k, err := session.ParsePrekeyPrivate(b)
		if err != nil {
			return nil, fmt.Errorf("chat: database: prekey %d: %w", id, err)
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// rotatePrekeys applies the ring's policy in one transaction (so two
// processes sharing the state folder never both make a prekey): it makes
// the first prekey, or a new one when due, stores it and deletes the
// private keys past their grace period. Then it publishes the current
// prekey on the user's sig-server unless that was done already.
func (c *Client) rotatePrekeys(ctx context.Context) error {
	var current *session.PrekeyPrivate
	var created bool
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		keys, err := c.db.loadPrekeys(tx)
		if err != nil {
			return err
		}
		ring := &session.Ring{}
		if err := ring.Load(keys...); err != nil {
			return fmt.Errorf("chat: database: the stored prekeys: %w", err)
		}
		made, deleted, err := ring.Rotate(rand.Reader, c.dev, c.now())
		if err != nil {
			return fmt.Errorf("chat: rotating the prekeys: %w", err)
		}
		if made != nil {
			b, err := made.MarshalBinary()
			if err != nil {
				return err
			}
			p := &made.Public
			if _, err := tx.Exec(`INSERT INTO prekeys (id, private, created, expires) VALUES (?, ?, ?, ?)`,
				int64(p.ID), b, p.Created.UnixMilli(), p.Expires.UnixMilli()); err != nil {
				return fmt.Errorf("chat: storing a prekey: %w", err)
			}
		}
		for _, id := range deleted {
			if _, err := tx.Exec(`DELETE FROM prekeys WHERE id = ?`, int64(id)); err != nil {
				return fmt.Errorf("chat: deleting prekey %d: %w", id, err)
			}
		}
		current, created = ring.Current(), made != nil
		return nil
	})
	if err != nil {
		return err
	}
	if current == nil {
		return errors.New("chat: the prekey ring holds no current prekey")
	}
	published, err := c.db.getMeta(ctx, metaPrekeyPublished)
	if err != nil {
		return err
	}
	id := strconv.FormatUint(uint64(current.Public.ID), 10)
	if !created && published == id {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	err = c.sig.PublishPrekey(pctx, &current.Public)
	cancel()
	// Stale: the sig-server holds this prekey already (another process
	// sharing the state folder published it), or a newer one.
	if err != nil && !errors.Is(err, sigchain.ErrStalePrekey) {
		return fmt.Errorf("chat: publishing your prekey: %w", err)
	}
	return c.db.setMeta(ctx, metaPrekeyPublished, id)
}

// prekeyLoop applies the rotation policy every prekeyCheckInterval until
// ctx ends or the client is shutting down.
func (c *Client) prekeyLoop(ctx context.Context) {
	t := time.NewTicker(prekeyCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.bg.Stopped():
			return
		case <-t.C:
			if err := c.rotatePrekeys(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("rotating your prekey failed; trying again later", "err", err)
			}
		}
	}
}

// peerPrekey returns the last prekey record fetched for peer, verified
// again at now; nil if there is none or it no longer verifies (expired).
func (s *store) peerPrekey(ctx context.Context, peer kez.PublicKey, now time.Time) (*session.Prekey, error) {
	var rec []byte
	err := s.db.QueryRowContext(ctx, `SELECT record FROM peer_prekeys WHERE peer = ?`, peer.String()).Scan(&rec)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	pk, err := session.ParsePrekey(rec)
	if err != nil || pk.Verify(peer, now) != nil {
		return nil, nil
	}
	return pk, nil
}

// savePeerPrekey keeps pk, fetched and verified at now, as its owner's
// last prekey record.
func (s *store) savePeerPrekey(ctx context.Context, pk *session.Prekey, now time.Time) error {
	rec, err := pk.MarshalBinary()
	if err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO peer_prekeys (peer, record, fetched_at) VALUES (?, ?, ?)
			ON CONFLICT (peer) DO UPDATE SET record = excluded.record, fetched_at = excluded.fetched_at`,
			pk.Owner.String(), rec, now.UnixMilli())
		return err
	})
}
