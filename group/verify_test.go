package group

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
)

// team is a chain where alice owns, bob is an admin and carol, dave are
// members.
func team(t testing.TB, c *cast) *chain {
	t.Helper()
	ch := newChain(t, c.alice, "Team")
	ak := c.alice.PublicKey()
	ms := members(c.bob, c.carol, c.dave)
	ms[0].Role = RoleAdmin
	ch.add(c.alice, ak, TypeAdd, AddBody(ms))
	return ch
}

func TestVerifyRoles(t *testing.T) {
	c := newCast(t)
	ak, bk, ck, dk, mk := c.alice.PublicKey(), c.bob.PublicKey(), c.carol.PublicKey(), c.dave.PublicKey(), c.mal.PublicKey()
	malM := members(c.mal)
	malAdmin := members(c.mal)
	malAdmin[0].Role = RoleAdmin
	cases := []struct {
		name   string
		signer *kez.Identity
		typ    string
		body   []byte
		want   error // nil: allowed
	}{
		{"owner adds a member", c.alice, TypeAdd, AddBody(malM), nil},
		{"owner adds an admin", c.alice, TypeAdd, AddBody(malAdmin), nil},
		{"admin adds a member", c.bob, TypeAdd, AddBody(malM), nil},
		{"admin adds an admin", c.bob, TypeAdd, AddBody(malAdmin), ErrNotAllowed},
		{"member adds", c.carol, TypeAdd, AddBody(malM), ErrNotAllowed},
		{"outsider adds", c.mal, TypeAdd, AddBody(malM), ErrNotMember},
		{"owner adds a member again", c.alice, TypeAdd, AddBody(members(c.carol)), ErrAlreadyMember},
		{"owner adds itself", c.alice, TypeAdd, AddBody(members(c.alice)), ErrAlreadyMember},
		{"owner removes an admin", c.alice, TypeRemove, RemoveBody(bk), nil},
		{"owner removes two", c.alice, TypeRemove, RemoveBody(ck, dk), nil},
		{"owner removes itself and a member", c.alice, TypeRemove, RemoveBody(ak, ck), ErrNotAllowed},
		{"owner leaves", c.alice, TypeRemove, RemoveBody(ak), ErrNotAllowed},
		{"admin removes a member", c.bob, TypeRemove, RemoveBody(ck), nil},
		{"admin removes the owner", c.bob, TypeRemove, RemoveBody(ak), ErrNotAllowed},
		{"admin leaves", c.bob, TypeRemove, RemoveBody(bk), nil},
		{"admin removes itself and a member", c.bob, TypeRemove, RemoveBody(bk, ck), ErrNotAllowed},
		{"member leaves", c.carol, TypeRemove, RemoveBody(ck), nil},
		{"member removes another", c.carol, TypeRemove, RemoveBody(dk), ErrNotAllowed},
		{"member removes itself and another", c.carol, TypeRemove, RemoveBody(ck, dk), ErrNotAllowed},
		{"remove an outsider", c.alice, TypeRemove, RemoveBody(mk), ErrNotMember},
		{"outsider leaves", c.mal, TypeRemove, RemoveBody(mk), ErrNotMember},
		{"owner makes a member admin", c.alice, TypeRole, RoleBody(ck, RoleAdmin), nil},
		{"owner makes an admin member", c.alice, TypeRole, RoleBody(bk, RoleMember), nil},
		{"owner transfers", c.alice, TypeRole, RoleBody(ck, RoleOwner), nil},
		{"owner demotes itself", c.alice, TypeRole, RoleBody(ak, RoleAdmin), ErrNotAllowed},
		{"owner gives the same role", c.alice, TypeRole, RoleBody(ck, RoleMember), ErrAlreadyMember},
		{"owner sets an outsider's role", c.alice, TypeRole, RoleBody(mk, RoleAdmin), ErrNotMember},
		{"admin changes a role", c.bob, TypeRole, RoleBody(ck, RoleAdmin), ErrNotAllowed},
		{"admin takes ownership", c.bob, TypeRole, RoleBody(bk, RoleOwner), ErrNotAllowed},
		{"owner renames", c.alice, TypeTitle, TitleBody("New"), nil},
		{"admin renames", c.bob, TypeTitle, TitleBody("New"), nil},
		{"admin clears the title", c.bob, TypeTitle, TitleBody(""), nil},
		{"member renames", c.carol, TypeTitle, TitleBody("New"), ErrNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch := team(t, c)
			by := tc.signer.PublicKey()
			// NewLink refuses to sign what breaks a rule …
			_, err := ch.try(tc.signer, by, tc.typ, tc.body)
			if tc.want == nil && err != nil || tc.want != nil && (!errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid)) {
				t.Fatalf("NewLink: %v, want %v", err, tc.want)
			}
			// … and a verifier refuses the same link signed anyway.
			b := ch.next(tc.signer, by, tc.typ, tc.body)
			_, err = Verify(context.Background(), append(ch.links, b), nil, fixedClock(vectorNow))
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
			var le *LinkError
			if tc.want != nil && (!errors.As(err, &le) || le.Seqno != 3 || le.Index != 2) {
				t.Fatalf("Verify: %#v, want a LinkError at seqno 3, index 2", err)
			}
		})
	}
}

