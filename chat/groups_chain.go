package chat

// Fetching, checking and pinning group chains (docs/spec/chat.md §10.1,
// §10.5), and the members' devices.

import (
	"context"
	"crypto/ecdh"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// memberInfo is what sending to a member needs: their devices as their
// verified chain lists them, and where their prekeys are.
type memberInfo struct {
	devs    []chainDevice
	handle  string
	sigBase string // "" the user's own sig-server
	// enc and gen: the person's encryption key as their chain gives it,
	// for format 1 to a member who publishes no prekey (nil: unknown).
	enc *ecdh.PublicKey
	gen uint32
}

// chainInfo is the memberInfo of a person's verified chain st.
func chainInfo(st *sigchain.State, handle, sigBase string) memberInfo {
	return memberInfo{devs: chainDevices(st), handle: handle, sigBase: sigBase, enc: st.EncryptionKey(), gen: st.EncryptionGeneration()}
}

// memberChains caches the chains of members who are no contacts and of
// another domain, resolved by handle.
type memberChains struct {
	mu     sync.Mutex
	chains map[kez.PublicKey]memberChain
}

type memberChain struct {
	st      *sigchain.State
	handle  string // the handle that resolved to the chain's key
	sigBase string
	checked time.Time
}

// memberDevices returns the devices of the person key, whose handle the
// group chain names (the adder's word): the user's own chain, a
// contact's pinned chain (checked again when due), or, for a key that is
// no contact, the chain its handle resolves to, which must be key's (a
// handle the chain does not name is never shown nor used: the handle of
// the answer is the one checked). With no handle, the chain of key at the
// user's sig-server, and no handle.
func (c *Client) memberDevices(ctx context.Context, key kez.PublicKey, handle string) (memberInfo, error) {
	if key == c.me {
		return memberInfo{devs: c.ownDevices(ctx, false)}, nil
	}
	if cs := c.contactByKey(key); cs != nil {
		if err := c.refreshContact(ctx, cs, false, false); err != nil && (errors.Is(err, ErrKeyChanged) || errors.Is(err, ErrChainRewritten)) {
			return memberInfo{}, err
		}
		c.mu.Lock()
		ct, devs := cs.c, cs.devices
		c.mu.Unlock()
		if len(devs) == 0 {
			devs = []chainDevice{{Key: ct.Key, Primary: true}}
		}
		return memberInfo{devs: devs, handle: ct.Handle, sigBase: ct.SigServer, enc: ct.EncryptionKey, gen: ct.Generation}, nil
	}
	if handle == "" {
		st, err := c.keyChain(ctx, key)
		if err != nil {
			return memberInfo{}, err
		}
		return chainInfo(st, "", ""), nil
	}
	if mi, ok := c.members.verified(key, handle, c.now(), c.cfg.RefreshInterval); ok {
		return mi, nil
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	defer cancel()
	res, err := c.resolver.Resolve(rctx, handle)
	if err != nil {
		return memberInfo{}, fmt.Errorf("chat: resolving the member %s: %w", handle, err)
	}
	if res.Key != key {
		return memberInfo{}, fmt.Errorf("chat: the member %s: %w: the handle names %s, the group %s", handle, ErrKeyChanged, res.Key, key)
	}
	base := res.SigServer
	if domainOf(handle) == c.cc.Domain {
		base = "" // the user's own sig-server
	}
	mc := &c.members
	mc.mu.Lock()
	if mc.chains == nil || len(mc.chains) >= maxKeyChains {
		mc.chains = map[kez.PublicKey]memberChain{}
	}
	mc.chains[key] = memberChain{st: res.State, handle: res.Handle.String(), sigBase: base, checked: c.now()}
	mc.mu.Unlock()
	return chainInfo(res.State, res.Handle.String(), base), nil
}

// verified returns the member chain of key cached for handle, checked
// less than every ago.
func (mc *memberChains) verified(key kez.PublicKey, handle string, now time.Time, every time.Duration) (memberInfo, bool) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	e, ok := mc.chains[key]
	if !ok || e.handle != handle || now.Sub(e.checked) >= every {
		return memberInfo{}, false
	}
	return chainInfo(e.st, e.handle, e.sigBase), true
}

// handleOf returns the checked handle of key if one is known here
// without asking a server (a contact's, a member's resolved before), or
// "".
func (mc *memberChains) handleOf(key kez.PublicKey) string {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return mc.chains[key].handle
}

// deviceChecker is the group DeviceChecker of a client (§10.1): device
// must be a device person's chain added, and did not revoke before at.
// handles names the persons the chain knows (members, the creator).
func (c *Client) deviceChecker(handles map[kez.PublicKey]string) group.DeviceChecker {
	return func(ctx context.Context, person, device kez.PublicKey, at time.Time) error {
		mi, err := c.memberDevices(ctx, person, handles[person])
		if err != nil && handles[person] != "" {
			// A handle that does not check out names no devices; the
			// person's own chain still does.
			mi, err = c.memberDevices(ctx, person, "")
		}
		if err != nil {
			return fmt.Errorf("%w: the chain of %s: %w", group.ErrDeviceNotAllowed, person, err)
		}
		d, ok := findDevice(mi.devs, device)
		if !ok {
			return fmt.Errorf("%w: %s is no device of %s", group.ErrDeviceNotAllowed, device, person)
		}
		if d.Revoked && !d.RevokedAt.After(at) {
			return fmt.Errorf("%w: %s was revoked by %s before the link", group.ErrDeviceNotAllowed, device, person)
		}
		return nil
	}
}

// handlesOf maps the members of st (and the user) to their handles.
func (c *Client) handlesOf(st *group.State) map[kez.PublicKey]string {
	m := map[kez.PublicKey]string{}
	if st != nil {
		for _, mb := range st.Members() {
			m[mb.Key] = mb.Handle
		}
	}
	return m
}

// groupClient returns a client of the group's sig-server.
func (c *Client) groupClient(name, base string) (*group.Client, error) {
	if base == "" || base == c.cc.SigServerURL {
		return group.NewClient(c.cc.SigServerURL, c.httpc), nil
	}
	hc, err := c.resolver.ClientFor(domainOf(name), base)
	if err != nil {
		return nil, err
	}
	return group.NewClient(base, hc), nil
}

// groupSigServer returns the sig-server of a group's domain (§10.1): the
// user's own for the user's domain; else the one the resolver names for
// the handle of the chain's creator, which must be hint.
func (c *Client) groupSigServer(ctx context.Context, name, hint string, creator string) (string, error) {
	if domainOf(name) == c.cc.Domain {
		return c.cc.SigServerURL, nil
	}
	if domainOf(creator) != domainOf(name) {
		return "", fmt.Errorf("chat: the group %s was created by %s, of another domain", name, creator)
	}
	rctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	defer cancel()
	res, err := c.resolver.Resolve(rctx, creator)
	if err != nil {
		return "", fmt.Errorf("chat: resolving the creator of %s: %w", name, err)
	}
	if strings.TrimSuffix(res.SigServer, "/") != strings.TrimSuffix(hint, "/") {
		return "", fmt.Errorf("chat: the group %s is at %s, not %s", name, res.SigServer, hint)
	}
	return res.SigServer, nil
}

// fetchLinks fetches the links of the group after seqno since (all when
// 0), verified on top of prev (nil: from the start), and returns the new
// state and the links it added. A chain that does not contain prev's head
// is group.ErrFork or group.ErrRollback.
func (c *Client) fetchLinks(ctx context.Context, gc *group.Client, name string, prev *group.State) (*group.State, [][]byte, error) {
	fctx, cancel := context.WithTimeout(ctx, c.cfg.RefreshTimeout)
	defer cancel()
	var since uint64
	if prev != nil {
		since = prev.Seqno() - 1 // the pinned head again, to compare
	}
	links, head, err := gc.Fetch(fctx, name, since)
	if err != nil {
		return nil, nil, err
	}
	if prev == nil {
		st, err := group.Verify(fctx, links, c.linksChecker(nil, links), group.WithClock(c.now))
		if err != nil {
			return nil, nil, err
		}
		return st, links, nil
	}
	if head.Seqno < prev.Seqno() || len(links) == 0 {
		return nil, nil, fmt.Errorf("%w: the sig-server shows %d links, %d are pinned", group.ErrRollback, head.Seqno, prev.Seqno())
	}
	first, err := group.ParseLink(links[0])
	if err != nil {
		return nil, nil, err
	}
	if first.Seqno() != prev.Seqno() || first.ID() != prev.Head() {
		return nil, nil, fmt.Errorf("%w: at seqno %d the sig-server shows %s, %s is pinned", group.ErrFork, prev.Seqno(), first.ID(), prev.Head())
	}
	links = links[1:]
	if len(links) == 0 {
		return prev, nil, nil
	}
	st, err := prev.Extend(fctx, links, c.linksChecker(prev, links), group.WithClock(c.now))
	if err != nil {
		return nil, nil, err
	}
	return st, links, nil
}

// linksChecker is the client's DeviceChecker for links on top of prev
// (nil: a whole chain), knowing the handles of prev's members and of the
// persons the links create or add.
func (c *Client) linksChecker(prev *group.State, links [][]byte) group.DeviceChecker {
	hs := c.handlesOf(prev)
	for _, b := range links {
		if l, err := group.ParseLink(b); err == nil {
			addHandles(hs, l)
		}
	}
	return c.deviceChecker(hs)
}

// addHandles records the handles a create or add link names.
func addHandles(hs map[kez.PublicKey]string, l *group.Link) {
	switch l.Type() {
	case group.TypeCreate:
		if h, err := createHandle(l.Body()); err == nil {
			hs[l.By()] = h
		}
	case group.TypeAdd:
		for _, m := range addedMembers(l.Body()) {
			hs[m.Key] = m.Handle
		}
	}
}

// refreshGroup fetches gs's chain from the pin on (unless it was fetched
// less than groupRefreshEvery ago and force is false), verifies and pins
// what it adds, and records what changed. A fork marks the group broken
// (ErrGroupBroken); a rollback is returned as group.ErrRollback and the
// pin stays. One fetch of a group runs at a time (gs.fetch); gs.mu is
// held only to read and set gs's fields, never across a server or the
// database.
func (c *Client) refreshGroup(ctx context.Context, gs *groupState, force bool) error {
	gs.fetch.Lock()
	defer gs.fetch.Unlock()
	now := c.now()
	gs.mu.Lock()
	pinned, left, broken, last := gs.st, gs.left, gs.broken, gs.refreshed
	due := force || now.Sub(last) >= groupRefreshEvery
	// A group left is fetched only when a group-update says it changed:
	// the user may have been added again.
	if due && broken == "" && (!left || force) {
		gs.refreshed = now
	}
	gs.mu.Unlock()
	switch {
	case broken != "":
		return fmt.Errorf("%w: %s: %s", ErrGroupBroken, gs.name, broken)
	case !due || left && !force:
		return nil
	}
	gc, err := c.groupClient(gs.name, gs.sigServer)
	if err != nil {
		return err
	}
	st, links, err := c.fetchLinks(ctx, gc, gs.name, pinned)
	switch {
	case errors.Is(err, group.ErrFork):
		return c.markBroken(ctx, gs, pinned, err)
	case errors.Is(err, group.ErrNotFound):
		return fmt.Errorf("chat: fetching the group %s: %w: the sig-server has no such group, seqno %d is pinned", gs.name, group.ErrRollback, pinned.Seqno())
	case err != nil:
		return fmt.Errorf("chat: fetching the group %s: %w", gs.name, err)
	case len(links) == 0:
		return nil
	}
	if st.ID() != gs.gid {
		return c.markBroken(ctx, gs, pinned, fmt.Errorf("%w: the chain's group ID changed", group.ErrFork))
	}
	return c.pinGroupLinks(ctx, gs, pinned, st, links)
}

// markBroken marks gs broken after a fork of its pinned chain, loudly
// (gs.fetch held).
func (c *Client) markBroken(ctx context.Context, gs *groupState, pinned *group.State, cause error) error {
	detail := fmt.Sprintf("pinned seqno %d head %s; %v", pinned.Seqno(), pinned.Head(), cause)
	c.log.Error("THE SIG-SERVER SHOWS A FORK OF A GROUP'S MEMBERSHIP CHAIN: two histories of one group exist; nothing is sent to it or opened for it any more", "group", gs.name, "detail", detail)
	now := c.now()
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE groups SET broken = ? WHERE name = ?`, detail, gs.name); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		return addGroupEvent(tx, gs.name, now, pinned.Seqno(), "fork", detail)
	})
	if err != nil {
		return err
	}
	gs.mu.Lock()
	gs.broken = detail
	gs.mu.Unlock()
	c.tellGroup(GroupEvent{Group: gs.name, At: now, Seqno: pinned.Seqno(), Event: "fork", Detail: detail})
	return fmt.Errorf("%w: %s: %s", ErrGroupBroken, gs.name, detail)
}

// tellGroup hands an event to Config.OnGroupEvent.
func (c *Client) tellGroup(e GroupEvent) {
	if c.cfg.OnGroupEvent != nil {
		c.cfg.OnGroupEvent(e)
	}
}

// pinGroupLinks stores the links st added to the pinned state old and
// what they changed, and takes st (gs.fetch held).
func (c *Client) pinGroupLinks(ctx context.Context, gs *groupState, old, st *group.State, links [][]byte) error {
	now := c.now()
	events := groupDiff(old, st, c.me)
	_, wasMember := old.Member(c.me)
	_, isMember := st.Member(c.me)
	left := wasMember && !isMember
	gs.mu.Lock()
	back := gs.left && isMember // added again after leaving
	inviter := gs.invitedBy
	gs.mu.Unlock()
	// An invitation the user is no member of any more is forgotten; one
	// added again by someone who is no contact is an invitation again
	// (§10.9).
	forget := left && !inviter.IsZero()
	var reinviter kez.PublicKey
	if back {
		var err error
		if reinviter, err = c.inviterOf(st, links, st.Seqno()-uint64(len(links))+1, false); err != nil {
			return err
		}
		if !reinviter.IsZero() {
			for i := range events {
				if events[i][0] == "joined" {
					events[i] = [2]string{"invited", fmt.Sprintf("by %s, %s", reinviter, events[i][1])}
				}
			}
		}
	}
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if forget {
			return forgetTx(tx, gs.name, gs.gid)
		}
		if !inviter.IsZero() {
			if err := c.invitationRoom(tx, inviter, 0, links); err != nil {
				return err
			}
		}
		for i, l := range links {
			if _, err := tx.Exec(`INSERT OR REPLACE INTO group_links (name, seqno, link) VALUES (?,?,?)`, gs.name, st.Seqno()-uint64(len(links)-1-i), l); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		if _, err := tx.Exec(`UPDATE groups SET refreshed_at = ? WHERE name = ?`, now.UnixMilli(), gs.name); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		for _, e := range events {
			if err := addGroupEvent(tx, gs.name, now, st.Seqno(), e[0], e[1]); err != nil {
				return err
			}
		}
		if left {
			if err := leaveTx(tx, gs, now); err != nil {
				return err
			}
		}
		if back {
			if _, err := tx.Exec(`UPDATE groups SET left_at = NULL, invited_by = ? WHERE name = ?`, keyText(reinviter), gs.name); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		return dropStaleKeys(tx, gs.gid, st)
	})
	if err != nil {
		return err
	}
	if forget {
		c.groups.drop(gs)
	}
	gs.mu.Lock()
	gs.st = st
	gs.left = (gs.left || left) && !back
	if back {
		gs.invitedBy = reinviter
	}
	gs.mu.Unlock()
	if back && !reinviter.IsZero() {
		c.stats.groupInvitations.Add(1)
	}
	for _, e := range events {
		c.tellGroup(GroupEvent{Group: gs.name, At: now, Seqno: st.Seqno(), Event: e[0], Detail: e[1]})
	}
	return nil
}

// leaveTx marks gs left in tx and deletes its keys: the user can read
// nothing sent to it from now on.
func leaveTx(tx *sql.Tx, gs *groupState, now time.Time) error {
	for _, q := range []string{`DELETE FROM group_skeys WHERE gid = ?`, `DELETE FROM group_skey_sent WHERE gid = ?`,
		`DELETE FROM group_rkeys WHERE gid = ?`, `DELETE FROM group_held WHERE gid = ?`} {
		if _, err := tx.Exec(q, gs.gid[:]); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
	}
	if _, err := tx.Exec(`UPDATE groups SET left_at = ? WHERE name = ?`, now.UnixMilli(), gs.name); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	return nil
}

// dropStaleKeys deletes the keys of epochs a removal came after: they
// are never used again.
func dropStaleKeys(tx *sql.Tx, gid [32]byte, st *group.State) error {
	rows, err := tx.Query(`SELECT DISTINCT epoch FROM group_rkeys WHERE gid = ? AND epoch < ? UNION SELECT epoch FROM group_skeys WHERE gid = ? AND epoch < ?`,
		gid[:], st.Epoch(), gid[:], st.Epoch())
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	var stale []uint64
	for rows.Next() {
		var e uint64
		if err := rows.Scan(&e); err != nil {
			rows.Close()
			return fmt.Errorf("chat: database: %w", err)
		}
		if st.RemovalSince(e) {
			stale = append(stale, e)
		}
	}
	rows.Close()
	for _, e := range stale {
		for _, q := range []string{`DELETE FROM group_rkeys WHERE gid = ? AND epoch = ?`, `DELETE FROM group_skeys WHERE gid = ? AND epoch = ?`,
			`DELETE FROM group_skey_sent WHERE gid = ? AND epoch = ?`, `DELETE FROM group_held WHERE gid = ? AND epoch = ?`} {
			if _, err := tx.Exec(q, gid[:], e); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
	}
	return nil
}

// groupDiff lists what changed from old to st, as events: added,
// removed, role, title (joined and left for the user).
func groupDiff(old, st *group.State, me kez.PublicKey) [][2]string {
	var out [][2]string
	for _, m := range st.Members() {
		om, ok := old.Member(m.Key)
		switch {
		case !ok || om.Since != m.Since:
			if m.Key == me {
				out = append(out, [2]string{"joined", fmt.Sprintf("added as %s", m.Role)})
			} else {
				out = append(out, [2]string{"added", fmt.Sprintf("%s %s as %s", m.Handle, m.Key, m.Role)})
			}
		case om.Role != m.Role:
			out = append(out, [2]string{"role", fmt.Sprintf("%s %s is %s (was %s)", m.Handle, m.Key, m.Role, om.Role)})
		}
	}
	for _, om := range old.Members() {
		if m, ok := st.Member(om.Key); !ok || m.Since != om.Since {
			if om.Key == me {
				out = append(out, [2]string{"left", "you are no member any more"})
			} else {
				out = append(out, [2]string{"removed", fmt.Sprintf("%s %s", om.Handle, om.Key)})
			}
		}
	}
	if old.Title() != st.Title() {
		out = append(out, [2]string{"title", fmt.Sprintf("%q", st.Title())})
	}
	return out
}

// joinGroup pins a group the user was added to, told by a group-update
// (own: from one of the user's own devices): its chain, fetched whole
// from the group's sig-server (checked, §10.1), must list the user as a
// current member. It is an invitation unless the user joins at once
// (§10.9).
func (c *Client) joinGroup(ctx context.Context, u groupUpdate, own bool) error {
	if _, err := c.groupName(u.Group); err != nil {
		return err
	}
	// One join at a time: the updates recorded before a restart and
	// those of a batch received meanwhile may name the same group.
	c.gjoin.Lock()
	defer c.gjoin.Unlock()
	if c.groups.get(u.Group) != nil {
		return nil // pinned meanwhile
	}
	hint := u.SigServer
	if domainOf(u.Group) == c.cc.Domain {
		// The user's own domain: its groups are on the user's sig-server,
		// whatever the update says (a stranger's server would be asked
		// with the client kept for the user's own servers, and a chain it
		// made up would squat the name here).
		hint = ""
	}
	gc, err := c.joinClient(u.Group, hint)
	if err != nil {
		return err
	}
	st, links, err := c.fetchLinks(ctx, gc, u.Group, nil)
	if err != nil {
		return fmt.Errorf("chat: fetching the group %s: %w", u.Group, err)
	}
	if _, ok := st.Member(c.me); !ok {
		return fmt.Errorf("%w: %s", ErrNotGroupMember, u.Group)
	}
	creator := ""
	if l, err := group.ParseLink(links[0]); err == nil {
		creator, _ = createHandle(l.Body())
	}
	base, err := c.groupSigServer(ctx, u.Group, u.SigServer, creator)
	if err != nil {
		return err
	}
	inviter, err := c.inviterOf(st, links, 1, own)
	if err != nil {
		return err
	}
	event := "joined"
	if !inviter.IsZero() {
		event = "invited"
	}
	return c.pinNewGroup(ctx, st, links, base, event, inviter)
}

// pinNewGroup pins a group not pinned before (created, or joined): an
// invitation of inviter unless that is the zero key.
func (c *Client) pinNewGroup(ctx context.Context, st *group.State, links [][]byte, base, event string, inviter kez.PublicKey) error {
	now := c.now()
	gs := &groupState{name: st.Name(), gid: st.ID(), sigServer: base, st: st, refreshed: now, invitedBy: inviter}
	if other := c.groups.get(gs.name); other != nil {
		return nil // pinned meanwhile
	}
	err := c.db.write(ctx, func(tx *sql.Tx) error {
		if !inviter.IsZero() {
			if err := c.invitationRoom(tx, inviter, 1, links); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(`INSERT INTO groups (name, gid, sig_server, refreshed_at, joined_at, invited_by) VALUES (?,?,?,?,?,?)`,
			gs.name, gs.gid[:], base, now.UnixMilli(), now.UnixMilli(), keyText(inviter)); err != nil {
			return fmt.Errorf("chat: database: %w", err)
		}
		for i, l := range links {
			if _, err := tx.Exec(`INSERT INTO group_links (name, seqno, link) VALUES (?,?,?)`, gs.name, i+1, l); err != nil {
				return fmt.Errorf("chat: database: %w", err)
			}
		}
		return addGroupEvent(tx, gs.name, now, st.Seqno(), event, fmt.Sprintf("seqno %d head %s", st.Seqno(), st.Head()))
	})
	if err != nil {
		return err
	}
	c.groups.put(gs)
	if !inviter.IsZero() {
		c.stats.groupInvitations.Add(1)
	}
	c.tellGroup(GroupEvent{Group: gs.name, At: now, Seqno: st.Seqno(), Event: event})
	return nil
}
