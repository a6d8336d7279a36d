package chat

// Group invitations (docs/spec/chat.md §10.9). Anyone may create a group,
// add anyone and send a group-update: being added is not consent. A group
// the user was added to by someone who is not an accepted contact is
// pinned as an invitation: its messages are requests (under the request
// caps, with the invitation itself counted as one request of the person
// who added the user), the user sends nothing to it, and AcceptGroup makes
// it a group the user is in; LeaveGroup declines it.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
)

// ErrGroupInvitation reports a group the user was invited to and has not
// accepted: nothing is sent to it or changed in it until AcceptGroup
// (LeaveGroup declines it).
var ErrGroupInvitation = errors.New("chat: the group is an invitation not accepted yet")

// errInvitationOverCap reports an invitation, or links of one, that would
// go over the caps on message requests.
var errInvitationOverCap = errors.New("chat: a group invitation over the caps on message requests")

// notInvitation is an SQL condition on messages: not a message of a group
// that is an invitation (whose requests stay requests until the group is
// accepted, whoever their sender becomes).
const notInvitation = `grp NOT IN (SELECT name FROM groups WHERE invited_by != '')`

// invitation returns who invited the user to gs, or the zero key for a
// group the user is in.
func (gs *groupState) invitation() kez.PublicKey {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.invitedBy
}

// mustBeAccepted returns ErrGroupInvitation for an invitation.
func (gs *groupState) mustBeAccepted() error {
	if by := gs.invitation(); !by.IsZero() {
		return fmt.Errorf("%w: %s, from %s", ErrGroupInvitation, gs.name, by)
	}
	return nil
}

// drop forgets the groups in the index (each only if it is the one
// indexed under its name).
func (g *groupsIndex) drop(gss ...*groupState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, gs := range gss {
		if gs != nil && g.byName[gs.name] == gs {
			delete(g.byName, gs.name)
			delete(g.byID, gs.gid)
		}
	}
}

// inviterOf returns who invited the user to the group st: the zero key if
// the user joins at once (own: a group-update from one of the user's own
// devices; or the user, or a contact not flagged, added the user), else
// the by of the link that made the user's current membership. links are
// the chain's links from seqno first on, and must hold that link.
func (c *Client) inviterOf(st *group.State, links [][]byte, first uint64, own bool) (kez.PublicKey, error) {
	if own {
		return kez.PublicKey{}, nil
	}
	m, ok := st.Member(c.me)
	if !ok || m.Since < first || m.Since-first >= uint64(len(links)) {
		return kez.PublicKey{}, fmt.Errorf("%w: %s", ErrNotGroupMember, st.Name())
	}
	l, err := group.ParseLink(links[m.Since-first])
	if err != nil {
		return kez.PublicKey{}, err
	}
	if by := l.By(); !c.trustsAdder(by) {
		return by, nil
	}
	return kez.PublicKey{}, nil
}

