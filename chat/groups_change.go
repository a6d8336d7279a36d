package chat

// Changing a group: the links the user signs (with this device's key, for
// the person), appended at the group's sig-server, pinned and announced
// with group-update (docs/spec/chat.md §10.5).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
)

// CreateGroup creates the group NAME@<the user's domain> (name may be
// NAME or NAME@domain of the user's domain) with the user as its owner,
// at the user's sig-server, and pins it. Errors include group.ErrNameTaken
// and the sig-server's *group.RefusedError.
func (c *Client) CreateGroup(ctx context.Context, name, title string) (*Group, error) {
	if !c.work.Enter() {
		return nil, ErrClosed
	}
	defer c.work.Leave()
	n, err := c.groupName(name)
	if err != nil {
		return nil, err
	}
	if domainOf(n) != c.cc.Domain {
		return nil, fmt.Errorf("chat: a group is created in your own domain %s, not %s", c.cc.Domain, domainOf(n))
	}
	own := c.pinnedOwnChain()
	if own == nil {
		if own, err = c.fetchOwnChain(ctx); err != nil {
			return nil, err
		}
	}
	l, err := group.NewCreate(c.dev, c.me, n, own.Handle(), title, c.now())
	if err != nil {
		return nil, err
	}
	gc, err := c.groupClient(n, "")
	if err != nil {
		return nil, err
	}
	if err := gc.Append(ctx, l); err != nil {
		return nil, fmt.Errorf("chat: creating the group %s: %w", n, err)
	}
	st, err := group.Verify(ctx, [][]byte{l.Bytes()}, pinnedDevices, group.WithClock(c.now))
	if err != nil {
		return nil, err
	}
	if err := c.pinNewGroup(ctx, st, [][]byte{l.Bytes()}, c.cc.SigServerURL, "created", kez.PublicKey{}); err != nil {
		return nil, err
	}
	gs := c.groups.get(n)
	return c.groupView(gs, nil), nil
}

// AddGroupMembers adds the persons these handles resolve to as members
// (role member). The user must be the group's owner or an admin.
func (c *Client) AddGroupMembers(ctx context.Context, name string, handles ...string) error {
	if len(handles) == 0 {
		return nil
	}
	var nms []group.NewMember
	for _, h := range handles {
		hh, err := c.rules().Parse(h)
		if err != nil {
			return err
		}
		res, err := c.resolver.Resolve(ctx, hh.String())
		if err != nil {
			return fmt.Errorf("chat: resolving %s: %w", hh, err)
		}
		nms = append(nms, group.NewMember{Key: res.Key, Handle: hh.String(), Role: group.RoleMember})
	}
	return c.changeGroup(ctx, name, func(*group.State) (string, []byte, error) {
		return group.TypeAdd, group.AddBody(nms), nil
	})
}

// RemoveGroupMembers removes the members with these handles (as the
// group's chain names them, or resolved).
func (c *Client) RemoveGroupMembers(ctx context.Context, name string, handles ...string) error {
	if len(handles) == 0 {
		return nil
	}
	return c.changeGroup(ctx, name, func(st *group.State) (string, []byte, error) {
		var keys []kez.PublicKey
		for _, h := range handles {
			k, err := c.memberKey(st, h)
			if err != nil {
				return "", nil, err
			}
			keys = append(keys, k)
		}
		return group.TypeRemove, group.RemoveBody(keys...), nil
	})
}

// SetGroupRole gives the member with this handle the role (owner
// transfers the ownership; only the owner may).
func (c *Client) SetGroupRole(ctx context.Context, name, handle string, role group.Role) error {
	return c.changeGroup(ctx, name, func(st *group.State) (string, []byte, error) {
		k, err := c.memberKey(st, handle)
		if err != nil {
			return "", nil, err
		}
		return group.TypeRole, group.RoleBody(k, role), nil
	})
}

// SetGroupTitle renames the group (its address stays).
func (c *Client) SetGroupTitle(ctx context.Context, name, title string) error {
	return c.changeGroup(ctx, name, func(*group.State) (string, []byte, error) {
		return group.TypeTitle, group.TitleBody(title), nil
	})
}

// LeaveGroup removes the user from the group (the owner cannot leave:
// transfer the ownership first). The group stays listed, Left. On an
// invitation (Group.Invited) it declines it: only the user's other
// devices are told, and the group is no longer listed.
func (c *Client) LeaveGroup(ctx context.Context, name string) error {
	if gs, err := c.pinnedGroup(name); err == nil && !gs.invitation().IsZero() {
		if !c.work.Enter() {
			return ErrClosed
		}
		defer c.work.Leave()
		return c.declineGroup(ctx, gs)
	}
	return c.changeGroup(ctx, name, func(*group.State) (string, []byte, error) {
		return group.TypeRemove, group.RemoveBody(c.me), nil
	})
}

