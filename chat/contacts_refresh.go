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
// refresh interval (force ignores the interval). It returns the contact's
// flag error if it is or becomes flagged; servers that cannot be reached
// are logged and the pin is used as is.
//
// viaHandle (the send path) asks the handle's registry now, so that a
// handle that names another key is seen, and fetches what is new after
// the pin from the sig-server the registry names. Otherwise (the receive
// path) the new links come from the contact's stored sig-server, and the
// registry is asked only if that server cannot show the pinned head: it is
// down, or has moved, or shows less. Either way a sig-server that moved is
// followed and remembered, and its chain must still extend the pin.
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
	pinned, err := c.pinnedState(ctx, cs)
	if err != nil {
		return err
	}
	if !viaHandle {
		links, err := c.fetchAfterPin(ctx, ct)
		switch {
		case err == nil:
			st, err := pinned.Extend(links, c.verifyOpts()...)
			if err != nil {
				c.log.Warn("the sig-server shows links after the pinned head that do not verify; using the pinned keys", "handle", ct.Handle, "err", err)
				return nil
			}
			return c.updatePin(ctx, cs, st, links, ct.SigServer)
		case errors.Is(err, sigchain.ErrFork):
			// Links the key signed contradict the pin, whichever server
			// shows them.
			return c.flagChainRewritten(ctx, cs, err)
		}
		c.noteSplit(ctx, err, &ct)
		c.log.Debug("the contact's sig-server cannot show the pinned head; asking the handle's domain where the chain is", "handle", ct.Handle, "sig_server", ct.SigServer, "err", err)
	}
	h, err := c.rules().Parse(ct.Handle)
	if err != nil {
		return fmt.Errorf("chat: the contact %s: %w", ct.Handle, err)
	}
	res, err := c.resolver.ResolveFresh(ctx, h, pinned)
	c.noteSplit(ctx, err, &ct)
	var le *sigchain.LinkError
	switch {
	case err == nil && res.Key != ct.Key:
		return c.flagKeyChanged(ctx, cs, res.Key)
	case err == nil:
		return c.updatePin(ctx, cs, res.State, res.Links, res.SigServer)
	case errors.Is(err, sigchain.ErrFork), errors.Is(err, sigchain.ErrRollback):
		return c.flagChainRewritten(ctx, cs, err)
	case caller.Err() != nil: // the caller gave up
		return fmt.Errorf("chat: checking %s: %w", ct.Handle, err)
	case errors.Is(err, handles.ErrUnreachable):
		c.log.Warn("cannot reach the handle's servers to check the contact; using the pinned keys", "handle", ct.Handle, "err", err)
		return nil
	case errors.As(err, &le):
		c.log.Warn("the handle's sig-server shows links that do not verify; using the pinned keys", "handle", ct.Handle, "err", err)
		return nil
	}
	return fmt.Errorf("chat: %s can no longer be confirmed at its server, so nothing is sent to the pinned key %s: %w", ct.Handle, ct.Key, err)
}

// fetchAfterPin fetches the contact's links from the pinned head on from
// the stored sig-server and checks them against the pin: ErrFork,
// ErrRollback (also for a server without the chain), or the fetch's error.
func (c *Client) fetchAfterPin(ctx context.Context, ct Contact) ([]*sigchain.Link, error) {
	sc, err := c.sigClient(domainOf(ct.Handle), ct.SigServer)
	if err != nil {
		return nil, err
	}
	links, err := sc.Fetch(ctx, ct.Key, ct.Pin.Seqno-1)
	if errors.Is(err, sigchain.ErrNotFound) {
		return nil, fmt.Errorf("%w: the sig-server has no chain for %s, the pinned head is seqno %d", sigchain.ErrRollback, ct.Key, ct.Pin.Seqno)
	}
	if err != nil {
		return nil, err
	}
	if err := sigchain.CheckAgainst(ct.Pin, links); err != nil {
		return nil, err
	}
	return links, nil
}

// updatePin records a chain that grew from the pin: new links, head, and the
// encryption key (a rotation is recorded as an event, not flagged), and
// the sig-server it was fetched from (a move is recorded too).
func (c *Client) updatePin(ctx context.Context, cs *contactState, st *sigchain.State, links []*sigchain.Link, sigServer string) error {
	now := c.now()
	c.mu.Lock()
	ct, oldDevs := cs.c, cs.devices
	c.mu.Unlock()
	devs := chainDevices(st)
	base := oldDevs
	if len(base) == 0 { // pinned by an earlier release: the primary alone
		base = []chainDevice{{Key: ct.Key, Name: "primary", Primary: true, AddedSeqno: 1}}
	}
	events := deviceEvents(base, devs, st.Seqno())
	var gone []kez.PublicKey
	for _, k := range c.revokedOnlyBy(ct.Key, devs) {
		if d, ok := findDevice(oldDevs, k); !ok || !d.Revoked {
			gone = append(gone, k)
		}
	}
	if st.EncryptionGeneration() != ct.Generation || !st.EncryptionKey().Equal(ct.EncryptionKey) {
		events = append(events, [2]string{"encryption_key_rotated", fmt.Sprintf("generation %d to %d at chain seqno %d", ct.Generation, st.EncryptionGeneration(), st.Seqno())})
	}
	if st.Handle() != ct.Handle {
		events = append(events, [2]string{"chain_handle_changed", fmt.Sprintf("the chain now claims %q", st.Handle())})
	}
	if sigServer != "" && sigServer != ct.SigServer {
		events = append(events, [2]string{"sig_server_moved", fmt.Sprintf("from %s to %s", ct.SigServer, sigServer)})
		ct.SigServer = sigServer
	}
	// The links after the pin as it was read: the transaction runs on the
	// database's writer, which must not read cs.c (guarded by c.mu).
	pinSeqno := ct.Pin.Seqno
	ct.EncryptionKey, ct.Generation, ct.Pin, ct.RefreshedAt = st.EncryptionKey(), st.EncryptionGeneration(), st.Pin(), now
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE contacts SET enc_key = ?, generation = ?, pin_seqno = ?, pin_head = ?, refreshed_at = ?, sig_server = ? WHERE handle = ? AND key = ?`,
			ct.EncryptionKey.Bytes(), int64(ct.Generation), int64(ct.Pin.Seqno), ct.Pin.Head.String(), now.UnixMilli(), ct.SigServer, ct.Handle, ct.Key.String()); err != nil {
			return err
		}
		var fresh []*sigchain.Link
		for _, l := range links {
			if l.Seqno() > pinSeqno {
				fresh = append(fresh, l)
			}
		}
		if err := putLinks(tx, ct.Key, fresh, false); err != nil {
			return err
		}
		if err := putDevices(tx, ct.Key, devs); err != nil {
			return err
		}
		// Revoked: nothing is sealed to it any more, and its sessions go.
		if err := deleteDeviceState(tx, gone); err != nil {
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
		cs.c.EncryptionKey, cs.c.Generation, cs.c.Pin, cs.c.RefreshedAt, cs.c.SigServer = ct.EncryptionKey, ct.Generation, ct.Pin, now, ct.SigServer
		cs.state = st
		prev := cs.devices
		cs.setDevices(devs)
		c.indexDevices(cs, prev)
	}
	c.mu.Unlock()
	for _, ev := range events {
		c.log.Info("contact "+ev[0], "handle", ct.Handle, "detail", ev[1])
	}
	c.tellDevices(ct.Handle, ct.Key, now, events)
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
