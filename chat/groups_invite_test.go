package chat

// Group invitations (docs/spec/chat.md §10.9): a stranger adding the user
// to a group of its own makes a request, not a membership.

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// storedFrom counts the messages the inbox stream holds for the device
// to from the device from.
func storedFrom(t *testing.T, st *stacktest.Stack, to, from kez.PublicKey) uint64 {
	t.Helper()
	return storedOn(t, st.JetStream(t), inboxPrefix+to.String()+"."+from.String())
}

// groupNamed returns c's group of that name, or nil.
func groupNamed(t *testing.T, c *testClient, name string) *Group {
	t.Helper()
	gs, err := c.Groups(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Name == name {
			return g
		}
	}
	return nil
}

// Open item 6 of the second review: mal, a stranger, creates a group,
// adds bob and writes to it. Bob's devices pin it as an invitation from
// mal; the message is a request (not in the inbox); bob's client sends
// mal nothing (no group key, no read receipt) and refuses to send or
// change anything in it; adding mal as a contact does not accept it.
// Bob accepts on one device: the request becomes an inbox message, his
// other device accepts too, and he writes. A group from carol, a
// contact, is joined at once.
func TestGroupInvitationFromStranger(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mal := newPerson(t, st, "mal", 1)
	bob := newPerson(t, st, "bob", 2)
	carol := newPerson(t, st, "carol", 1)
	m, b1, b2, c := mal.devices[0], bob.devices[0], bob.devices[1], carol.devices[0]
	ctx := testCtx(t)
	name := "deals@" + st.Domain

	if _, err := m.CreateGroup(ctx, "deals", ""); err != nil {
		t.Fatal(err)
	}
	if err := m.AddGroupMembers(ctx, "deals", "bob"); err != nil {
		t.Fatal(err)
	}
	mustGroupSend(t, m, name, "a deal for you")
	e := waitGroupText(t, b1, name, "a deal for you")
	g := groupNamed(t, b1, name)
	if !g.Invited || g.InvitedBy != mal.user.Key || e.Trust != TrustRequest || !e.Incoming || e.From != mal.user.Key {
		t.Fatalf("bob pinned %+v, stored %+v", g, e)
	}
	if got := texts(mustInbox(t, b1, true)); slices.Contains(got, "a deal for you") {
		t.Fatalf("the invitation's message is in bob's inbox: %q", got)
	}
	reqs, err := b1.Requests(ctx)
	if err != nil || len(reqs) != 1 || reqs[0].Group != name {
		t.Fatalf("bob's requests: %+v, %v", reqs, err)
	}
	if err := b1.MarkRead(ctx, reqs...); err != nil { // shown: no group-read for a request
		t.Fatal(err)
	}
	if _, err := b1.SendGroup(ctx, name, "who are you?"); !errors.Is(err, ErrGroupInvitation) {
		t.Fatalf("bob sends to the invitation: %v", err)
	}
	for what, err := range map[string]error{
		"adds":   b1.AddGroupMembers(ctx, name, "carol"),
		"titles": b1.SetGroupTitle(ctx, name, "mine"),
	} {
		if !errors.Is(err, ErrGroupInvitation) {
			t.Fatalf("bob %s: %v", what, err)
		}
	}
	if g := groupNamed(t, m, name); g.Seqno != 2 {
		t.Fatalf("mal's chain is at seqno %d", g.Seqno)
	}
	mustAdd(t, b1, "mal")
	if e2, err := b1.Message(ctx, mal.user.Key, e.ID); err != nil || e2.Trust != TrustRequest || !groupNamed(t, b1, name).Invited {
		t.Fatalf("adding mal as a contact accepted his group: %+v, %v", e2, err)
	}
	if n := storedFrom(t, st, m.DeviceKey(), b1.DeviceKey()); n != 0 {
		t.Fatalf("bob's device sent mal %d messages before accepting", n)
	}

	// Bob's other device has the invitation too.
	waitGroup(t, b2, name, func(g *Group) bool { return g.Invited })
	mustAccept(t, b1, name)
	inbox := mustInbox(t, b1, false)
	if got := texts(inbox); !slices.Equal(got, []string{"a deal for you"}) || inbox[0].Trust != TrustTrusted {
		t.Fatalf("bob's inbox after accepting: %q", got)
	}
	if g := groupNamed(t, b1, name); g.Invited || g.Role != group.RoleMember {
		t.Fatalf("bob's group after accepting: %+v", g)
	}
	waitGroup(t, b2, name, func(g *Group) bool { return !g.Invited })
	if e, err := b2.Message(ctx, mal.user.Key, e.ID); err != nil || e.Trust != TrustTrusted {
		t.Fatalf("bob's other device: %+v, %v", e, err)
	}
	mustGroupSend(t, b1, name, "deal")
	waitGroupText(t, m, name, "deal")

	// A contact's group is joined at once.
	mustAdd(t, b1, "carol")
	if _, err := c.CreateGroup(ctx, "friends", ""); err != nil {
		t.Fatal(err)
	}
	if err := c.AddGroupMembers(ctx, "friends", "bob"); err != nil {
		t.Fatal(err)
	}
	mustGroupSend(t, c, "friends", "hi bob")
	fe := waitGroupText(t, b1, "friends@"+st.Domain, "hi bob")
	if g := groupNamed(t, b1, "friends@"+st.Domain); g.Invited || fe.Trust != TrustTrusted {
		t.Fatalf("bob joined carol's group as %+v, stored %+v", g, fe)
	}
}

