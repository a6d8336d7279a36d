package chat

// Following group-updates (docs/spec/chat.md §10.10). A group-update is a
// hint anyone can send, and each one followed costs a fetch at the
// group's sig-server (spending the user's read budget there). For a group
// pinned here the fetches updates make are bounded: at most one per group
// per Config.GroupUpdateInterval; an update within the interval is kept
// (the latest) and followed once it is over, by the next batch received
// or a timer. The same bound applies to a newer epoch shown by a delivery
// from someone who is no member of the pinned chain. Where a group not
// pinned here is fetched first (§10.1) is also decided here.

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
)

// DefaultGroupUpdateInterval is the default of Config.GroupUpdateInterval:
// a group's chain is fetched for group-updates at most once per interval.
const DefaultGroupUpdateInterval = 10 * time.Second

// updateLimit bounds the fetches group-updates make for one pinned group
// (guarded by its groupState's mu).
type updateLimit struct {
	last    time.Time   // the last fetch an update made
	pending bool        // an update waits for the interval to be over
	since   time.Time   // when the first waiting update came
	hint    groupUpdate // the latest waiting update (zero: a newer epoch seen)
	timer   *time.Timer // armed while an update waits
	reopen  bool        // the timer fetched the chain: the next batch opens what is held
}

// groupUpdateEvery is the interval of Config.GroupUpdateInterval (0: no
// bound).
func (c *Client) groupUpdateEvery() time.Duration {
	switch d := c.cfg.GroupUpdateInterval; {
	case d == 0:
		return DefaultGroupUpdateInterval
	case d < 0:
		return 0
	default:
		return d
	}
}

// wantRefresh records that a delivery from person showed an epoch of the
// group newer than st's: after the batch the chain is fetched, at once
// (at most once a second) if person is a member of st, under the limit
// of group-updates otherwise.
func (gb *groupBatch) wantRefresh(name string, st *group.State, person kez.PublicKey) {
	_, member := st.Member(person)
	gb.refresh[name] = gb.refresh[name] || member
}

// followRefresh fetches the chains of the groups a delivery showed a
// newer epoch of: at once (at most once a second) if its sender is a
// member of the pinned chain, under the limit of group-updates otherwise
// (refresh: name → member). touched gets the groups whose held envelopes
// may open now.
func (c *Client) followRefresh(ctx context.Context, refresh map[string]bool, touched map[[32]byte]bool) {
	for name, member := range refresh {
		gs := c.groups.get(name)
		if gs == nil {
			continue
		}
		var err error
		if member {
			err = c.refreshGroup(ctx, gs, false)
		} else {
			_, err = c.followUpdate(ctx, gs, nil)
		}
		if err != nil {
			c.log.Warn("fetching a group's chain for a newer epoch", "group", name, "err", err)
		}
		touched[gs.gid] = true
	}
}

// followUpdate fetches gs's chain for the group-update u (nil: a newer
// epoch seen from someone who is no member), unless u names what is
// pinned, at most once per interval: within it, u is kept (kept true; its
// record stays) and followed once the interval is over.
func (c *Client) followUpdate(ctx context.Context, gs *groupState, u *groupUpdate) (kept bool, err error) {
	now, every := c.now(), c.groupUpdateEvery()
	gs.mu.Lock()
	lim := &gs.updates
	if u != nil && gs.st != nil && (u.Seqno < gs.st.Seqno() || u.Seqno == gs.st.Seqno() && u.Head == gs.st.Head()) {
		gs.mu.Unlock()
		return false, nil // what is pinned, or older
	}
	if every > 0 && !lim.last.IsZero() && now.Sub(lim.last) < every {
		if !lim.pending {
			lim.pending, lim.since = true, now
		}
		if u != nil {
			lim.hint = *u
		}
		c.armUpdateTimer(gs, lim.last.Add(every).Sub(now))
		gs.mu.Unlock()
		c.stats.groupUpdatesDeferred.Add(1)
		return true, nil
	}
	old := lim.hint
	lim.last, lim.pending, lim.hint = now, false, groupUpdate{}
	gs.mu.Unlock()
	if old.Group != "" && (u == nil || old != *u) {
		c.updateDone(ctx, gs.name, old) // answered by this fetch
	}
	return false, c.refreshGroup(ctx, gs, true)
}

