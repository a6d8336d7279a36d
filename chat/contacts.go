package chat

import (
	"context"
	"crypto/ecdh"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// ContactFlag says why a contact is not trusted any more.
type ContactFlag string

// Contact flags.
const (
	FlagNone           ContactFlag = ""                // trusted
	FlagKeyChanged     ContactFlag = "key_changed"     // the handle names another key now
	FlagChainRewritten ContactFlag = "chain_rewritten" // the pinned chain forked or rolled back
)

// Contact is a pinned handle: the key, encryption key and chain head seen
// when the user added it, kept up to date by the client as the chain grows.
type Contact struct {
	Handle        string          // canonical, "bob@kez.lat"
	Key           kez.PublicKey   // the pinned primary key
	EncryptionKey *ecdh.PublicKey // the current X25519 key of the pinned chain
	Generation    uint32          // its generation
	SigServer     string          // the sig-server base URL the chain is fetched from
	Pin           sigchain.Pin    // the pinned chain head
	AddedAt       time.Time
	RefreshedAt   time.Time // the last time the chain was checked
	VerifiedAt    time.Time // when the user confirmed the fingerprint; zero if never

	// Devices are the devices the pinned chain lists, primary first,
	// revoked ones included: a message to the contact is sealed to each
	// current one. A device added or revoked on the chain is recorded as
	// a contact event (device_added, device_revoked), not a flag: the
	// primary key signed it.
	Devices []sigchain.Device

	Flag       ContactFlag   // FlagNone while trusted
	FlagDetail string        // what was seen
	FlagKey    kez.PublicKey // FlagKeyChanged: the key the handle names now
	FlaggedAt  time.Time
}

// Verified reports whether the user confirmed the contact's fingerprint.
func (c *Contact) Verified() bool { return !c.VerifiedAt.IsZero() }

// Fingerprint returns the pinned key's fingerprint, for reading aloud.
func (c *Contact) Fingerprint() string { return c.Key.Fingerprint() }

// Err returns the flag as an error (*KeyChangedError or
// *ChainRewrittenError), or nil for a trusted contact.
func (c *Contact) Err() error {
	switch c.Flag {
	case FlagKeyChanged:
		return &KeyChangedError{Handle: c.Handle, Pinned: c.Key, Current: c.FlagKey, Since: c.FlaggedAt}
	case FlagChainRewritten:
		err := sigchain.ErrFork
		if strings.Contains(c.FlagDetail, "rollback") {
			err = sigchain.ErrRollback
		}
		return &ChainRewrittenError{Handle: c.Handle, Key: c.Key, Pinned: c.Pin, Err: fmt.Errorf("%w (%s)", err, c.FlagDetail), Since: c.FlaggedAt}
	case FlagNone:
		return nil
	default:
		return fmt.Errorf("chat: the contact %s is flagged %q", c.Handle, c.Flag)
	}
}

// contactState is a contact with its verified chain state and when its
// chain was last checked, cached in memory.
type contactState struct {
	c         Contact
	state     *sigchain.State // rebuilt from chain_links on first use
	lastCheck time.Time       // last refresh attempt (success or not)
	devices   []chainDevice   // of the pinned chain; empty for a contact pinned by an earlier release
}

// setDevices sets cs's devices, and Contact.Devices (c.mu held).
func (cs *contactState) setDevices(devs []chainDevice) {
	cs.devices = devs
	cs.c.Devices = devs
}

// rules are the client's handle rules: its home domain completes bare
// names.
func (c *Client) rules() handles.Rules {
	return handles.Rules{DefaultDomain: c.cc.Domain, AllowLocal: c.cc.AllowLocalDomains}
}

// parseHandle canonicalises handle text with the client's domain rules.
func (c *Client) parseHandle(handle string) (string, error) {
	h, err := c.rules().Parse(handle)
	if err != nil {
		return "", err
	}
	return h.String(), nil
}

// Contact returns the contact with this handle, or an error wrapping
// [ErrNotContact].
func (c *Client) Contact(ctx context.Context, handle string) (*Contact, error) {
	cs, err := c.contact(ctx, handle)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ct := cs.c
	return &ct, nil
}

func (c *Client) contact(_ context.Context, handle string) (*contactState, error) {
	h, err := c.parseHandle(handle)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cs, ok := c.byHandle[h]
	if !ok {
		return nil, &NotContactError{Handle: h}
	}
	return cs, nil
}

// Contacts returns every contact, sorted by handle.
func (c *Client) Contacts(ctx context.Context) ([]*Contact, error) {
	rows, err := c.db.db.QueryContext(ctx, `SELECT handle FROM contacts ORDER BY handle`)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	var hs []string
	for rows.Next() {
		var h string
		if err := rows.Scan(&h); err != nil {
			rows.Close()
			return nil, err
		}
		hs = append(hs, h)
	}
	rows.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Contact, 0, len(hs))
	for _, h := range hs {
		if cs, ok := c.byHandle[h]; ok {
			ct := cs.c
			out = append(out, &ct)
		}
	}
	return out, nil
}

