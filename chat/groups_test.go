package chat

import (
	"slices"
	"testing"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
)

// groupTexts returns the texts of the group's messages in c's history.
func groupTexts(t testing.TB, c *testClient, name string) []string {
	t.Helper()
	es, err := c.GroupHistory(testCtx(t), name, 0)
	if err != nil {
		t.Fatalf("%s: GroupHistory: %v", c.user.Name, err)
	}
	return texts(es)
}

// waitGroup receives on c until it pins the group and cond holds for it.
func waitGroup(t testing.TB, c *testClient, name string, cond func(*Group) bool) *Group {
	t.Helper()
	var g *Group
	receiveUntil(t, c, "the group "+name, func(int) bool {
		gs, err := c.Groups(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range gs {
			if x.Name == name && cond(x) {
				g = x
				return true
			}
		}
		return false
	})
	return g
}

// waitGroupText receives on c until the group's history holds text.
func waitGroupText(t testing.TB, c *testClient, name, text string) *Entry {
	t.Helper()
	var e *Entry
	receiveUntil(t, c, "the group message "+text, func(int) bool {
		es, err := c.GroupHistory(testCtx(t), name, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range es {
			if x.Text() == text {
				e = x
				return true
			}
		}
		return false
	})
	return e
}

// mustAccept accepts on c the invitation to the group.
func mustAccept(t testing.TB, c *testClient, name string) {
	t.Helper()
	if err := c.AcceptGroup(testCtx(t), name); err != nil {
		t.Fatalf("%s accepts the group %s: %v", c.user.Name, name, err)
	}
}

func mustGroupSend(t testing.TB, c *testClient, name, text string) Sent {
	t.Helper()
	s, err := c.SendGroup(testCtx(t), name, text)
	if err != nil {
		t.Fatalf("%s sends to the group %s: %v", c.user.Name, name, err)
	}
	return s
}

// TestGroupConversation: alice creates a group and adds bob (two
// devices) and carol; each member's devices pin it from the group-update
// as an invitation (alice is no contact of theirs); bob accepts on one
// device (the other follows) and carol accepts; they read alice's
// message and one bob sends from his linked device (his other device
// gets it as sent); carol's read receipt reaches alice.
func TestGroupConversation(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := newPerson(t, st, "alice", 1)
	bob := newPerson(t, st, "bob", 2)
	carol := newPerson(t, st, "carol", 1)
	a, b1, b2, c := alice.devices[0], bob.devices[0], bob.devices[1], carol.devices[0]
	ctx := testCtx(t)

	g, err := a.CreateGroup(ctx, "team", "The team")
	if err != nil {
		t.Fatal(err)
	}
	name := "team@" + st.Domain
	if g.Name != name || g.Title != "The team" || g.Epoch != 1 || len(g.Members) != 1 || g.Role != "owner" {
		t.Fatalf("created %+v", g)
	}
	if err := a.AddGroupMembers(ctx, "team", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*testClient{b1, b2, c} {
		got := waitGroup(t, d, name, func(g *Group) bool { return len(g.Members) == 3 })
		if got.Epoch != 2 || got.Role != "member" || got.Title != "The team" || !got.Invited || got.InvitedBy != alice.user.Key {
			t.Fatalf("%s sees %+v", d.user.Name, got)
		}
	}
	mustAccept(t, b1, name)
	mustAccept(t, c, name)
	waitGroup(t, b2, name, func(g *Group) bool { return !g.Invited }) // accepted on bob's other device

	mustGroupSend(t, a, "team", "hello team")
	for _, d := range []*testClient{b1, b2, c} {
		e := waitGroupText(t, d, name, "hello team")
		if !e.Incoming || e.From != alice.user.Key || e.Group != name || e.Trust != TrustTrusted || e.PeerHandle != "alice@"+st.Domain {
			t.Fatalf("%s stored %+v", d.user.Name, e)
		}
	}

	mustGroupSend(t, b2, name, "hi from bob's phone")
	for _, d := range []*testClient{a, c} {
		e := waitGroupText(t, d, name, "hi from bob's phone")
		if e.From != bob.user.Key || !e.Incoming {
			t.Fatalf("%s stored %+v", d.user.Name, e)
		}
	}
	if e := waitGroupText(t, b1, name, "hi from bob's phone"); e.Incoming || e.From != bob.user.Key || e.State != StateSent {
		t.Fatalf("bob's other device stored %+v", e)
	}

	// Carol reads: alice learns it.
	inbox := mustInbox(t, c, false)
	if got := texts(inbox); !slices.Contains(got, "hello team") {
		t.Fatalf("carol's inbox %q", got)
	}
	receiveUntil(t, a, "carol's read receipt", func(int) bool {
		es, err := a.GroupHistory(testCtx(t), name, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			if e.Text() == "hello team" {
				return slices.Contains(e.ReadBy, carol.user.Key)
			}
		}
		return false
	})
	if got := groupTexts(t, a, name); !slices.Equal(got, []string{"hello team", "hi from bob's phone"}) {
		t.Fatalf("alice's group history %q", got)
	}
	// Group messages stay out of the one-to-one conversations.
	if h, err := a.History(ctx, bob.user.Key.String(), 0); err != nil || len(h) != 0 {
		t.Fatalf("alice's conversation with bob: %v %v", h, err)
	}
}
