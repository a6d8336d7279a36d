package chat

// Keeping pinned contacts honest: on send and on receive a contact's chain
// is checked against the pin (at most once per RefreshInterval). A chain
// that grew is accepted silently (an encryption key rotation is recorded);
// a handle that names another key, or a chain that forks from or rolls back
// the pinned head, flags the contact.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// refreshContact checks the contact if its last check is older than the
// refresh interval (force ignores the interval). viaHandle also resolves
// the handle (the send path), so a handle that now names another key is
// seen. It returns the contact's flag error if it is or becomes flagged;
// servers that cannot be reached are logged and the pin is used as is.
func (c *Client) refreshContact(ctx context.Context, cs *contactState, viaHandle, force bool) error {
	c.mu.Lock()
	ct := cs.c
	due := force || c.now().Sub(cs.lastCheck) >= c.cfg.RefreshInterval
	if due {
		cs.lastCheck = c.now()
	}
	c.mu.Unlock()
	if err := ct.Err(); err != nil {
		return err
	}
	if !due {
		return nil
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	defer cancel()

	if viaHandle {
		if force {
			if h, err := (handles.Rules{DefaultDomain: c.cfg.Domain, AllowLocal: c.cfg.AllowLocalDomains}).Parse(ct.Handle); err == nil {
				c.resolver.Forget(h)
			}
		}
		res, err := c.resolver.Resolve(ctx, ct.Handle)
		switch {
		case err != nil && caller.Err() != nil:
			return fmt.Errorf("chat: checking %s: %w", ct.Handle, err) // the caller gave up
		case err == nil && res.Key != ct.Key:
			return c.flagKeyChanged(ctx, cs, res.Key)
		case errors.Is(err, handles.ErrUnreachable):
			c.log.Warn("cannot reach the handle's server to check the contact; using the pinned key", "handle", ct.Handle, "err", err)
		case err != nil:
			return fmt.Errorf("chat: %s can no longer be confirmed at its server, so nothing is sent to the pinned key %s: %w", ct.Handle, ct.Key, err)
		}
	}

	pinned, err := c.pinnedState(ctx, cs)
	if err != nil {
		return err
	}
	sc, err := c.sigClient(domainOf(ct.Handle), ct.SigServer)
	var links []*sigchain.Link
	if err == nil {
		links, err = sc.Fetch(ctx, ct.Key, ct.Pin.Seqno-1)
	}
	if errors.Is(err, sigchain.ErrNotFound) {
		err = fmt.Errorf("%w: the sig-server has no chain for %s, the pinned head is seqno %d", sigchain.ErrRollback, ct.Key, ct.Pin.Seqno)
	} else if err == nil {
		err = sigchain.CheckAgainst(ct.Pin, links)
	}
	switch {
	case errors.Is(err, sigchain.ErrFork), errors.Is(err, sigchain.ErrRollback):
		return c.flagChainRewritten(ctx, cs, err)
	case err != nil && caller.Err() != nil:
		return fmt.Errorf("chat: checking %s: %w", ct.Handle, err)
	case err != nil:
		c.log.Warn("cannot check the contact's sigchain; using the pinned keys", "handle", ct.Handle, "err", err)
		return nil
	}
	st, err := pinned.Extend(links, c.verifyOpts()...)
	if err != nil {
		c.log.Warn("the sig-server shows links after the pinned head that do not verify; using the pinned keys", "handle", ct.Handle, "err", err)
		return nil
	}
	return c.updatePin(ctx, cs, st, links)
}

// updatePin records a chain that grew from the pin: new links, head, and the
// encryption key (a rotation is recorded as an event, not flagged).
func (c *Client) updatePin(ctx context.Context, cs *contactState, st *sigchain.State, links []*sigchain.Link) error {
	now := c.now()
	c.mu.Lock()
	ct := cs.c
	c.mu.Unlock()
	var events [][2]string
	if st.EncryptionGeneration() != ct.Generation || !st.EncryptionKey().Equal(ct.EncryptionKey) {
		events = append(events, [2]string{"encryption_key_rotated", fmt.Sprintf("generation %d to %d at chain seqno %d", ct.Generation, st.EncryptionGeneration(), st.Seqno())})
	}
	if st.Handle() != ct.Handle {
		events = append(events, [2]string{"chain_handle_changed", fmt.Sprintf("the chain now claims %q", st.Handle())})
	}
	// The links after the pin as it was read: the transaction runs on the
	// database's writer, which must not read cs.c (guarded by c.mu).
	pinned := ct.Pin.Seqno
	ct.EncryptionKey, ct.Generation, ct.Pin, ct.RefreshedAt = st.EncryptionKey(), st.EncryptionGeneration(), st.Pin(), now
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE contacts SET enc_key = ?, generation = ?, pin_seqno = ?, pin_head = ?, refreshed_at = ? WHERE handle = ? AND key = ?`,
			ct.EncryptionKey.Bytes(), int64(ct.Generation), int64(ct.Pin.Seqno), ct.Pin.Head.String(), now.UnixMilli(), ct.Handle, ct.Key.String()); err != nil {
			return err
		}
		var fresh []*sigchain.Link
		for _, l := range links {
			if l.Seqno() > pinned {
				fresh = append(fresh, l)
			}
		}
		if err := putLinks(tx, ct.Key, fresh, false); err != nil {
			return err
		}
		for _, ev := range events {
			if err := addEvent(tx, ct.Handle, now, ev[0], ev[1]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("chat: saving the contact %s: %w", ct.Handle, err)
	}
	c.mu.Lock()
	if cs.c.Key == ct.Key && cs.c.Flag == FlagNone {
		cs.c.EncryptionKey, cs.c.Generation, cs.c.Pin, cs.c.RefreshedAt = ct.EncryptionKey, ct.Generation, ct.Pin, now
		cs.state = st
	}
	c.mu.Unlock()
	for _, ev := range events {
		c.log.Info("contact "+ev[0], "handle", ct.Handle, "detail", ev[1])
	}
	return nil
}

// flagKeyChanged flags the contact: its handle names key now.
func (c *Client) flagKeyChanged(ctx context.Context, cs *contactState, key kez.PublicKey) error {
	return c.flag(ctx, cs, FlagKeyChanged, key, fmt.Sprintf("the handle now names %s", key))
}

// flagChainRewritten flags the contact: the sig-server contradicts the pin.
func (c *Client) flagChainRewritten(ctx context.Context, cs *contactState, cause error) error {
	return c.flag(ctx, cs, FlagChainRewritten, kez.PublicKey{}, cause.Error())
}

// flag records a flag and returns it as the contact's error. A flag already
// set is kept (the first one seen is what the user must resolve).
func (c *Client) flag(ctx context.Context, cs *contactState, flag ContactFlag, key kez.PublicKey, detail string) error {
	now := c.now()
	c.mu.Lock()
	if cs.c.Flag != FlagNone {
		err := cs.c.Err()
		c.mu.Unlock()
		return err
	}
	ct := cs.c
	c.mu.Unlock()
	ct.Flag, ct.FlagKey, ct.FlagDetail, ct.FlaggedAt = flag, key, detail, now
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE contacts SET flag = ?, flag_detail = ?, flag_key = ?, flagged_at = ? WHERE handle = ? AND key = ? AND flag = ''`,
			string(flag), detail, keyText(key), now.UnixMilli(), ct.Handle, ct.Key.String()); err != nil {
			return err
		}
		return addEvent(tx, ct.Handle, now, "flagged_"+string(flag), detail)
	})
	if err != nil {
		return fmt.Errorf("chat: saving the flag of %s: %w", ct.Handle, err)
	}
	c.mu.Lock()
	if cs.c.Key == ct.Key && cs.c.Flag == FlagNone {
		cs.c.Flag, cs.c.FlagKey, cs.c.FlagDetail, cs.c.FlaggedAt = flag, key, detail, now
	}
	ferr := cs.c.Err()
	c.mu.Unlock()
	c.log.Warn("contact flagged", "handle", ct.Handle, "flag", string(flag), "detail", detail)
	c.stats.flagged.Add(1)
	return ferr
}

// CheckContact checks the contact against its servers now, whatever the
// refresh interval: it resolves the handle, compares the key with the pin
// and the chain with the pinned head. It returns the contact as it stands,
// and its flag error (*KeyChangedError, *ChainRewrittenError) if flagged.
func (c *Client) CheckContact(ctx context.Context, handle string) (*Contact, error) {
	cs, err := c.contact(ctx, handle)
	if err != nil {
		return nil, err
	}
	err = c.refreshContact(ctx, cs, true, true)
	c.mu.Lock()
	ct := cs.c
	c.mu.Unlock()
	return &ct, err
}