// AddContact resolves handle (asking its registry now, not a cached
// answer), which fetches and verifies the key's whole sigchain, and pins
// the key, the chain head, the encryption key, the handle and the
// sig-server the registry names. It returns the new contact.
//
// Adding a contact that exists re-pins it: this is how the user accepts a
// changed key or a rewritten chain after checking with the person. The
// verified mark survives only when the key stays the same. Held messages
// and requests from the newly pinned key become trusted (and unread).
// AddContact pins whatever key the handle names when it runs:
// [Client.AcceptKey] pins only the key whose safety number was shown.
//
// Errors: those of handles.Resolver.ResolveFresh (handles.ErrNotFound,
// handles.ErrMismatch, handles.ErrUnreachable, *handles.HandleError).
func (c *Client) AddContact(ctx context.Context, handle string) (*Contact, error) {
	return c.addContact(ctx, handle, nil)
}

// addContact is AddContact; with want set (AcceptKey, AcceptRequest), the
// resolution must name that key, compared before anything is stored, else
// nothing is pinned and the error is a *RequestMismatchError.
func (c *Client) addContact(ctx context.Context, handle string, want *kez.PublicKey) (*Contact, error) {
	hh, err := c.rules().Parse(handle)
	if err != nil {
		return nil, err
	}
	h := hh.String()
	// Fresh, not from the resolver's cache: re-adding is how a changed
	// key is accepted, and must pin what the servers say now. The
	// resolution fetched and verified the whole chain; it is pinned as is.
	res, err := c.resolver.ResolveFresh(ctx, hh, nil)
	if err != nil {
		return nil, fmt.Errorf("chat: resolving %s: %w", h, err)
	}
	if want != nil && res.Key != *want {
		return nil, &RequestMismatchError{Handle: h, Requester: *want, Current: res.Key}
	}
	ct, err := c.pinResolved(ctx, hh, res)
	if err != nil {
		return nil, err
	}
	// The user's other devices pin it too (docs/spec/chat.md §8.4).
	c.syncContactOut(ctx, syncContactPinned, ct)
	return ct, nil
}

