package chat

// Groups (docs/spec/chat.md §10): the membership chain of each group the
// user is in, pinned in chat.db, and the SDK to read and change it. The
// sending and receiving of group messages are in groups_send.go and
// groups_recv.go.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/kez"
)

// Errors of groups.
var (
	// ErrUnknownGroup reports a group name that is not pinned here (the
	// user never created it, nor was added to it).
	ErrUnknownGroup = errors.New("chat: no such group")
	// ErrNotGroupMember reports a sender who is no current member of the
	// group a message names, or a group the user is no member of any more.
	ErrNotGroupMember = errors.New("chat: not a member of the group")
	// ErrStaleEpoch reports a group message sealed at an epoch a removal
	// came after: a key a removed member may hold.
	ErrStaleEpoch = errors.New("chat: group message of an epoch before a removal")
	// ErrGroupBroken reports a group whose sig-server showed a fork of
	// its membership chain: nothing is sent to it or opened for it.
	ErrGroupBroken = errors.New("chat: the group's membership chain forked")
)

// groupRefreshEvery is how long a fetched group chain is used before a
// send fetches it again.
const groupRefreshEvery = time.Second

// GroupMember is a current member of a group.
type GroupMember struct {
	Key kez.PublicKey // the person's primary key
	// Handle is the handle the add link names: the adder's word, until
	// HandleChecked says the handle resolves to Key (a contact's, or
	// checked by Client.Group).
	Handle        string
	HandleChecked bool
	Role          group.Role
	// Devices are the member's current devices as their chain lists them
	// (filled by Client.Group; nil when the chain could not be had).
	Devices []kez.PublicKey
}

// Group is a group as the user's pinned membership chain shows it.
type Group struct {
	Name      string   // name@domain
	Title     string   // may be ""
	ID        [32]byte // the group ID (the create link's digest)
	Epoch     uint64   // the seqno of the last membership change
	Seqno     uint64   // the chain's head seqno
	Head      cid.Cid  // the chain's head link ID
	SigServer string   // where the chain is fetched
	Role      group.Role
	// Left: the user was removed or left; the chain is no longer followed.
	Left bool
	// Broken: the sig-server showed a fork of the chain (BrokenDetail
	// names both heads); nothing is sent to the group any more.
	Broken       bool
	BrokenDetail string
	Members      []GroupMember
	// Invited: the user was added by someone who is no contact and has
	// not accepted yet (docs/spec/chat.md §10.9); InvitedBy is that
	// person's key. Its messages are requests; AcceptGroup joins it,
	// LeaveGroup declines it.
	Invited   bool
	InvitedBy kez.PublicKey
}

// GroupEvent is a change to a group the client saw (docs/spec/chat.md
// §10.5): "created", "joined", "added", "removed", "left", "role",
// "title" or "fork".
type GroupEvent struct {
	Group  string
	At     time.Time
	Seqno  uint64 // the chain seqno it was seen at
	Event  string
	Detail string
}

// groupState is a pinned group, cached in memory.
type groupState struct {
	fetch     sync.Mutex // one fetch of the chain (and pinning of what it adds) at a time
	send      sync.Mutex // one send's sender key work (distributing, sealing) at a time: other groups send meanwhile
	mu        sync.Mutex // guards st, left, broken and refreshed: held briefly, never across a server or the database
	name      string
	gid       [32]byte
	sigServer string
	st        *group.State
	left      bool
	broken    string
	refreshed time.Time // the last fetch (tried)
	// invitedBy: an invitation, added by that person (groups_invite.go);
	// zero once accepted. updates: the fetches group-updates make
	// (groups_updates.go).
	invitedBy kez.PublicKey
	updates   updateLimit
}

// groupsIndex holds the pinned groups.
type groupsIndex struct {
	mu     sync.Mutex
	byName map[string]*groupState
	byID   map[[32]byte]*groupState
}

func (g *groupsIndex) get(name string) *groupState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byName[name]
}

func (g *groupsIndex) byGID(id [32]byte) *groupState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byID[id]
}

func (g *groupsIndex) put(gs *groupState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byName == nil {
		g.byName, g.byID = map[string]*groupState{}, map[[32]byte]*groupState{}
	}
	g.byName[gs.name], g.byID[gs.gid] = gs, gs
}

