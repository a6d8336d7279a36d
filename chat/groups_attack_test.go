package chat

// Attacks on groups (docs/spec/chat.md §10.4, §10.5): stale epochs,
// non-members, forged and misdirected group keys, replayed envelopes and
// a sig-server that serves a fork of a group's chain.

import (
	"crypto/rand"
	"database/sql"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/group"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/session"
)

// trio is alice (owner), bob and carol in the group club, everyone's
// client pinned at epoch 2.
type trio struct {
	st                *stacktest.Stack
	alice, bob, carol *person
	a, b, c           *testClient
	name              string
}

func newTrio(t *testing.T, o stacktest.Options, opts ...clientOpt) *trio {
	t.Helper()
	st := stacktest.Start(t, o)
	tr := &trio{st: st, name: "club@" + st.Domain}
	tr.alice = newPerson(t, st, "alice", 1, opts...)
	tr.bob = newPerson(t, st, "bob", 1, opts...)
	tr.carol = newPerson(t, st, "carol", 1, opts...)
	tr.a, tr.b, tr.c = tr.alice.devices[0], tr.bob.devices[0], tr.carol.devices[0]
	ctx := testCtx(t)
	if _, err := tr.a.CreateGroup(ctx, "club", ""); err != nil {
		t.Fatal(err)
	}
	if err := tr.a.AddGroupMembers(ctx, "club", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, tr.b, tr.name, func(g *Group) bool { return g.Epoch == 2 })
	waitGroup(t, tr.c, tr.name, func(g *Group) bool { return g.Epoch == 2 })
	mustAccept(t, tr.b, tr.name) // alice is no contact of theirs: an invitation
	mustAccept(t, tr.c, tr.name)
	return tr
}

// senderKeyOf returns c's stored sender key of the group at epoch.
func senderKeyOf(t *testing.T, c *testClient, gid [32]byte, epoch uint64) *session.SenderKey {
	t.Helper()
	var b []byte
	if err := c.db.db.QueryRow(`SELECT state FROM group_skeys WHERE gid = ? AND epoch = ?`, gid[:], epoch).Scan(&b); err != nil {
		t.Fatalf("%s's sender key of epoch %d: %v", c.user.Name, epoch, err)
	}
	sk, err := session.ParseSenderKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return sk
}

// innerText is the inner message of a group text.
func innerText(text string) []byte {
	m := Message{ID: NewMessageID(), SentAt: time.Now().Truncate(time.Millisecond), Kind: KindText, Body: []byte(text)}
	return marshalInnerV2(&m)
}

// sendRaw publishes env, as from's device, to the devices.
func sendRaw(t *testing.T, from *testClient, env []byte, to ...kez.PublicKey) {
	t.Helper()
	ans, err := from.publishMulti(testCtx(t), to, env, NewMessageID().String())
	if err != nil || ans.Stored != len(to) {
		t.Fatalf("%s publishes a group envelope: %+v %v", from.user.Name, ans, err)
	}
}

// sendPairwise sends a message of kind and body from one client to the
// devices of person key (handle), in their sessions.
func sendPairwise(t *testing.T, from *testClient, key kez.PublicKey, handle string, kind Kind, body []byte) {
	t.Helper()
	ts, err := from.memberTargets(testCtx(t), key, handle)
	if err != nil {
		t.Fatal(err)
	}
	p, err := from.publishIn(testCtx(t), ts, Message{Kind: kind, Body: body}, false, false, false, nil)
	if err == nil {
		_, err = p.Wait(testCtx(t))
	}
	if err != nil {
		t.Fatalf("%s sends %s: %v", from.user.Name, kind, err)
	}
}

// waitStat receives on c until cond holds for its counters.
func waitStat(t *testing.T, c *testClient, what string, cond func(Stats) bool) {
	t.Helper()
	receiveUntil(t, c, what, func(int) bool { return cond(c.Stats()) })
}

// A member removed at epoch 3 (carol) is not the attacker here: bob keeps
// his sender key of epoch 2 and, after the removal, seals with it. Alice
// refuses it (ErrStaleEpoch): carol holds that key.
func TestGroupStaleEpochRefused(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	mustGroupSend(t, tr.b, tr.name, "epoch 2")
	waitGroupText(t, tr.a, tr.name, "epoch 2")
	g, err := tr.a.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}
	old := senderKeyOf(t, tr.b, g.ID, 2)
	if err := tr.a.RemoveGroupMembers(ctx, "club", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, tr.b, tr.name, func(g *Group) bool { return g.Epoch == 3 })
	env, err := old.Seal(innerText("stale after the removal"))
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, tr.b, env, tr.a.DeviceKey())
	waitStat(t, tr.a, "a stale group message refused", func(s Stats) bool { return s.GroupStale >= 1 })
	if got := groupTexts(t, tr.a, tr.name); slices.Contains(got, "stale after the removal") {
		t.Fatalf("alice stored %q", got)
	}
	// Bob's new key works.
	mustGroupSend(t, tr.b, tr.name, "epoch 3")
	waitGroupText(t, tr.a, tr.name, "epoch 3")
}