// Bob declines mal's invitation: his remove link is on mal's chain, mal
// gets no message from bob, and both of bob's devices forget the group
// (its request stays until deleted). Mal adds him again: a new
// invitation, which deleting mal's requests forgets.
func TestGroupInvitationDeclined(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mal := newPerson(t, st, "mal", 1)
	bob := newPerson(t, st, "bob", 2)
	m, b1, b2 := mal.devices[0], bob.devices[0], bob.devices[1]
	ctx := testCtx(t)
	name := "spam@" + st.Domain
	if _, err := m.CreateGroup(ctx, "spam", ""); err != nil {
		t.Fatal(err)
	}
	if err := m.AddGroupMembers(ctx, "spam", "bob"); err != nil {
		t.Fatal(err)
	}
	mustGroupSend(t, m, name, "buy now")
	waitGroupText(t, b1, name, "buy now")
	waitGroup(t, b2, name, func(g *Group) bool { return g.Invited })

	if err := b1.LeaveGroup(ctx, name); err != nil {
		t.Fatal(err)
	}
	if g := groupNamed(t, b1, name); g != nil {
		t.Fatalf("bob still lists the declined group: %+v", g)
	}
	if reqs, err := b1.Requests(ctx); err != nil || len(reqs) != 1 {
		t.Fatalf("bob's requests after declining: %+v, %v", reqs, err)
	}
	mg, err := m.Group(ctx, name)
	if err != nil || len(mg.Members) != 1 || mg.Seqno != 3 {
		t.Fatalf("mal's group after bob declined: %+v, %v", mg, err)
	}
	if n := storedFrom(t, st, m.DeviceKey(), b1.DeviceKey()); n != 0 {
		t.Fatalf("declining sent mal %d messages", n)
	}
	receiveUntil(t, b2, "the decline on bob's other device", func(int) bool { return groupNamed(t, b2, name) == nil })
	if _, err := b1.SendGroup(ctx, name, "x"); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("bob sends to the declined group: %v", err)
	}

	// Invited again: deleting mal's requests forgets it.
	if err := m.AddGroupMembers(ctx, "spam", "bob"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, b1, name, func(g *Group) bool { return g.Invited && g.Seqno == 4 })
	n, err := b1.DeleteRequests(ctx, mal.user.Key)
	if err != nil || n != 1 {
		t.Fatalf("DeleteRequests: %d, %v", n, err)
	}
	if g := groupNamed(t, b1, name); g != nil {
		t.Fatalf("bob lists the deleted invitation: %+v", g)
	}
	var rows int
	if err := b1.db.db.QueryRow(`SELECT (SELECT count(*) FROM groups) + (SELECT count(*) FROM group_links)`).Scan(&rows); err != nil || rows != 0 {
		t.Fatalf("bob keeps %d rows of the forgotten group: %v", rows, err)
	}
}

