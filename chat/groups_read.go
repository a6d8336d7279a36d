package chat

// Read receipts of group messages (docs/spec/chat.md §10.6).

import (
	"context"

	"github.com/kez-lat/kez-chat/kez"
)

// sendGroupReads sends, for the group messages among entries the user
// was shown, one group-read per group and sender person to that person's
// current devices, in the background. Failures are logged: a receipt is a
// courtesy.
func (c *Client) sendGroupReads(entries []*Entry) {
	type key struct {
		group string
		from  kez.PublicKey
	}
	ids := map[key][]MessageID{}
	for _, e := range entries {
		// None for requests: an invitation's messages (§10.9).
		if e.Group != "" && e.Incoming && e.From != c.me && e.Trust == TrustTrusted {
			k := key{e.Group, e.From}
			ids[k] = append(ids[k], e.ID)
		}
	}
	if len(ids) == 0 || c.nc == nil {
		return
	}
	c.background(func(ctx context.Context) {
		if err := c.loadBlocked(ctx); err != nil {
			c.log.Warn("could not read the blocked keys; using those read before", "err", err)
		}
		for k, list := range ids {
			gs := c.groups.get(k.group)
			if gs == nil || c.blocked.has(k.from) {
				continue // no receipt of any kind to a blocked person (§5.1)
			}
			st, left, broken := gs.snapshot()
			m, ok := st.Member(k.from)
			if left || broken != "" || !ok || gs.mustBeAccepted() != nil {
				continue
			}
			ts, err := c.memberTargets(ctx, k.from, m.Handle)
			for err == nil && len(list) > 0 {
				n := min(len(list), maxGroupReadIDs)
				body := marshalGroupRead(groupRead{Group: k.group, IDs: list[:n]})
				list = list[n:]
				_, err = c.publishIn(ctx, ts, Message{Kind: KindGroupRead, Body: body}, false, false, false, nil)
			}
			if err != nil {
				c.log.Warn("could not send a group read receipt", "group", k.group, "to", m.Handle, "err", err)
			}
		}
	})
}