// Eve is no member: she makes a sender key for the group and sends its
// distribution to alice in their session, then a group envelope. Alice
// refuses both (ErrNotGroupMember) and stores nothing.
func TestGroupNonMemberRefused(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	eve := openClient(t, tr.st, tr.st.NewUser(t, "eve"))
	ctx := testCtx(t)
	g, err := tr.a.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := session.NewSenderKey(rand.Reader, g.ID, g.Epoch, eve.DeviceKey())
	if err != nil {
		t.Fatal(err)
	}
	dist, _ := sk.Distribution().MarshalBinary()
	before := tr.a.Stats()
	sendPairwise(t, eve, tr.alice.user.Key, "alice@"+tr.st.Domain, KindGroupKey, dist)
	waitStat(t, tr.a, "eve's group key refused", func(s Stats) bool { return s.GroupKeysRefused > before.GroupKeysRefused })
	env, err := sk.Seal(innerText("from outside"))
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, eve, env, tr.a.DeviceKey())
	waitStat(t, tr.a, "eve's group message refused", func(s Stats) bool { return s.Rejected > before.Rejected })
	if got := groupTexts(t, tr.a, tr.name); len(got) != 0 {
		t.Fatalf("alice stored %q", got)
	}
	var n int
	if err := tr.a.db.db.QueryRow(`SELECT count(*) FROM group_rkeys`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("alice keeps %d receiving keys (%v)", n, err)
	}
}

// Bob sends alice a distribution that names carol's device: refused
// (the session's peer is bob's device). Carol's own key still reads.
// Then bob sends his real distribution again at a later iteration, with
// the same signing key: ignored, so the first message, replayed with
// the same bytes, is a duplicate, never stored twice.
func TestGroupForgedKeyAndReplay(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	rec := startWiretap(t, st)
	tr := &trio{st: st, name: "club@" + st.Domain}
	tr.alice, tr.bob, tr.carol = newPerson(t, st, "alice", 1), newPerson(t, st, "bob", 1, via(rec)), newPerson(t, st, "carol", 1)
	tr.a, tr.b, tr.c = tr.alice.devices[0], tr.bob.devices[0], tr.carol.devices[0]
	ctx := testCtx(t)
	if _, err := tr.a.CreateGroup(ctx, "club", ""); err != nil {
		t.Fatal(err)
	}
	if err := tr.a.AddGroupMembers(ctx, "club", "bob", "carol"); err != nil {
		t.Fatal(err)
	}
	waitGroup(t, tr.b, tr.name, func(g *Group) bool { return g.Epoch == 2 })
	mustAccept(t, tr.b, tr.name)
	g, err := tr.a.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}

	forged, err := session.NewSenderKey(rand.Reader, g.ID, 2, tr.c.DeviceKey())
	if err != nil {
		t.Fatal(err)
	}
	dist, _ := forged.Distribution().MarshalBinary()
	before := tr.a.Stats()
	sendPairwise(t, tr.b, tr.alice.user.Key, "alice@"+st.Domain, KindGroupKey, dist)
	waitStat(t, tr.a, "the misdirected key refused", func(s Stats) bool { return s.GroupKeysRefused > before.GroupKeysRefused })
	env, _ := forged.Seal(innerText("in carol's name"))
	sendRaw(t, tr.b, env, tr.a.DeviceKey())
	waitGroup(t, tr.c, tr.name, func(g *Group) bool { return g.Epoch == 2 })
	mustAccept(t, tr.c, tr.name)
	mustGroupSend(t, tr.c, tr.name, "carol herself")
	waitGroupText(t, tr.a, tr.name, "carol herself")
	if got := groupTexts(t, tr.a, tr.name); slices.Contains(got, "in carol's name") {
		t.Fatalf("alice stored %q", got)
	}

	mustGroupSend(t, tr.b, tr.name, "bob one")
	mustGroupSend(t, tr.b, tr.name, "bob two")
	waitGroupText(t, tr.a, tr.name, "bob two")
	again, _ := senderKeyOf(t, tr.b, g.ID, 2).Distribution().MarshalBinary()
	sendPairwise(t, tr.b, tr.alice.user.Key, "alice@"+st.Domain, KindGroupKey, again)
	var first []byte
	for _, e := range recordedGroup(t, rec) {
		if e.h.Device == tr.b.DeviceKey() && e.h.Iteration == 0 {
			first = e.env
		}
	}
	if first == nil {
		t.Fatal("bob's first group envelope was not recorded")
	}
	dups := tr.a.Stats().Duplicates
	sendRaw(t, tr.b, first, tr.a.DeviceKey())
	waitStat(t, tr.a, "the replay dropped", func(s Stats) bool { return s.Duplicates > dups })
	n := 0
	for _, s := range groupTexts(t, tr.a, tr.name) {
		if s == "bob one" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("alice holds %q %d times", "bob one", n)
	}
}