// trustsAdder reports whether a group person added the user to is joined
// at once: person is the user, or a contact that is not flagged.
func (c *Client) trustsAdder(person kez.PublicKey) bool {
	if person == c.me {
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.byKey[person]
	return cs != nil && cs.c.Flag == FlagNone
}

// linkBytes is the size of links.
func linkBytes(links [][]byte) int64 {
	var n int64
	for _, l := range links {
		n += int64(len(l))
	}
	return n
}

// invitationRoom checks in tx that an invitation from inviter (n: 1 for a
// new one, 0 for links added to one pinned) with these links fits under
// the request caps (errInvitationOverCap).
func (c *Client) invitationRoom(tx *sql.Tx, inviter kez.PublicKey, n int64, links [][]byte) error {
	over, err := c.newRequestQuota(tx).room(inviter, n, linkBytes(links))
	if err != nil {
		return err
	}
	if over != "" {
		c.stats.requestsDropped.Add(1)
		return fmt.Errorf("%w (%s): from %s", errInvitationOverCap, over, inviter)
	}
	return nil
}

// forgetTx deletes, in tx, a pinned group and all this client keeps for
// it but its messages: an invitation declined, removed or deleted.
func forgetTx(tx *sql.Tx, name string, gid [32]byte) error {
	for _, q := range []struct {
		sql string
		arg any
	}{
		{`DELETE FROM groups WHERE name = ?`, name}, {`DELETE FROM group_links WHERE name = ?`, name},
		{`DELETE FROM group_events WHERE name = ?`, name}, {`DELETE FROM group_outbox WHERE name = ?`, name},
		{`DELETE FROM group_skeys WHERE gid = ?`, gid[:]}, {`DELETE FROM group_skey_sent WHERE gid = ?`, gid[:]},
		{`DELETE FROM group_rkeys WHERE gid = ?`, gid[:]}, {`DELETE FROM group_held WHERE gid = ?`, gid[:]},
	} {
		if _, err := tx.Exec(q.sql, q.arg); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
	}
	return nil
}

// forgetInvitationsTx forgets, in tx, the invitations from these keys
// (all with none), and returns the pinned groups to drop from the index
// once committed.
func (c *Client) forgetInvitationsTx(tx *sql.Tx, from []kez.PublicKey) ([]*groupState, error) {
	want := map[string]bool{}
	for _, k := range from {
		want[k.String()] = true
	}
	rows, err := tx.Query(`SELECT name, gid, invited_by FROM groups WHERE invited_by != ''`)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	type inv struct {
		name string
		gid  [32]byte
	}
	var invs []inv
	for rows.Next() {
		var i inv
		var gid []byte
		var by string
		if err := rows.Scan(&i.name, &gid, &by); err != nil {
			rows.Close()
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		copy(i.gid[:], gid)
		if len(from) == 0 || want[by] {
			invs = append(invs, i)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	var out []*groupState
	for _, i := range invs {
		if err := forgetTx(tx, i.name, i.gid); err != nil {
			return nil, err
		}
		out = append(out, c.groups.get(i.name))
	}
	return out, nil
}

// AcceptGroup accepts the invitation to the group (NAME or NAME@domain):
// the user is in it from now on, its messages held as requests become
// trusted, unread messages, and the user's other devices are told (they
// accept it too). A group the user is in already is left as it is.
// Errors: ErrUnknownGroup (no such group here, or an invitation the group
// took back), ErrNotGroupMember, ErrGroupBroken.
func (c *Client) AcceptGroup(ctx context.Context, name string) error {
	if !c.work.Enter() {
		return ErrClosed
	}
	defer c.work.Leave()
	gs, err := c.pinnedGroup(name)
	if err != nil {
		return err
	}
	if gs.invitation().IsZero() {
		return nil
	}
	fetchErr := c.refreshGroup(ctx, gs, true)
	if errors.Is(fetchErr, ErrGroupBroken) {
		return fetchErr
	}
	if c.groups.get(gs.name) != gs {
		return fmt.Errorf("%w: %s (you were removed from it)", ErrUnknownGroup, gs.name)
	}
	st, left, _ := gs.snapshot()
	if _, ok := st.Member(c.me); left || !ok {
		return fmt.Errorf("%w: %s", ErrNotGroupMember, gs.name)
	}
	if err := c.acceptInvitation(ctx, gs, st, "accepted"); err != nil {
		return err
	}
	if fetchErr != nil {
		// Links over the request caps were not pinned while it was an
		// invitation; they are now.
		if err := c.refreshGroup(ctx, gs, true); err != nil {
			c.log.Warn("cannot fetch a group's chain; accepted the pinned one", "group", gs.name, "err", err)
		}
		st, _, _ = gs.snapshot()
	}
	// The senders of its messages, strangers until now, are named as
	// members are (their handles checked).
	unnamed, err := queryEntries(ctx, c.db.db, `SELECT `+entryColumns+` FROM messages WHERE grp = ? AND incoming = 1 AND trust = ? AND peer_handle = ''`,
		gs.name, string(TrustTrusted))
	if err != nil {
		return err
	}
	c.nameGroupSenders(ctx, unnamed)
	c.announceOwn(ctx, gs, st)
	return nil
}

// acceptInvitation makes gs a group the user is in: its requests become
// trusted, unread messages.
func (c *Client) acceptInvitation(ctx context.Context, gs *groupState, st *group.State, how string) error {
	by := gs.invitation()
	if by.IsZero() {
		return nil
	}
	now := c.now()
	detail := fmt.Sprintf("the invitation of %s", by)
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE groups SET invited_by = '' WHERE name = ?`, gs.name); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		if _, err := tx.Exec(`UPDATE messages SET trust = ?, read = 0 WHERE grp = ? AND incoming = 1 AND trust = ?`,
			string(TrustTrusted), gs.name, string(TrustRequest)); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		return addGroupEvent(tx, gs.name, now, st.Seqno(), how, detail)
	})
	if err != nil {
		return err
	}
	gs.mu.Lock()
	gs.invitedBy = kez.PublicKey{}
	gs.mu.Unlock()
	c.tellGroup(GroupEvent{Group: gs.name, At: now, Seqno: st.Seqno(), Event: how, Detail: detail})
	return nil
}

// acceptFromOwnDevice accepts the invitation gs once a group-update from
// one of the user's own devices was followed (fetched: err nil) and the
// chain lists the user: the user accepted it there.
func (c *Client) acceptFromOwnDevice(ctx context.Context, gs *groupState, fetchErr error) {
	if fetchErr != nil || gs.invitation().IsZero() || c.groups.get(gs.name) != gs {
		return
	}
	st, left, broken := gs.snapshot()
	if _, ok := st.Member(c.me); !ok || left || broken != "" {
		return
	}
	if err := c.acceptInvitation(ctx, gs, st, "accepted"); err != nil {
		c.log.Warn("accepting a group invitation accepted on another device", "group", gs.name, "err", err)
	}
}

// declineGroup declines the invitation gs: the user's own remove link is
// appended (on a conflict the chain is fetched again and the link made
// once more), the chain fetched again, which forgets the invitation, and
// only the user's other devices are told: no pairwise message goes to
// the members, who are strangers.
func (c *Client) declineGroup(ctx context.Context, gs *groupState) error {
	for attempt := 0; ; attempt++ {
		if err := c.refreshGroup(ctx, gs, true); err != nil {
			return err
		}
		if c.groups.get(gs.name) != gs {
			return nil // forgotten meanwhile: the user is no member any more
		}
		st, _, _ := gs.snapshot()
		l, err := group.NewLink(c.dev, c.me, st, group.TypeRemove, group.RemoveBody(c.me), c.now())
		if err != nil {
			return err
		}
		gc, err := c.groupClient(gs.name, gs.sigServer)
		if err != nil {
			return err
		}
		err = gc.Append(ctx, l)
		var ce *group.ConflictError
		if errors.As(err, &ce) && attempt == 0 {
			continue
		}
		if err != nil {
			return fmt.Errorf("chat: declining the group %s: %w", gs.name, err)
		}
		if err := c.refreshGroup(ctx, gs, true); err != nil {
			return err
		}
		nst, _, _ := gs.snapshot()
		c.announceOwn(ctx, gs, nst)
		return nil
	}
}

// announceOwn sends a group-update for st's head to the user's other
// devices. Failures are logged.
func (c *Client) announceOwn(ctx context.Context, gs *groupState, st *group.State) {
	body := marshalGroupUpdate(groupUpdate{Group: gs.name, Head: st.Head(), Seqno: st.Seqno(), SigServer: gs.sigServer})
	ts, err := c.memberTargets(ctx, c.me, "")
	if err == nil && len(ts) > 0 {
		var p *Pending
		p, err = c.publishIn(ctx, ts, Message{Kind: KindGroupUpdate, Body: body}, false, false, true, nil)
		if err == nil {
			_, err = p.Wait(ctx)
		}
	}
	if err != nil && !errors.Is(err, ErrNoDevice) {
		c.log.Warn("could not tell your other devices of a group", "group", gs.name, "err", err)
	}
}

// admitGroupRequest keeps a group message stored as a request (an
// invitation's) under the request caps, in the batch's transaction: it
// returns the cap e is over, or "" (e fits, or is no request).
func (gb *groupBatch) admitGroupRequest(c *Client, tx *sql.Tx, e *Entry) (string, error) {
	if e.Trust != TrustRequest {
		return "", nil
	}
	if gb.quota == nil {
		gb.quota = c.newRequestQuota(tx)
	}
	return gb.quota.admit(e)
}

// asRequest makes e, a group message of the invitation gs, a request: its
// sender's handle is the one a stranger lookup confirmed, if any (§5).
func (c *Client) asRequest(gs *groupState, e *Entry) {
	if gs.invitation().IsZero() || e.Trust != TrustTrusted || !e.Incoming {
		return
	}
	e.Trust = TrustRequest
	if c.contactByKey(e.From) == nil {
		c.mu.Lock()
		e.PeerHandle = c.requesters[e.From].handle
		c.mu.Unlock()
	}
}