// pinResolved pins what a fresh resolution of hh verified (AddContact
// after resolving; a sync-contact from another of the user's devices).
func (c *Client) pinResolved(ctx context.Context, hh handles.Handle, res *handles.Resolved) (*Contact, error) {
	h := hh.String()
	st, links, sigBase := res.State, res.Links, res.SigServer
	now := c.now()

	c.mu.Lock()
	old := c.byHandle[h]
	other := c.byKey[res.Key] // the key pinned under another handle (a renamed handle)
	// Copies: a refresh or a flag may change the cached contacts meanwhile.
	var oldC, otherC Contact
	var oldDevs []chainDevice
	if old != nil {
		oldC, oldDevs = old.c, old.devices
	}
	if other != nil {
		otherC = other.c
	}
	c.mu.Unlock()

	devs := chainDevices(st)
	ct := Contact{
		Handle: h, Key: res.Key, EncryptionKey: st.EncryptionKey(), Generation: st.EncryptionGeneration(),
		SigServer: sigBase, Pin: st.Pin(), AddedAt: now, RefreshedAt: now, Devices: devs,
	}
	var events [][2]string
	switch {
	case old == nil:
		events = append(events, [2]string{"added", fmt.Sprintf("key %s, chain seqno %d", res.Key, st.Seqno())})
	case oldC.Key != res.Key:
		ct.AddedAt = oldC.AddedAt
		events = append(events, [2]string{"accepted_new_key", fmt.Sprintf("key %s replaces %s", res.Key, oldC.Key)})
	default:
		ct.AddedAt = oldC.AddedAt
		if err := sigchain.CheckAgainst(oldC.Pin, links); err != nil {
			events = append(events, [2]string{"accepted_rewritten_chain", fmt.Sprintf("pinned seqno %d %s: %v", oldC.Pin.Seqno, oldC.Pin.Head, err)})
		} else {
			ct.VerifiedAt = oldC.VerifiedAt
			if oldC.Flag != FlagNone {
				events = append(events, [2]string{"accepted", fmt.Sprintf("flag %s cleared", oldC.Flag)})
			} else {
				events = append(events, [2]string{"refreshed", fmt.Sprintf("chain seqno %d", st.Seqno())})
			}
			if len(oldDevs) > 0 {
				events = append(events, deviceEvents(oldDevs, devs, st.Seqno())...)
			}
		}
	}
	if other != nil && otherC.Handle != h {
		events = append(events, [2]string{"renamed", fmt.Sprintf("the key was pinned as %s", otherC.Handle)})
		if !otherC.VerifiedAt.IsZero() && ct.VerifiedAt.IsZero() {
			ct.VerifiedAt = otherC.VerifiedAt
		}
	}

	gone := c.revokedOnlyBy(res.Key, devs)
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if old != nil && oldC.Key != res.Key {
			if _, err := tx.Exec(`DELETE FROM chain_links WHERE key = ?`, oldC.Key.String()); err != nil {
				return err
			}
		}
		if other != nil && otherC.Handle != h {
			if _, err := tx.Exec(`DELETE FROM contacts WHERE handle = ?`, otherC.Handle); err != nil {
				return err
			}
		}
		if err := putContact(tx, &ct); err != nil {
			return err
		}
		if err := putLinks(tx, res.Key, links, true); err != nil {
			return err
		}
		if old != nil && oldC.Key != res.Key {
			if _, err := tx.Exec(`DELETE FROM contact_devices WHERE person = ?`, oldC.Key.String()); err != nil {
				return err
			}
		}
		if err := putDevices(tx, res.Key, devs); err != nil {
			return err
		}
		if err := deleteDeviceState(tx, gone); err != nil {
			return err
		}
		for _, ev := range events {
			if err := addEvent(tx, h, now, ev[0], ev[1]); err != nil {
				return err
			}
		}
		// Release what the newly pinned key sent while it was not trusted
		// (but for groups the user has not accepted: docs/spec/chat.md §10.9).
		_, err := tx.Exec(`UPDATE messages SET trust = ?, peer_handle = ?, read = 0 WHERE incoming = 1 AND from_key = ? AND trust IN (?, ?) AND `+notInvitation,
			string(TrustTrusted), h, res.Key.String(), string(TrustHeld), string(TrustRequest))
		if err != nil {
			return err
		}
		if _, err = tx.Exec(`UPDATE messages SET peer_handle = ? WHERE peer_key = ?`, h, res.Key.String()); err != nil {
			return err
		}
		// Another key's requests confirmed under h before h named this
		// key: that confirmation is stale (forgetStaleRequesters).
		_, err = tx.Exec(`UPDATE messages SET peer_handle = '' WHERE incoming = 1 AND trust = ? AND peer_handle = ? AND from_key != ?`,
			string(TrustRequest), h, res.Key.String())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("chat: saving the contact %s: %w", h, err)
	}
	c.mu.Lock()
	if old != nil {
		delete(c.byKey, oldC.Key)
		c.unindexDevices(old)
	}
	if other != nil {
		delete(c.byHandle, otherC.Handle)
		c.unindexDevices(other)
	}
	cs := &contactState{c: ct, state: st, lastCheck: now}
	cs.setDevices(devs)
	c.byHandle[h], c.byKey[res.Key] = cs, cs
	c.forgetStaleRequesters(h, res.Key)
	c.indexDevices(cs, nil)
	c.mu.Unlock()
	for _, ev := range events {
		c.log.Info("contact "+strings.ReplaceAll(ev[0], "_", " "), "handle", h, "detail", ev[1])
	}
	c.tellDevices(h, res.Key, now, events)
	// Their messages that could not be decrypted before (no session): a
	// new session with each of their devices, so they send them again.
	for _, d := range currentDevices(devs, res.Key) {
		c.resetIfDue(ctx, d)
	}
	// Their prekey, kept, so that a first message can start a session
	// while their sig-server is unreachable (best effort: a send fetches
	// it again anyway).
	if ok, err := c.db.hasSession(ctx, res.Key); err == nil && !ok {
		c.fetchPrekey(ctx, contactTarget(&ct)) // kept if there is one; "none" is not remembered here
	}
	out := ct
	return &out, nil
}

