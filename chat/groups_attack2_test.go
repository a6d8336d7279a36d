package chat

// More attacks on groups (docs/spec/chat.md §10.1, §10.4, §10.5, §10.6),
// from a stranger holding one registered key and from members.

import (
	"crypto/rand"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// chainServer serves one group chain, whatever is asked, and counts the
// requests.
type chainServer struct {
	links []*group.Link
	hits  atomic.Int64
}

func (s *chainServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	var raw []string
	for _, l := range s.links {
		raw = append(raw, string(l.Bytes()))
	}
	head := s.links[len(s.links)-1]
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"links":[%s],"head":{"seqno":%d,"id":%q}}`, strings.Join(raw, ","), head.Seqno(), head.ID().String())
}

// A stranger (mal, registered on bob's domain) signs a chain of its own
// for team@<bob's domain> that lists bob, serves it from a server of its
// choosing (here one on the loopback, which the client reaches with the
// HTTP client it keeps for its own servers) and sends bob a group-update
// naming that server. The group's chain lives on the user's own
// sig-server (§10.1): bob must neither ask the stranger's server nor pin
// the fake chain, which would squat the name in his client (the real
// team@ would then look like a fork).
func TestGroupUpdateOwnDomainForeignServer(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	ctx := testCtx(t)
	mal := newPerson(t, st, "mal", 1)
	bob := newPerson(t, st, "bob", 1)
	name := "team@" + st.Domain

	create, err := group.NewCreate(mal.user.Identity, mal.user.Key, name, mal.user.Handle.String(), "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st1, err := group.Verify(ctx, [][]byte{create.Bytes()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	add, err := group.NewLink(mal.user.Identity, mal.user.Key, st1, group.TypeAdd,
		group.AddBody([]group.NewMember{{Key: bob.user.Key, Handle: bob.user.Handle.String(), Role: group.RoleMember}}), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fake := &chainServer{links: []*group.Link{create, add}}
	srv := httptest.NewServer(fake)
	t.Cleanup(srv.Close)

	m := mal.devices[0]
	body := marshalGroupUpdate(groupUpdate{Group: name, Head: add.ID(), Seqno: 2, SigServer: srv.URL})
	sendPairwise(t, m, bob.user.Key, bob.user.Handle.String(), KindGroupUpdate, body)
	// A text after it: once bob has it, the update was handled.
	sendPairwise(t, m, bob.user.Key, bob.user.Handle.String(), KindText, []byte("marker"))
	b := bob.devices[0]
	receiveUntil(t, b, "mal's marker", func(int) bool { return b.Stats().Received > 0 })

	if n := fake.hits.Load(); n != 0 {
		t.Errorf("bob asked the server a stranger named %d times", n)
	}
	gs, err := b.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range gs {
		if g.Name == name {
			t.Fatalf("bob pinned a chain of %s served by a stranger's server: %+v", name, g)
		}
	}
}

// setHeldBounds sets the bounds of held envelopes for one test.
func setHeldBounds(t *testing.T, perGroup, unknown int, bytes int64) {
	g, u, b := maxHeldPerGroup, maxHeldUnknown, maxHeldBytes
	maxHeldPerGroup, maxHeldUnknown, maxHeldBytes = perGroup, unknown, bytes
	t.Cleanup(func() { maxHeldPerGroup, maxHeldUnknown, maxHeldBytes = g, u, b })
}

// heldBy counts the envelopes c holds from device.
func heldBy(t *testing.T, c *testClient, device kez.PublicKey) int {
	t.Helper()
	var n int
	if err := c.db.db.QueryRow(`SELECT count(*) FROM group_held WHERE device = ?`, device.String()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A stranger floods a member's held envelopes: for a group the member is
// in, envelopes of an epoch the chain does not have yet are held before
// anyone checks the sender (the chain is fetched first), and envelopes of
// a group not known yet are held too. A bob envelope held for his key
// must not be pushed out by them (it was: the oldest went first), and the
// held bytes stay within their bound.
func TestGroupHeldFloodKeepsMembers(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	setHeldBounds(t, 4, 4, 6000)
	gs, err := tr.b.pinnedGroup(tr.name)
	if err != nil {
		t.Fatal(err)
	}
	st, _, _ := gs.snapshot()
	var dist []byte
	if err := tr.b.db.write(ctx, func(tx *sql.Tx) error {
		sk, err := tr.b.senderKey(tx, st.ID(), st.Epoch())
		if err == nil {
			dist, err = sk.Distribution().MarshalBinary()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	m := Message{ID: NewMessageID(), SentAt: time.Now().Truncate(time.Millisecond), From: tr.b.Key(), Kind: KindText, Body: []byte("held for my key")}
	env, err := tr.b.sealGroup(ctx, gs, st, &m, []kez.PublicKey{tr.a.DeviceKey()})
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, tr.b, env, tr.a.DeviceKey())
	waitStat(t, tr.a, "bob's message held", func(s Stats) bool { return s.GroupHeld >= 1 })

	mal := newPerson(t, tr.st, "mal", 1)
	md := mal.devices[0]
	var other [32]byte
	other[0] = 7
	for i, gid := range [][32]byte{st.ID(), other} {
		sk, err := session.NewSenderKey(rand.Reader, gid, 99, md.DeviceKey())
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j < 6; j++ {
			env, err := sk.Seal(innerText(strings.Repeat("x", 1000)))
			if err != nil {
				t.Fatal(err)
			}
			sendRaw(t, md, env, tr.a.DeviceKey())
		}
		want := uint64(1 + 6*(i+1))
		waitStat(t, tr.a, "mal's envelopes held", func(s Stats) bool { return s.GroupHeld >= want })
	}
	if n := heldBy(t, tr.a, tr.b.DeviceKey()); n != 1 {
		t.Fatalf("alice holds %d of bob's envelopes after mal's flood, want 1", n)
	}
	var size int64
	if err := tr.a.db.db.QueryRow(`SELECT coalesce(sum(length(envelope)), 0) FROM group_held WHERE gid = ?`, other[:]).Scan(&size); err != nil {
		t.Fatal(err)
	}
	if n := heldBy(t, tr.a, md.DeviceKey()); n > 8 || size > 6000 {
		t.Fatalf("alice holds %d of mal's envelopes, %d bytes of the unknown group", n, size)
	}
	sendPairwise(t, tr.b, tr.alice.user.Key, "alice@"+tr.st.Domain, KindGroupKey, dist)
	waitGroupText(t, tr.a, tr.name, "held for my key")
}

// Carol is removed, alice writes in the gap, and carol is added again:
// carol never reads the gap (no key of its epoch reached her, and the
// envelope was not sent to her), and reads what is sent after she is
// back.
func TestGroupReaddedGap(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	if err := tr.a.RemoveGroupMembers(ctx, "club", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, tr.c, tr.name, func(g *Group) bool { return g.Left })
	mustGroupSend(t, tr.a, tr.name, "in the gap")
	waitGroupText(t, tr.b, tr.name, "in the gap")
	if err := tr.a.AddGroupMembers(ctx, "club", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, tr.c, tr.name, func(g *Group) bool { return !g.Left && g.Epoch == 4 })
	mustGroupSend(t, tr.a, tr.name, "welcome back")
	waitGroupText(t, tr.c, tr.name, "welcome back")
	if got := groupTexts(t, tr.c, tr.name); slices.Contains(got, "in the gap") {
		t.Fatalf("carol, added again, reads the gap: %q", got)
	}
}