func TestStateAccessors(t *testing.T) {
	c := newCast(t)
	ak, bk, ck, dk := c.alice.PublicKey(), c.bob.PublicKey(), c.carol.PublicKey(), c.dave.PublicKey()
	ch := team(t, c) // 1 create, 2 add
	st2 := ch.st
	ch.add(c.alice, ak, TypeTitle, TitleBody("Renamed"))   // 3
	ch.add(c.bob, bk, TypeRemove, RemoveBody(ck))          // 4
	ch.add(c.dave, dk, TypeRemove, RemoveBody(dk))         // 5: dave leaves
	ch.add(c.alice, ak, TypeRole, RoleBody(bk, RoleOwner)) // 6: bob owns, alice admin
	ch.add(c.bob, bk, TypeAdd, AddBody(members(c.carol)))  // 7: carol again
	st := ch.st
	if st.Name() != testGroup || st.Title() != "Renamed" || st.Seqno() != 7 || st.Epoch() != 7 || st.Owner() != bk {
		t.Fatalf("state %s %q seqno %d epoch %d owner %s", st.Name(), st.Title(), st.Seqno(), st.Epoch(), st.Owner())
	}
	first, _ := ParseLink(ch.links[0])
	if d, _ := digestOf(first.ID()); st.ID() != d || st2.ID() != d {
		t.Fatal("ID is not the create link's digest")
	}
	if got := keysOf(st.Members()); got != keysOf([]Member{{Key: ak, Role: RoleAdmin}, {Key: bk, Role: RoleOwner}, {Key: ck, Role: RoleMember}}) {
		t.Fatalf("members %s", got)
	}
	if m, ok := st.Member(ck); !ok || m.Since != 7 || m.Handle != "carol@kez.lat" {
		t.Fatalf("carol %+v %v", m, ok)
	}
	if _, ok := st.Member(dk); ok {
		t.Fatal("dave is still a member")
	}
	if got := st.Removed(); !slices.Equal(got, []kez.PublicKey{dk}) {
		t.Fatalf("removed %v", got)
	}
	for seqno, want := range map[uint64]uint64{1: 1, 2: 2, 3: 2, 4: 4, 5: 5, 6: 5, 7: 7} {
		if got, ok := st.EpochOf(seqno); !ok || got != want {
			t.Fatalf("EpochOf(%d) = %d, %v, want %d", seqno, got, ok, want)
		}
	}
	if _, ok := st.EpochOf(8); ok {
		t.Fatal("EpochOf past the head")
	}
	if !st.RemovalSince(2) || !st.RemovalSince(4) || st.RemovalSince(5) || st.RemovalSince(7) {
		t.Fatal("RemovalSince")
	}
	// The old state is unchanged by the links that followed it.
	if st2.Seqno() != 2 || len(st2.Members()) != 4 || st2.Owner() != ak || len(st2.Removed()) != 0 || st2.Title() != "Team" {
		t.Fatalf("old state changed: %s", keysOf(st2.Members()))
	}
	if st.Ctime() != time.Unix(ch.ctime-60, 0).UTC() {
		t.Fatalf("ctime %v", st.Ctime())
	}
}