// memberKey finds the current member with handle h (canonical form).
func (c *Client) memberKey(st *group.State, h string) (kez.PublicKey, error) {
	hh, err := c.parseHandle(h)
	if err != nil {
		return kez.PublicKey{}, err
	}
	for _, m := range st.Members() {
		if m.Handle == hh {
			return m.Key, nil
		}
	}
	return kez.PublicKey{}, fmt.Errorf("%w: %s in %s", ErrNotGroupMember, hh, st.Name())
}

// changeGroup signs the link make returns on top of the group's current
// state, appends it (on a conflict the chain is fetched again and the
// change made once more), pins it and announces it to every member
// device, the removed ones too.
func (c *Client) changeGroup(ctx context.Context, name string, make func(*group.State) (string, []byte, error)) error {
	if !c.work.Enter() {
		return ErrClosed
	}
	defer c.work.Leave()
	gs, err := c.pinnedGroup(name)
	if err != nil {
		return err
	}
	for attempt := 0; ; attempt++ {
		if err := c.refreshGroup(ctx, gs, true); err != nil {
			return err
		}
		st, left, _ := gs.snapshot()
		if left {
			return fmt.Errorf("%w: %s", ErrNotGroupMember, gs.name)
		}
		if err := gs.mustBeAccepted(); err != nil {
			return err
		}
		typ, body, err := make(st)
		if err != nil {
			return err
		}
		l, err := group.NewLink(c.dev, c.me, st, typ, body, c.now())
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
			return fmt.Errorf("chat: changing the group %s: %w", gs.name, err)
		}
		// Pinned from the sig-server, which now shows it (and whatever
		// came after), verified like any link.
		if err := c.refreshGroup(ctx, gs, true); err != nil {
			return err
		}
		nst, _, _ := gs.snapshot()
		if nst.Seqno() < l.Seqno() {
			return fmt.Errorf("chat: changing the group %s: the sig-server took link %d but shows %d", gs.name, l.Seqno(), nst.Seqno())
		}
		c.announce(ctx, gs, st, nst)
		return nil
	}
}

// announce sends a group-update for nst's head to every current device
// of every member of nst and of old (the removed learn of it), but this
// device, sealed pairwise, all of them through fanOut (one
// multi-recipient send for up to 1024 devices). Failures are logged:
// each member fetches the chain anyway when a message of a newer epoch
// reaches it.
func (c *Client) announce(ctx context.Context, gs *groupState, old, nst *group.State) {
	body := marshalGroupUpdate(groupUpdate{Group: gs.name, Head: nst.Head(), Seqno: nst.Seqno(), SigServer: gs.sigServer})
	persons := map[kez.PublicKey]string{}
	for _, st := range []*group.State{old, nst} {
		for _, m := range st.Members() {
			persons[m.Key] = m.Handle
		}
	}
	var mu sync.Mutex
	var ts []target
	var wg sync.WaitGroup
	sem := make(chan struct{}, groupMemberFetches)
	for k, h := range persons {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			pts, err := c.memberTargets(ctx, k, h)
			if err != nil {
				c.log.Warn("could not tell a member of a group change", "group", gs.name, "member", h, "err", err)
				return
			}
			mu.Lock()
			ts = append(ts, pts...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if _, err := c.fanOut(ctx, ts, Message{Kind: KindGroupUpdate, Body: body}, nil); err != nil {
		c.log.Warn("could not tell every member device of a group change", "group", gs.name, "devices", len(ts), "err", err)
	}
}

// memberTargets are the targets of the current devices of the person key
// (handle as the group names it), this device excluded.
func (c *Client) memberTargets(ctx context.Context, key kez.PublicKey, handle string) ([]target, error) {
	mi, err := c.memberDevices(ctx, key, handle)
	if err != nil {
		return nil, err
	}
	var ts []target
	for _, d := range currentDevices(mi.devs, key) {
		if d == c.devKey {
			continue
		}
		if key == c.me {
			ts = append(ts, c.ownTarget(d))
			continue
		}
		// The person's encryption key: format 1 for a member whose
		// client never published a prekey (planSeal).
		t := target{rcpt: Recipient{Key: d, EncryptionKey: mi.enc, Generation: mi.gen}, person: key, handle: mi.handle, sigBase: mi.sigBase}
		if cs := c.contactByKey(key); cs != nil {
			c.mu.Lock()
			ct := cs.c
			c.mu.Unlock()
			t = deviceTarget(&ct, d)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// createHandle reads the handle of a create link's body.
func createHandle(body []byte) (string, error) {
	var b struct {
		Handle string `json:"handle"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return "", err
	}
	return b.Handle, nil
}

// addedMembers reads the members of an add link's body.
func addedMembers(body []byte) []group.NewMember {
	var b struct {
		Members []struct {
			Handle string        `json:"handle"`
			Key    kez.PublicKey `json:"key"`
			Role   group.Role    `json:"role"`
		} `json:"members"`
	}
	if json.Unmarshal(body, &b) != nil {
		return nil
	}
	out := make([]group.NewMember, len(b.Members))
	for i, m := range b.Members {
		out[i] = group.NewMember{Key: m.Key, Handle: m.Handle, Role: m.Role}
	}
	return out
}