// Invitations are bounded like message requests: each counts as one
// request of the person who added the user, under the caps per sender
// and in all. With 3 requests per sender and 4 in all, mal's fourth
// invitation and then his group message are dropped; eve gets one of
// her two in; deleting mal's requests makes room for eve's other.
func TestGroupInvitationCaps(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mal := newPerson(t, st, "mal", 1).devices[0]
	eve := newPerson(t, st, "eve", 1).devices[0]
	bob := newPerson(t, st, "bob", 1, func(c *Config) { c.MaxRequestsPerSender, c.MaxRequests = 3, 4 }).devices[0]
	ctx := testCtx(t)
	invite := func(from *testClient, names ...string) {
		t.Helper()
		for _, n := range names {
			if _, err := from.CreateGroup(ctx, n, ""); err != nil {
				t.Fatal(err)
			}
			if err := from.AddGroupMembers(ctx, n, "bob"); err != nil {
				t.Fatal(err)
			}
		}
	}
	pinned := func() (byMal, byEve []*Group) {
		t.Helper()
		gs, err := bob.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			switch {
			case !g.Invited:
				t.Fatalf("bob joined %s", g.Name)
			case g.InvitedBy == mal.Key():
				byMal = append(byMal, g)
			case g.InvitedBy == eve.Key():
				byEve = append(byEve, g)
			}
		}
		return byMal, byEve
	}

	invite(mal, "m0", "m1", "m2", "m3")
	waitStat(t, bob, "mal's invitations", func(s Stats) bool { return s.GroupInvitations+s.RequestsDropped == 4 })
	if byMal, _ := pinned(); len(byMal) != 3 || bob.Stats().RequestsDropped != 1 {
		t.Fatalf("bob pinned %d of mal's 4 invitations, dropped %d", len(byMal), bob.Stats().RequestsDropped)
	}
	byMal, _ := pinned()
	mustGroupSend(t, mal, byMal[0].Name, "over the cap")
	waitStat(t, bob, "mal's message dropped", func(s Stats) bool { return s.RequestsDropped == 2 })
	if reqs, err := bob.Requests(ctx); err != nil || len(reqs) != 0 {
		t.Fatalf("bob stored %+v, %v", reqs, err)
	}

	invite(eve, "e0", "e1")
	waitStat(t, bob, "eve's invitations", func(s Stats) bool { return s.GroupInvitations+s.RequestsDropped == 7 })
	_, byEve := pinned()
	if len(byEve) != 1 {
		t.Fatalf("bob pinned %d of eve's invitations with 3 of mal's, want 1 (4 in all)", len(byEve))
	}

	if _, err := bob.DeleteRequests(ctx, mal.Key()); err != nil {
		t.Fatal(err)
	}
	if byMal, _ := pinned(); len(byMal) != 0 {
		t.Fatalf("bob keeps %d of mal's invitations after deleting his requests", len(byMal))
	}
	for _, n := range []string{"e0", "e1"} { // eve tells bob again
		if err := eve.SetGroupTitle(ctx, n, "again"); err != nil {
			t.Fatal(err)
		}
	}
	waitStat(t, bob, "eve's other invitation", func(s Stats) bool { return s.GroupInvitations == 5 })
	if _, byEve := pinned(); len(byEve) != 2 {
		t.Fatalf("bob pinned %d of eve's invitations once there was room, want 2", len(byEve))
	}
}

// An invitation's chain counts in the request bytes of the person who
// invited the user: links that would take it over the cap are not
// pinned (the pin stays); once accepted, the group is followed again.
func TestGroupInvitationChainBytes(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	mal := newPerson(t, st, "mal", 1).devices[0]
	ctx := testCtx(t)
	if _, err := mal.CreateGroup(ctx, "deals", ""); err != nil {
		t.Fatal(err)
	}
	bu := st.NewUser(t, "bob")
	home := filepath.Join(t.TempDir(), "bob")
	openClientIn(t, st, bu, home).Close() // its prekey published
	if err := mal.AddGroupMembers(ctx, "deals", "bob"); err != nil {
		t.Fatal(err)
	}
	links, _, err := group.NewClient(st.SigServerURL, nil).Fetch(ctx, "deals@"+st.Domain, 0)
	if err != nil {
		t.Fatal(err)
	}
	room := linkBytes(links) + 100 // less than a title link
	bob := openClientIn(t, st, bu, home, func(c *Config) { c.MaxRequestBytesPerSender = room })
	name := "deals@" + st.Domain
	waitGroup(t, bob, name, func(g *Group) bool { return g.Invited && g.Seqno == 2 })

	if err := mal.SetGroupTitle(ctx, "deals", "a title long enough to go over the cap"); err != nil {
		t.Fatal(err)
	}
	waitStat(t, bob, "the link over the cap", func(s Stats) bool { return s.RequestsDropped == 1 })
	if g := groupNamed(t, bob, name); g.Seqno != 2 || g.Title != "" {
		t.Fatalf("bob pinned the link over the cap: %+v", g)
	}
	mustAccept(t, bob, name)
	if g := groupNamed(t, bob, name); g.Seqno != 3 || g.Invited {
		t.Fatalf("bob's group once accepted: %+v", g)
	}
}