// VerifyContact marks the contact verified when digits, as the person
// read them out, are either their pinned key's fingerprint (30 digits) or
// the safety number of your key and theirs ([kez.SafetyNumber], 60 digits,
// which they see with your key and theirs); only digits count. Otherwise
// it returns an error wrapping [ErrFingerprintMismatch] and changes
// nothing; the error never carries the expected digits, so they cannot be
// copied from it. A flagged contact cannot be verified: accept it first.
func (c *Client) VerifyContact(ctx context.Context, handle, digits string) (*Contact, error) {
	cs, err := c.contact(ctx, handle)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	ct := cs.c
	c.mu.Unlock()
	if err := ct.Err(); err != nil {
		return nil, err
	}
	got := onlyDigits(digits)
	var what string
	switch {
	case len(got) == 60 && got == onlyDigits(kez.SafetyNumber(c.id.PublicKey(), ct.Key)):
		what = "safety number"
	case len(got) == 30 && got == onlyDigits(ct.Key.Fingerprint()):
		what = "fingerprint"
	default:
		return nil, fmt.Errorf("%w (%s)", ErrFingerprintMismatch, ct.Handle)
	}
	out, err := c.markVerified(ctx, cs, ct, what+" of key "+ct.Key.String())
	if err != nil {
		return nil, err
	}
	c.syncContactOut(ctx, syncContactVerified, out)
	return out, nil
}