// followDeferred follows the kept updates whose interval is over, of
// every pinned group, and adds to touched the groups fetched (or fetched
// by the timer since the last batch).
func (c *Client) followDeferred(ctx context.Context, touched map[[32]byte]bool) {
	for _, gs := range c.groups.all() {
		gs.mu.Lock()
		pending, reopen := gs.updates.pending, gs.updates.reopen
		gs.updates.reopen = false
		gs.mu.Unlock()
		if reopen {
			touched[gs.gid] = true
		}
		if pending && c.followKept(ctx, gs) {
			touched[gs.gid] = true
		}
	}
}

// followKept follows gs's kept update if its interval is over (a fetch
// made since it came answers it: none is made then), and reports whether
// it fetched the chain. Not over yet, the timer is armed.
func (c *Client) followKept(ctx context.Context, gs *groupState) bool {
	now, every := c.now(), c.groupUpdateEvery()
	gs.mu.Lock()
	lim := &gs.updates
	if !lim.pending {
		gs.mu.Unlock()
		return false
	}
	if every > 0 && now.Sub(lim.last) < every {
		c.armUpdateTimer(gs, lim.last.Add(every).Sub(now))
		gs.mu.Unlock()
		return false
	}
	answered := gs.refreshed.After(lim.since)
	hint := lim.hint
	lim.pending, lim.hint = false, groupUpdate{}
	if !answered {
		lim.last = now
	}
	gs.mu.Unlock()
	var err error
	if !answered {
		if err = c.refreshGroup(ctx, gs, true); err != nil {
			c.log.Warn("following a group change kept for the interval", "group", gs.name, "seqno", hint.Seqno, "err", err)
		}
	}
	if hint.Group != "" && (err == nil || !retryLater(err)) {
		c.updateDone(ctx, gs.name, hint)
	}
	return !answered
}

// armUpdateTimer has gs's kept update followed in wait, unless a timer is
// armed (gs.mu held). The timer only fetches the chain; what it makes
// openable is opened by the next batch received.
func (c *Client) armUpdateTimer(gs *groupState, wait time.Duration) {
	if gs.updates.timer != nil {
		return
	}
	gs.updates.timer = time.AfterFunc(max(wait, time.Millisecond), func() {
		ok := c.background(func(ctx context.Context) {
			gs.mu.Lock()
			gs.updates.timer = nil
			gs.mu.Unlock()
			if c.groups.get(gs.name) != gs {
				return
			}
			if c.followKept(ctx, gs) {
				gs.mu.Lock()
				gs.updates.reopen = true
				gs.mu.Unlock()
			}
		})
		if !ok { // closing
			gs.mu.Lock()
			gs.updates.timer = nil
			gs.mu.Unlock()
		}
	})
}

// joinClient returns the client to fetch a group not pinned here from
// the address a group-update gave (§10.1): the user's sig-server for a
// group of the user's domain. For another domain the address is a
// stranger's choice until the resolver names it, so it is asked with the
// client for remote origins (https at public addresses only), whatever
// the resolver makes of the domain, unless it is the sig-server a contact
// of that domain was pinned with.
func (c *Client) joinClient(name, hint string) (*group.Client, error) {
	d := domainOf(name)
	if hint == "" || d == c.cc.Domain {
		return c.groupClient(name, "")
	}
	if c.knownSigServer(d, hint) {
		return c.groupClient(name, hint)
	}
	u, err := url.Parse(hint)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not a URL", handles.ErrForbiddenOrigin, hint)
	}
	if err := handles.CheckRemoteURL(u); err != nil {
		return nil, err
	}
	return group.NewClient(hint, c.resolver.RemoteClient()), nil
}

// knownSigServer reports whether base is the sig-server a contact of
// domain (not flagged) was pinned with: the resolver named it then.
func (c *Client) knownSigServer(domain, base string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, cs := range c.byHandle {
		if domainOf(h) == domain && cs.c.Flag == FlagNone && cs.c.SigServer != "" &&
			strings.TrimSuffix(cs.c.SigServer, "/") == strings.TrimSuffix(base, "/") {
			return true
		}
	}
	return false
}