// forkingSigServer serves, once fork is set, a fork of one group's chain:
// at seqno 2 a title link the owner signed instead of the add the others
// saw.
type forkingSigServer struct {
	fork atomic.Pointer[[]*group.Link] // the chain to serve for the group
}

func (f *forkingSigServer) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := f.fork.Load()
		if p == nil || r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, group.GroupsPath+"/") {
			h.ServeHTTP(w, r)
			return
		}
		links := *p
		since, _ := strconv.Atoi(r.URL.Query().Get("since"))
		var raw []string
		for _, l := range links[min(since, len(links)):] {
			raw = append(raw, string(l.Bytes()))
		}
		head := links[len(links)-1]
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"links":[%s],"head":{"seqno":%d,"id":%q}}`, strings.Join(raw, ","), head.Seqno(), head.ID().String())
	})
}

// A sig-server that shows bob another history of the group (a link at
// seqno 2 signed by the owner, but not the one pinned): bob marks the
// group broken, records a fork event naming both heads, tells the
// application, logs an error, and sends nothing to it any more.
func TestGroupForkWarnsLoudly(t *testing.T) {
	fs := &forkingSigServer{}
	var mu sync.Mutex
	var events []GroupEvent
	tr := newTrio(t, stacktest.Options{WrapSigServer: fs.wrap}, func(c *Config) {
		c.OnGroupEvent = func(e GroupEvent) {
			if e.Event == "fork" {
				mu.Lock()
				events = append(events, e)
				mu.Unlock()
			}
		}
	})
	ctx := testCtx(t)

	links, _, err := group.NewClient(tr.st.SigServerURL, nil).Fetch(ctx, tr.name, 0)
	if err != nil {
		t.Fatal(err)
	}
	st1, err := group.Verify(ctx, links[:1], nil)
	if err != nil {
		t.Fatal(err)
	}
	forked, err := group.NewLink(tr.alice.user.Identity, tr.alice.user.Key, st1, group.TypeTitle, group.TitleBody("another history"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	first, err := group.ParseLink(links[0])
	if err != nil {
		t.Fatal(err)
	}
	fs.fork.Store(&[]*group.Link{first, forked})

	g, err := tr.b.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}
	if !g.Broken || !strings.Contains(g.BrokenDetail, forked.ID().String()) || !strings.Contains(g.BrokenDetail, g.Head.String()) {
		t.Fatalf("bob's group after the fork: %+v", g)
	}
	mu.Lock()
	if len(events) != 1 {
		t.Fatalf("fork events told: %+v", events)
	}
	mu.Unlock()
	evs, err := tr.b.GroupEvents(ctx, tr.name)
	if err != nil || evs[len(evs)-1].Event != "fork" {
		t.Fatalf("recorded events %+v %v", evs, err)
	}
	if !strings.Contains(tr.b.log.String(), "level=ERROR") || !strings.Contains(tr.b.log.String(), "FORK") {
		t.Fatal("bob's log does not warn of the fork")
	}
	if _, err := tr.b.SendGroup(ctx, tr.name, "still there?"); err == nil || !strings.Contains(err.Error(), "forked") {
		t.Fatalf("bob sends to a forked group: %v", err)
	}
}

// A group send whose client stops after it was sealed and stored, before
// it was published, is published when the state folder is next opened:
// the same envelope, received once.
func TestGroupSendRepublishedAfterCrash(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	home := tr.a.cc.Home
	gs, err := tr.a.pinnedGroup(tr.name)
	if err != nil {
		t.Fatal(err)
	}
	st, _, _ := gs.snapshot()
	members := tr.a.groupDevices(ctx, st)
	if err := tr.a.distributeKey(ctx, gs, st, members); err != nil {
		t.Fatal(err)
	}
	m := Message{ID: NewMessageID(), SentAt: time.Now().Truncate(time.Millisecond), From: tr.a.Key(), Kind: KindText, Body: []byte("sealed, then the crash")}
	if _, err := tr.a.sealGroup(ctx, gs, st, &m, []kez.PublicKey{tr.b.DeviceKey(), tr.c.DeviceKey()}); err != nil {
		t.Fatal(err)
	}
	if err := tr.a.Close(); err != nil { // nothing published
		t.Fatal(err)
	}
	a2 := openClientIn(t, tr.st, tr.alice.user, home)
	for _, c := range []*testClient{tr.b, tr.c} {
		waitGroupText(t, c, tr.name, "sealed, then the crash")
	}
	receiveUntil(t, a2, "the outcome", func(int) bool {
		es, _ := a2.GroupHistory(testCtx(t), tr.name, 0)
		return len(es) == 1 && es[0].State == StateSent
	})
	var n int
	if err := a2.db.db.QueryRow(`SELECT count(*) FROM group_outbox`).Scan(&n); err != nil && err != sql.ErrNoRows || n != 0 {
		t.Fatalf("the group outbox holds %d (%v)", n, err)
	}
}

// A group message that arrives before its sender's key is held, not
// refused, and opened once the key comes; one of a newer epoch than the
// receiver pinned makes it fetch the chain first.
func TestGroupHeldUntilKey(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	ctx := testCtx(t)
	gs, err := tr.b.pinnedGroup(tr.name)
	if err != nil {
		t.Fatal(err)
	}
	st, _, _ := gs.snapshot()
	// Bob's key is made, its distribution kept for later.
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
	m := Message{ID: NewMessageID(), SentAt: time.Now().Truncate(time.Millisecond), From: tr.b.Key(), Kind: KindText, Body: []byte("before my key")}
	env, err := tr.b.sealGroup(ctx, gs, st, &m, []kez.PublicKey{tr.a.DeviceKey()})
	if err != nil {
		t.Fatal(err)
	}
	sendRaw(t, tr.b, env, tr.a.DeviceKey())
	waitStat(t, tr.a, "the message held", func(s Stats) bool { return s.GroupHeld >= 1 })
	if got := groupTexts(t, tr.a, tr.name); len(got) != 0 {
		t.Fatalf("alice stored %q without bob's key", got)
	}
	sendPairwise(t, tr.b, tr.alice.user.Key, "alice@"+tr.st.Domain, KindGroupKey, dist)
	waitGroupText(t, tr.a, tr.name, "before my key")

	// Alice adds dave (epoch 3) and writes at once; carol, who has not
	// received since, gets the update, the key and the message together.
	tr.st.NewUser(t, "dave")
	if err := tr.a.AddGroupMembers(ctx, "club", "dave"); err != nil {
		t.Fatal(err)
	}
	mustGroupSend(t, tr.a, tr.name, "epoch 3 already")
	e := waitGroupText(t, tr.c, tr.name, "epoch 3 already")
	if e.From != tr.alice.user.Key {
		t.Fatalf("carol stored %+v", e)
	}
}

// An admin's add link names mallory's key with dave's handle (the adder's
// word): bob's clients show the handle only once it resolves to the key,
// so mallory's messages come with no handle (not dave's), and Group says the handle
// does not check out.
func TestGroupLyingHandle(t *testing.T) {
	tr := newTrio(t, stacktest.Options{})
	mal := openClient(t, tr.st, tr.st.NewUser(t, "mallory"))
	tr.st.NewUser(t, "dave") // the handle the lie names is real
	ctx := testCtx(t)
	links, _, err := group.NewClient(tr.st.SigServerURL, nil).Fetch(ctx, tr.name, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := group.Verify(ctx, links, nil)
	if err != nil {
		t.Fatal(err)
	}
	lie := group.AddBody([]group.NewMember{{Key: mal.Key(), Handle: "dave@" + tr.st.Domain, Role: group.RoleMember}})
	l, err := group.NewLink(tr.alice.user.Identity, tr.alice.user.Key, st, group.TypeAdd, lie, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := group.NewClient(tr.st.SigServerURL, nil).Append(ctx, l); err != nil {
		t.Fatal(err)
	}
	g, err := tr.c.Group(ctx, tr.name)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range g.Members {
		if m.HandleChecked != (m.Key != mal.Key()) {
			t.Errorf("member %s %s: checked %v", m.Handle, m.Key, m.HandleChecked)
		}
	}
	// Mallory learns of the group the way a member does and writes.
	u := groupUpdate{Group: tr.name, Head: l.ID(), Seqno: l.Seqno(), SigServer: tr.st.SigServerURL}
	if err := mal.joinGroup(ctx, u, false); err != nil {
		t.Fatal(err)
	}
	mustAccept(t, mal, tr.name)
	mustGroupSend(t, mal, tr.name, "trust me, I am dave")
	e := waitGroupText(t, tr.c, tr.name, "trust me, I am dave")
	if e.From != mal.Key() || e.PeerHandle != "" {
		t.Fatalf("carol stored %+v", e)
	}
}