// markVerified records that the contact ct (cs's) was verified.
func (c *Client) markVerified(ctx context.Context, cs *contactState, ct Contact, detail string) (*Contact, error) {
	now := c.now()
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE contacts SET verified_at = ? WHERE handle = ? AND key = ?`, now.UnixMilli(), ct.Handle, ct.Key.String()); err != nil {
			return err
		}
		return addEvent(tx, ct.Handle, now, "verified", detail)
	})
	if err != nil {
		return nil, fmt.Errorf("chat: saving the contact %s: %w", ct.Handle, err)
	}
	c.mu.Lock()
	if cs.c.Key == ct.Key {
		cs.c.VerifiedAt = now
	}
	ct = cs.c
	c.mu.Unlock()
	return &ct, nil
}

// ContactEvent is one recorded change of a contact's pin.
type ContactEvent struct {
	At     time.Time
	Event  string // added, refreshed, encryption_key_rotated, flagged_key_changed, flagged_chain_rewritten, accepted…, verified
	Detail string
}

// ContactEvents returns what happened to the contact's pin, oldest first.
func (c *Client) ContactEvents(ctx context.Context, handle string) ([]ContactEvent, error) {
	h, err := c.parseHandle(handle)
	if err != nil {
		return nil, err
	}
	rows, err := c.db.db.QueryContext(ctx, `SELECT at, event, detail FROM contact_events WHERE handle = ? ORDER BY at, rowid`, h)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []ContactEvent
	for rows.Next() {
		var at int64
		var ev ContactEvent
		if err := rows.Scan(&at, &ev.Event, &ev.Detail); err != nil {
			return nil, err
		}
		ev.At = time.UnixMilli(at)
		out = append(out, ev)
	}
	return out, rows.Err()
}

// sigClient returns a client of the sig-server at base, which an answer
// about a handle of domain named: the user's own, or one whose HTTP client
// follows the resolver's rules for that domain (handles.Resolver.ClientFor:
// a stranger's domain gets public https only).
func (c *Client) sigClient(domain, base string) (*sigchain.Client, error) {
	if base == "" || base == c.cc.SigServerURL {
		return c.sig, nil
	}
	hc, err := c.resolver.ClientFor(domain, base)
	if err != nil {
		return nil, err
	}
	return &sigchain.Client{BaseURL: base, HTTPClient: hc, VerifyOptions: c.verifyOpts(), Log: c.cc.Log}, nil
}

// domainOf returns the domain of a canonical handle ("bob@kez.lat").
func domainOf(handle string) string {
	_, d, _ := strings.Cut(handle, "@")
	return d
}

func (c *Client) verifyOpts() []sigchain.VerifyOption {
	return []sigchain.VerifyOption{sigchain.WithClock(c.now)}
}

func putContact(tx *sql.Tx, ct *Contact) error {
	_, err := tx.Exec(`INSERT INTO contacts (handle, key, enc_key, generation, sig_server, pin_seqno, pin_head, added_at, refreshed_at, verified_at, flag, flag_detail, flag_key, flagged_at)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (handle) DO UPDATE SET key = excluded.key, enc_key = excluded.enc_key, generation = excluded.generation,
			sig_server = excluded.sig_server, pin_seqno = excluded.pin_seqno, pin_head = excluded.pin_head,
			added_at = excluded.added_at, refreshed_at = excluded.refreshed_at, verified_at = excluded.verified_at,
			flag = excluded.flag, flag_detail = excluded.flag_detail, flag_key = excluded.flag_key, flagged_at = excluded.flagged_at`,
		ct.Handle, ct.Key.String(), ct.EncryptionKey.Bytes(), int64(ct.Generation), ct.SigServer, int64(ct.Pin.Seqno), ct.Pin.Head.String(),
		ct.AddedAt.UnixMilli(), ct.RefreshedAt.UnixMilli(), nullMillis(ct.VerifiedAt),
		string(ct.Flag), ct.FlagDetail, keyText(ct.FlagKey), nullMillis(ct.FlaggedAt))
	return err
}

func keyText(k kez.PublicKey) string {
	if k.IsZero() {
		return ""
	}
	return k.String()
}

// putLinks stores links of key's chain; replace drops the stored ones first.
func putLinks(tx *sql.Tx, key kez.PublicKey, links []*sigchain.Link, replace bool) error {
	if replace {
		if _, err := tx.Exec(`DELETE FROM chain_links WHERE key = ?`, key.String()); err != nil {
			return err
		}
	}
	for _, l := range links {
		if _, err := tx.Exec(`INSERT INTO chain_links (key, seqno, link) VALUES (?,?,?) ON CONFLICT (key, seqno) DO UPDATE SET link = excluded.link`,
			key.String(), int64(l.Seqno()), l.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

func addEvent(tx *sql.Tx, handle string, at time.Time, event, detail string) error {
	_, err := tx.Exec(`INSERT INTO contact_events (handle, at, event, detail) VALUES (?,?,?,?)`, handle, at.UnixMilli(), event, detail)
	return err
}

// loadContacts reads every contact into the cache.
func (c *Client) loadContacts(ctx context.Context) error {
	devices, err := c.db.loadDevices(ctx)
	if err != nil {
		return err
	}
	rows, err := c.db.db.QueryContext(ctx, `SELECT handle, key, enc_key, generation, sig_server, pin_seqno, pin_head, added_at, refreshed_at, verified_at, flag, flag_detail, flag_key, flagged_at FROM contacts`)
	if err != nil {
		return fmt.Errorf("chat: reading contacts: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			ct                         Contact
			key, head, flag, flagKey   string
			enc                        []byte
			gen, seqno, added, refresh int64
			verified, flagged          sql.NullInt64
		)
		if err := rows.Scan(&ct.Handle, &key, &enc, &gen, &ct.SigServer, &seqno, &head, &added, &refresh, &verified, &flag, &ct.FlagDetail, &flagKey, &flagged); err != nil {
			return fmt.Errorf("chat: reading contacts: %w", err)
		}
		if ct.Key, err = kez.ParsePublicKey(key); err != nil {
			return fmt.Errorf("chat: contact %s: %w", ct.Handle, err)
		}
		if ct.EncryptionKey, err = ecdh.X25519().NewPublicKey(enc); err != nil {
			return fmt.Errorf("chat: contact %s: encryption key: %w", ct.Handle, err)
		}
		hc, err := cid.Decode(head)
		if err != nil {
			return fmt.Errorf("chat: contact %s: pinned head: %w", ct.Handle, err)
		}
		if flagKey != "" {
			if ct.FlagKey, err = kez.ParsePublicKey(flagKey); err != nil {
				return fmt.Errorf("chat: contact %s: %w", ct.Handle, err)
			}
		}
		ct.Generation = uint32(gen)
		ct.Pin = sigchain.Pin{Key: ct.Key, Seqno: uint64(seqno), Head: hc}
		ct.AddedAt, ct.RefreshedAt = time.UnixMilli(added), time.UnixMilli(refresh)
		if verified.Valid {
			ct.VerifiedAt = time.UnixMilli(verified.Int64)
		}
		if flagged.Valid {
			ct.FlaggedAt = time.UnixMilli(flagged.Int64)
		}
		ct.Flag = ContactFlag(flag)
		cs := &contactState{c: ct}
		cs.setDevices(devices[ct.Key])
		c.byHandle[ct.Handle], c.byKey[ct.Key] = cs, cs
		c.indexDevices(cs, nil)
	}
	return rows.Err()
}

// pinnedState rebuilds the verified state of the contact's pinned chain from
// the stored links (once; it is cached).
func (c *Client) pinnedState(ctx context.Context, cs *contactState) (*sigchain.State, error) {
	c.mu.Lock()
	st, key := cs.state, cs.c.Key
	c.mu.Unlock()
	if st != nil {
		return st, nil
	}
	st, err := c.db.storedChain(ctx, `SELECT link FROM chain_links WHERE key = ? ORDER BY seqno`, key.String())
	if err != nil {
		return nil, fmt.Errorf("chat: the stored chain of %s: %w", key, err)
	}
	if st == nil {
		return nil, fmt.Errorf("chat: no chain of %s is stored", key)
	}
	c.mu.Lock()
	if cs.c.Key == key && cs.state == nil {
		cs.state = st
	}
	c.mu.Unlock()
	return st, nil
}

// onlyDigits drops everything but ASCII digits from s.
func onlyDigits(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, s)
}