func (g *groupsIndex) all() []*groupState {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]*groupState, 0, len(g.byName))
	for _, gs := range g.byName {
		out = append(out, gs)
	}
	slices.SortFunc(out, func(a, b *groupState) int { return strings.Compare(a.name, b.name) })
	return out
}

// snapshot returns gs's state, left and broken (gs.mu not held).
func (gs *groupState) snapshot() (*group.State, bool, string) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	return gs.st, gs.left, gs.broken
}

// groupName canonicalises a group name: NAME (the user's domain) or
// NAME@domain, with the handle rules.
func (c *Client) groupName(name string) (string, error) {
	h, err := c.rules().Parse(name)
	if err != nil {
		return "", fmt.Errorf("chat: group name %q: %w", name, err)
	}
	return h.String(), nil
}

// pinnedGroup returns the pinned group of that name, or ErrUnknownGroup.
func (c *Client) pinnedGroup(name string) (*groupState, error) {
	n, err := c.groupName(name)
	if err != nil {
		return nil, err
	}
	gs := c.groups.get(n)
	if gs == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownGroup, n)
	}
	return gs, nil
}

// loadGroups rebuilds the pinned groups from chat.db. The links were
// verified when they were pinned; their device signatures are not checked
// again (the devices' chains may have moved on since).
func (c *Client) loadGroups(ctx context.Context) error {
	rows, err := c.db.db.QueryContext(ctx, `SELECT name, gid, sig_server, left_at IS NOT NULL, broken, refreshed_at, invited_by FROM groups`)
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	var gss []*groupState
	for rows.Next() {
		gs := &groupState{}
		var gid []byte
		var refreshed int64
		var invitedBy string
		if err := rows.Scan(&gs.name, &gid, &gs.sigServer, &gs.left, &gs.broken, &refreshed, &invitedBy); err != nil {
			rows.Close()
			return fmt.Errorf("chat: database: %w", err)
		}
		copy(gs.gid[:], gid)
		if invitedBy != "" {
			if gs.invitedBy, err = kez.ParsePublicKey(invitedBy); err != nil {
				rows.Close()
				return fmt.Errorf("chat: database: a group's inviter: %w", err)
			}
		}
		gss = append(gss, gs)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	for _, gs := range gss {
		links, err := c.db.groupLinks(ctx, gs.name)
		if err != nil {
			return err
		}
		st, err := group.Verify(ctx, links, pinnedDevices, group.WithClock(c.now))
		if err != nil {
			c.log.Error("a pinned group chain does not verify any more; the group is left out", "group", gs.name, "err", err)
			continue
		}
		gs.st = st
		c.groups.put(gs)
	}
	return nil
}

// pinnedDevices is the DeviceChecker of links already pinned: they were
// checked when they were.
func pinnedDevices(context.Context, kez.PublicKey, kez.PublicKey, time.Time) error { return nil }

func (s *store) groupLinks(ctx context.Context, name string) ([][]byte, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT link FROM group_links WHERE name = ? ORDER BY seqno`, name)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var l []byte
		if err := rows.Scan(&l); err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// Groups returns the groups pinned here, sorted by name, left and broken
// ones included, as last fetched (members without Devices).
func (c *Client) Groups(ctx context.Context) ([]*Group, error) {
	var out []*Group
	for _, gs := range c.groups.all() {
		out = append(out, c.groupView(gs, nil))
	}
	return out, ctx.Err()
}

// Group fetches the group's chain (from the pin on) and returns it with
// each member's current devices. The name is NAME (the user's domain) or
// NAME@domain. A fetch that fails leaves the pinned state, which is
// returned with the error logged; a fork returns the group marked broken.
func (c *Client) Group(ctx context.Context, name string) (*Group, error) {
	gs, err := c.pinnedGroup(name)
	if err != nil {
		return nil, err
	}
	if err := c.refreshGroup(ctx, gs, true); err != nil && !errors.Is(err, ErrGroupBroken) {
		c.log.Warn("cannot fetch a group's chain; showing the pinned one", "group", gs.name, "err", err)
	}
	devs := map[kez.PublicKey][]kez.PublicKey{}
	checked := map[kez.PublicKey]bool{}
	st, _, _ := gs.snapshot()
	for _, m := range st.Members() {
		mi, err := c.memberDevices(ctx, m.Key, m.Handle)
		if err != nil {
			c.log.Warn("a group member's chain or handle does not check out", "group", gs.name, "member", m.Key, "handle", m.Handle, "err", err)
			continue
		}
		devs[m.Key] = currentDevices(mi.devs, m.Key)
		checked[m.Key] = m.Key == c.me || mi.handle == m.Handle
	}
	g := c.groupView(gs, devs)
	for i := range g.Members {
		g.Members[i].HandleChecked = checked[g.Members[i].Key]
	}
	return g, nil
}

// groupView is the exported view of gs.
func (c *Client) groupView(gs *groupState, devs map[kez.PublicKey][]kez.PublicKey) *Group {
	st, left, broken := gs.snapshot()
	g := &Group{
		Name: gs.name, Title: st.Title(), ID: st.ID(), Epoch: st.Epoch(), Seqno: st.Seqno(), Head: st.Head(),
		SigServer: gs.sigServer, Left: left, Broken: broken != "", BrokenDetail: broken,
	}
	if by := gs.invitation(); !by.IsZero() {
		g.Invited, g.InvitedBy = true, by
	}
	if m, ok := st.Member(c.me); ok && !left {
		g.Role = m.Role
	}
	for _, m := range st.Members() {
		g.Members = append(g.Members, GroupMember{Key: m.Key, Handle: m.Handle, Role: m.Role, Devices: devs[m.Key]})
	}
	return g
}

// GroupEvents returns what the client saw happen to the group, oldest
// first.
func (c *Client) GroupEvents(ctx context.Context, name string) ([]GroupEvent, error) {
	n, err := c.groupName(name)
	if err != nil {
		return nil, err
	}
	rows, err := c.db.db.QueryContext(ctx, `SELECT at, seqno, event, detail FROM group_events WHERE name = ? ORDER BY at, rowid`, n)
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []GroupEvent
	for rows.Next() {
		e := GroupEvent{Group: n}
		var at int64
		if err := rows.Scan(&at, &e.Seqno, &e.Event, &e.Detail); err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		e.At = time.UnixMilli(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// addGroupEvent records an event in tx.
func addGroupEvent(tx *sql.Tx, name string, at time.Time, seqno uint64, event, detail string) error {
	_, err := tx.Exec(`INSERT INTO group_events (name, at, seqno, event, detail) VALUES (?,?,?,?,?)`, name, at.UnixMilli(), seqno, event, detail)
	if err != nil {
		return fmt.Errorf("chat: database: %w", err)
	}
	return nil
}

// GroupHistory returns the last limit messages of the group, oldest first
// (limit <= 0: all), sent ones with ReadBy. It does not change read flags.
func (c *Client) GroupHistory(ctx context.Context, name string, limit int) ([]*Entry, error) {
	n, err := c.groupName(name)
	if err != nil {
		return nil, err
	}
	c.nameStoredGroupSenders(ctx)
	q := `SELECT ` + entryColumns + ` FROM messages WHERE grp = ?`
	var es []*Entry
	if limit > 0 {
		q = `SELECT * FROM (` + q + ` ORDER BY sent_at DESC, stream_seq DESC, received_at DESC, id DESC LIMIT ?)` + orderBy
		es, err = queryEntries(ctx, c.db.db, q, n, limit)
	} else {
		es, err = queryEntries(ctx, c.db.db, q+orderBy, n)
	}
	if err != nil {
		return nil, err
	}
	if err := c.db.fillReadBy(ctx, es); err != nil {
		return nil, err
	}
	return es, nil
}

// fillReadBy sets ReadBy of the sent group messages among es.
func (s *store) fillReadBy(ctx context.Context, es []*Entry) error {
	for _, e := range es {
		if e.Incoming || e.Group == "" {
			continue
		}
		var err error
		if e.ReadBy, err = s.readBy(ctx, e.ID); err != nil {
			return err
		}
	}
	return nil
}

// readBy returns the members who read the sent group message id.
func (s *store) readBy(ctx context.Context, id MessageID) ([]kez.PublicKey, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT reader FROM group_reads WHERE msg_id = ? ORDER BY at, reader`, id[:])
	if err != nil {
		return nil, fmt.Errorf("chat: database: %w", err)
	}
	defer rows.Close()
	var out []kez.PublicKey
	for rows.Next() {
		var r string
		if err := rows.Scan(&r); err != nil {
			return nil, fmt.Errorf("chat: database: %w", err)
		}
		if k, err := kez.ParsePublicKey(r); err == nil {
			out = append(out, k)
		}
	}
	return out, rows.Err()
}