func TestRemovedAdminSignsLater(t *testing.T) {
	c := newCast(t)
	ak, bk := c.alice.PublicKey(), c.bob.PublicKey()
	ch := team(t, c)
	ch.add(c.alice, ak, TypeRemove, RemoveBody(bk))
	for _, typ := range []string{TypeAdd, TypeTitle} {
		body := AddBody(members(c.mal))
		if typ == TypeTitle {
			body = TitleBody("mine")
		}
		_, err := Verify(context.Background(), append(ch.links, ch.next(c.bob, bk, typ, body)), nil, fixedClock(vectorNow))
		if !errors.Is(err, ErrNotMember) {
			t.Fatalf("%s by a removed admin: %v", typ, err)
		}
	}
}

func TestVerifyChainRules(t *testing.T) {
	c := newCast(t)
	a, ak := c.alice, c.alice.PublicKey()
	ch := team(t, c)
	create, add := ch.links[0], ch.links[1]
	head := ch.st.head
	var zero [32]byte
	bgp := context.Background()
	cases := []struct {
		name  string
		links [][]byte
		want  error
	}{
		{"empty", nil, ErrBrokenChain},
		{"no create", [][]byte{add}, ErrBrokenChain},
		{"create twice", [][]byte{create, create}, ErrBrokenChain},
		{"create at seqno 2", [][]byte{create, rawLink(t, a, testGroup, 2, &head, ch.ctime, ak, TypeCreate, createBody("alice@kez.lat", ""))}, ErrBrokenChain},
		{"create with prev", [][]byte{rawLink(t, a, testGroup, 1, &zero, ch.ctime, ak, TypeCreate, createBody("alice@kez.lat", ""))}, ErrBrokenChain},
		{"create at seqno 3", [][]byte{rawLink(t, a, testGroup, 3, nil, ch.ctime, ak, TypeCreate, createBody("alice@kez.lat", ""))}, ErrBrokenChain},
		{"seqno gap", [][]byte{create, add, rawLink(t, a, testGroup, 4, &head, ch.ctime, ak, TypeTitle, TitleBody("x"))}, ErrBrokenChain},
		{"prev mismatch", [][]byte{create, add, rawLink(t, a, testGroup, 3, &zero, ch.ctime, ak, TypeTitle, TitleBody("x"))}, ErrBrokenChain},
		{"another group's link", [][]byte{create, add, rawLink(t, a, "others@kez.lat", 3, &head, ch.ctime, ak, TypeTitle, TitleBody("x"))}, ErrBrokenChain},
		{"ctime goes back", [][]byte{create, add, rawLink(t, a, testGroup, 3, &head, vectorNow-7200, ak, TypeTitle, TitleBody("x"))}, ErrBadCtime},
		{"ctime in the future", [][]byte{create, add, rawLink(t, a, testGroup, 3, &head, vectorNow+601, ak, TypeTitle, TitleBody("x"))}, ErrBadCtime},
		{"garbage", [][]byte{create, []byte("{")}, ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verify(bgp, tc.links, nil, fixedClock(vectorNow))
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Verify: %v, want %v", err, tc.want)
			}
		})
	}
	// Exactly at the future limit is fine.
	ok := rawLink(t, a, testGroup, 3, &head, vectorNow+600, ak, TypeTitle, TitleBody("x"))
	if _, err := Verify(bgp, [][]byte{create, add, ok}, nil, fixedClock(vectorNow)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(bgp)
	cancel()
	if _, err := Verify(ctx, ch.links, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestTooManyMembers(t *testing.T) {
	c := newCast(t)
	ak := c.alice.PublicKey()
	ch := newChain(t, c.alice, "")
	n := 1
	for n < MaxMembers {
		var ms []NewMember
		for ; len(ms) < MaxMembersPerLink && n < MaxMembers; n++ {
			ms = append(ms, NewMember{Key: memberKey(t, n), Handle: fmt.Sprintf("m%d@kez.lat", n), Role: RoleMember})
		}
		ch.add(c.alice, ak, TypeAdd, AddBody(ms))
	}
	if len(ch.st.Members()) != MaxMembers {
		t.Fatalf("%d members", len(ch.st.Members()))
	}
	_, err := ch.try(c.alice, ak, TypeAdd, AddBody(members(c.mal)))
	if !errors.Is(err, ErrTooManyMembers) {
		t.Fatalf("1025th member: %v", err)
	}
	// After one leaves, there is room again.
	ch.add(c.alice, ak, TypeRemove, RemoveBody(memberKey(t, 1)))
	ch.add(c.alice, ak, TypeAdd, AddBody(members(c.mal)))
}

func TestExtendAndPins(t *testing.T) {
	c := newCast(t)
	ak := c.alice.PublicKey()
	bgp := context.Background()
	ch := team(t, c)
	pin2 := ch.st.Pin()
	st2 := ch.st
	ch.add(c.alice, ak, TypeTitle, TitleBody("A"))
	ch.add(c.alice, ak, TypeTitle, TitleBody("B"))
	full := ch.st

	// Extending from seqno 2 with links from 1 (what a client fetches
	// since its pin) skips what it has.
	for from := range 3 {
		st, err := st2.Extend(bgp, ch.links[from:], nil, fixedClock(vectorNow))
		if err != nil || st.Head() != full.Head() {
			t.Fatalf("from %d: %v", from, err)
		}
		if err := st.CheckPin(pin2); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing new: the same state.
	if st, err := full.Extend(bgp, nil, nil); err != nil || st.Seqno() != 4 {
		t.Fatal(err)
	}

	// A fork: the server replaces link 3.
	fork := newChain(t, c.alice, "Team")
	fork.links, fork.st = slices.Clone(ch.links[:2]), st2
	fork.ctime = ch.ctime
	fork.add(c.alice, ak, TypeTitle, TitleBody("Other"))
	forked := fork.st
	if _, err := full.Extend(bgp, fork.links[2:], nil, fixedClock(vectorNow)); !errors.Is(err, ErrFork) {
		t.Fatalf("Extend with another link 3: %v", err)
	}
	if err := forked.CheckPin(full.Pin()); !errors.Is(err, ErrRollback) {
		t.Fatalf("shorter chain: %v", err)
	}
	pin3 := full.Pin()
	pin3.Seqno, pin3.Head = 3, mustLink(t, ch.links[2]).ID()
	if err := forked.CheckPin(pin3); !errors.Is(err, ErrFork) {
		t.Fatalf("other link 3: %v", err)
	}
	// Another group under the same name (recreated on the server).
	other := newChain(t, c.alice, "Team again")
	if err := other.st.CheckPin(pin2); !errors.Is(err, ErrFork) {
		t.Fatalf("recreated group: %v", err)
	}
	if err := full.CheckPin(Pin{Group: testGroup, ID: full.ID()}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pin at seqno 0: %v", err)
	}

	// The pin's JSON round trip.
	js, err := pin3.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back Pin
	if err := back.UnmarshalJSON(js); err != nil || back != pin3 {
		t.Fatalf("pin %s: %+v %v", js, back, err)
	}
	for _, bad := range []string{`{"group":"a@b","id":"00","seqno":1,"head":"` + pin3.Head.String() + `"}`,
		`{"group":"a@b","id":"` + fmt.Sprintf("%064x", 1) + `","seqno":1,"head":"bafy"}`, `[]`} {
		if err := back.UnmarshalJSON([]byte(bad)); err == nil {
			t.Fatalf("pin %s accepted", bad)
		}
	}
}

func mustLink(t *testing.T, b []byte) *Link {
	t.Helper()
	l, err := ParseLink(b)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestDeviceRule checks links signed by a device key: the checker decides,
// a refusal is ErrDeviceNotAllowed, and a checker that cannot answer stops
// verification without calling the chain invalid.
func TestDeviceRule(t *testing.T) {
	c := newCast(t)
	ak, dev := c.alice.PublicKey(), c.aliceDev.PublicKey()
	ch := team(t, c)
	b := ch.next(c.aliceDev, ak, TypeTitle, TitleBody("by device"))
	links := append(ch.links, b)
	bgp := context.Background()
	var calls []string
	onlyDev := func(_ context.Context, person, device kez.PublicKey, at time.Time) error {
		calls = append(calls, fmt.Sprint(person == ak, device == dev, at.Unix() == ch.ctime))
		if device != dev {
			return ErrDeviceNotAllowed
		}
		return nil
	}
	if _, err := Verify(bgp, links, onlyDev, fixedClock(vectorNow)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(calls, []string{"true true true"}) {
		t.Fatalf("checker calls %v", calls)
	}
	// No checker: refused.
	if _, err := Verify(bgp, links, nil, fixedClock(vectorNow)); !errors.Is(err, ErrDeviceNotAllowed) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("nil checker: %v", err)
	}
	// mal's key claiming to be alice's device.
	forged := append(ch.links, ch.next(c.mal, ak, TypeTitle, TitleBody("forged")))
	if _, err := Verify(bgp, forged, onlyDev, fixedClock(vectorNow)); !errors.Is(err, ErrDeviceNotAllowed) {
		t.Fatalf("forged device: %v", err)
	}
	// A checker that cannot answer.
	down := errors.New("sig-server unreachable")
	_, err := Verify(bgp, links, func(context.Context, kez.PublicKey, kez.PublicKey, time.Time) error { return down }, fixedClock(vectorNow))
	if !errors.Is(err, down) || errors.Is(err, ErrInvalid) {
		t.Fatalf("checker failure: %v", err)
	}
	// The role rules come before the device rule: a member's device
	// cannot add anyone, and the checker is not asked.
	calls = nil
	bad := append(ch.links, ch.next(c.aliceDev, c.carol.PublicKey(), TypeAdd, AddBody(members(c.mal))))
	if _, err := Verify(bgp, bad, onlyDev, fixedClock(vectorNow)); !errors.Is(err, ErrNotAllowed) || len(calls) != 0 {
		t.Fatalf("member's device adds: %v, calls %v", err, calls)
	}
	// NewLink signs with a device without asking (the caller knows its devices).
	if _, err := ch.try(c.aliceDev, ak, TypeTitle, TitleBody("ok")); err != nil {
		t.Fatal(err)
	}
}

func TestNewCreateChecks(t *testing.T) {
	c := newCast(t)
	ak := c.alice.PublicKey()
	now := time.Unix(vectorNow, 0)
	for _, tc := range []struct{ name, handle, title string }{
		{"Friends@kez.lat", "alice@kez.lat", ""},
		{"friends", "alice@kez.lat", ""},
		{"friends@kez.lat", "alice@other.example", ""},
		{"friends@kez.lat", "alice@kez.lat", "tab\there"},
		{"friends@kez.lat", "alice@kez.lat", string([]byte{0xff})},
	} {
		if _, err := NewCreate(c.alice, ak, tc.name, tc.handle, tc.title, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("NewCreate(%q, %q, %q): %v", tc.name, tc.handle, tc.title, err)
		}
	}
	if _, err := NewCreate(c.alice, ak, "friends@kez.lat", "alice@kez.lat", "Ünïcode ☺", time.Unix(-1, 0)); err == nil {
		t.Error("negative time accepted")
	}
	l, err := NewCreate(c.alice, ak, "dev@127.0.0.1:4222", "alice@127.0.0.1:4222", "Ünïcode ☺", now)
	if err != nil {
		t.Fatal(err)
	}
	st, err := Verify(context.Background(), [][]byte{l.Bytes()}, nil)
	if err != nil || st.Title() != "Ünïcode ☺" || st.Name() != "dev@127.0.0.1:4222" {
		t.Fatal(err)
	}
	if _, err := NewLink(c.alice, ak, nil, TypeTitle, TitleBody("x"), now); err == nil {
		t.Error("NewLink without a state")
	}
	if _, err := NewLink(c.alice, ak, st, TypeTitle, []byte(`{"title": "spaced"}`), now); err != nil {
		t.Errorf("NewLink canonicalizes its body: %v", err)
	}
	if _, err := NewLink(c.alice, ak, st, TypeTitle, []byte(`{"title":1.5}`), now); err == nil {
		t.Error("NewLink accepted a float body")
	}
}
