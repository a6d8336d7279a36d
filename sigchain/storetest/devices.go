package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// runDevices runs the device index's and the link requests' part of the
// contract, for a store that is a [sigchain.DeviceStore] and a
// [sigchain.LinkRequestStore].
func runDevices(t *testing.T, open Open) {
	t.Run("DeviceIndex", func(t *testing.T) { testDeviceIndex(t, open) })
	t.Run("DeviceRace", func(t *testing.T) { testDeviceRace(t, open) })
	t.Run("DeviceOrphan", func(t *testing.T) { testDeviceOrphan(t, open) })
	t.Run("LinkRequestStore", func(t *testing.T) { testLinkRequestStore(t, open) })
	t.Run("LinkAPI", func(t *testing.T) { testLinkAPI(t, open) })
	t.Run("LinkAbuse", func(t *testing.T) { testLinkAbuse(t, open) })
	t.Run("LinkFloods", func(t *testing.T) { testLinkFloods(t, open) })
	t.Run("DeviceAppendAbuse", func(t *testing.T) { testDeviceAppendAbuse(t, open) })
	t.Run("DevicePrekeys", func(t *testing.T) { testDevicePrekeys(t, open) })
	t.Run("DeviceReplay", func(t *testing.T) { testDeviceReplay(t, open) })
	t.Run("DeviceOwnChain", func(t *testing.T) { testDeviceOwnChain(t, open) })
}

// deviceStore returns s as a DeviceStore or skips the test: the
// interface is optional (sigchain.NewHandler serves chains over a store
// without it and answers 501 on the device routes), so a store that does
// not keep the index has nothing here to pass or fail.
func deviceStore(t *testing.T, s sigchain.Store) sigchain.DeviceStore {
	t.Helper()
	ds, ok := s.(sigchain.DeviceStore)
	if !ok {
		t.Skip("the store keeps no device index")
	}
	return ds
}

// linkStore returns s as a LinkRequestStore or skips the test: like
// DeviceStore, the interface is optional.
func linkStore(t *testing.T, s sigchain.Store) sigchain.LinkRequestStore {
	t.Helper()
	ls, ok := s.(sigchain.LinkRequestStore)
	if !ok {
		t.Skip("the store keeps no link requests")
	}
	return ls
}

// Person is a chain under construction for tests: an identity and the
// verified state of the links made so far.
type Person struct {
	ID    *kez.Identity    // the chain's key
	State *sigchain.State  // the verified state after Links
	Links []*sigchain.Link // the links made so far, in order
}

// NewPerson makes the eldest link of id's chain (naming handle, which
// may be empty) at now.
func NewPerson(t testing.TB, id *kez.Identity, handle string, now time.Time) *Person {
	t.Helper()
	p := &Person{ID: id}
	p.Next(t, sigchain.TypeEldest, eldest(id, handle), now)
	return p
}

// Next makes, verifies and returns the chain's next link, and keeps it.
func (p *Person) Next(t testing.TB, typ string, body []byte, now time.Time) *sigchain.Link {
	t.Helper()
	l, st := p.make(t, typ, body, now)
	p.State = st
	p.Links = append(p.Links, l)
	return l
}

func (p *Person) make(t testing.TB, typ string, body []byte, now time.Time) (*sigchain.Link, *sigchain.State) {
	t.Helper()
	l, err := sigchain.NewLink(p.ID, p.State, typ, body, now)
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.State.Extend([]*sigchain.Link{l}, sigchain.WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	return l, st
}

// TryAddDevice makes a valid link that adds dev to the chain at now,
// without keeping it: the chain goes on as if it was never made.
func (p *Person) TryAddDevice(t testing.TB, dev *kez.Identity, now time.Time) *sigchain.Link {
	t.Helper()
	l, _ := p.make(t, sigchain.TypeAddDevice, sigchain.AddDeviceBody(LinkRequest(t, dev, "laptop", now)), now)
	return l
}

// LinkRequest makes dev's link request named name at now.
func LinkRequest(t testing.TB, dev *kez.Identity, name string, now time.Time) *sigchain.LinkRequest {
	t.Helper()
	req, err := sigchain.NewLinkRequest(dev, name, now)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// AddDevice makes the link that adds dev (through a fresh request) to
// the chain at now.
func (p *Person) AddDevice(t testing.TB, dev *kez.Identity, now time.Time) *sigchain.Link {
	t.Helper()
	return p.Next(t, sigchain.TypeAddDevice, sigchain.AddDeviceBody(LinkRequest(t, dev, "laptop", now)), now)
}

// RevokeDevice makes the link that revokes dev at now.
func (p *Person) RevokeDevice(t testing.TB, dev kez.PublicKey, now time.Time) *sigchain.Link {
	t.Helper()
	return p.Next(t, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(dev), now)
}

func wantDevice(t *testing.T, what string, ds sigchain.DeviceStore, d kez.PublicKey, person *kez.Identity, revoked bool) {
	t.Helper()
	e, err := ds.Device(context.Background(), d)
	if person == nil {
		if !errors.Is(err, sigchain.ErrNoDevice) {
			t.Fatalf("%s: Device = %+v, %v; want ErrNoDevice", what, e, err)
		}
		return
	}
	if err != nil || e.Person != person.PublicKey() || e.Revoked != revoked {
		t.Fatalf("%s: Device = %+v, %v; want person %s revoked %v", what, e, err, person.PublicKey(), revoked)
	}
}

func wantHead(t *testing.T, what string, s sigchain.Store, key kez.PublicKey, want *sigchain.Link) {
	t.Helper()
	h, err := s.Head(context.Background(), key)
	if err != nil || h != head(want) {
		t.Fatalf("%s: head %+v, %v; want seqno %d", what, h, err, want.Seqno())
	}
}

// testDeviceIndex: appends keep the index; a device another chain holds
// is refused with nothing stored; a revocation marks the device and
// deletes its prekey, also for the chain's own key; another handle sees
// the same.
func testDeviceIndex(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	ds := deviceStore(t, s)
	ps := prekeyStore(t, s)
	now := time.Now()
	alice, bob := NewPerson(t, Identity(t, 1), "alice@kez.lat", now), NewPerson(t, Identity(t, 2), "bob@kez.lat", now)
	d1, d2 := Identity(t, 11), Identity(t, 12)
	appendAll(t, s, alice.Links)
	appendAll(t, s, bob.Links)
	wantDevice(t, "before any add", ds, d1.PublicKey(), nil, false)

	appendAll(t, s, []*sigchain.Link{alice.AddDevice(t, d1, now), alice.AddDevice(t, d2, now)})
	wantDevice(t, "added", ds, d1.PublicKey(), alice.ID, false)
	wantDevice(t, "added second", ds, d2.PublicKey(), alice.ID, false)
	wantDevice(t, "the chain's own key", ds, alice.ID.PublicKey(), nil, false)

	// Bob's chain adding alice's device (the device signed a request for
	// him too) is refused, and his chain stays as it was.
	steal := bob.TryAddDevice(t, d1, now)
	if err := s.Append(ctx, steal); !errors.Is(err, sigchain.ErrDeviceKnown) {
		t.Fatalf("adding a device of another chain: %v, want ErrDeviceKnown", err)
	}
	wantHead(t, "bob after the refused add", s, bob.ID.PublicKey(), bob.Links[0])
	wantDevice(t, "after the refused add", ds, d1.PublicKey(), alice.ID, false)

	// Prekeys: a current device publishes; a revocation deletes and
	// refuses.
	p1 := Prekey(t, d1, 1, now, time.Hour)
	if err := ps.PutPrekey(ctx, p1); err != nil {
		t.Fatalf("a current device's prekey: %v", err)
	}
	wantStored(t, "a current device's", ps, d1.PublicKey(), p1)
	appendAll(t, s, []*sigchain.Link{alice.RevokeDevice(t, d1.PublicKey(), now)})
	wantDevice(t, "revoked", ds, d1.PublicKey(), alice.ID, true)
	wantStored(t, "a revoked device's", ps, d1.PublicKey(), nil)
	if err := ps.PutPrekey(ctx, Prekey(t, d1, 2, now.Add(time.Second), time.Hour)); !errors.Is(err, sigchain.ErrDeviceRevoked) {
		t.Fatalf("a revoked device's prekey: %v, want ErrDeviceRevoked", err)
	}
	wantStored(t, "a revoked device's, refused", ps, d1.PublicKey(), nil)

	// The chain's own key revoked as a device: its prekey goes too.
	pa := Prekey(t, alice.ID, 1, now, time.Hour)
	if err := ps.PutPrekey(ctx, pa); err != nil {
		t.Fatal(err)
	}
	appendAll(t, s, []*sigchain.Link{alice.RevokeDevice(t, alice.ID.PublicKey(), now)})
	wantDevice(t, "the primary revoked", ds, alice.ID.PublicKey(), alice.ID, true)
	wantStored(t, "the revoked primary's", ps, alice.ID.PublicKey(), nil)
	if err := ps.PutPrekey(ctx, Prekey(t, alice.ID, 2, now.Add(time.Second), time.Hour)); !errors.Is(err, sigchain.ErrDeviceRevoked) {
		t.Fatalf("the revoked primary's prekey: %v, want ErrDeviceRevoked", err)
	}
	p2 := Prekey(t, d2, 1, now, time.Hour)
	if err := ps.PutPrekey(ctx, p2); err != nil {
		t.Fatalf("the remaining device's prekey: %v", err)
	}

	// A revoked device is never added again, to any chain.
	if err := s.Append(ctx, bob.TryAddDevice(t, d1, now)); !errors.Is(err, sigchain.ErrDeviceKnown) {
		t.Fatalf("re-adding a revoked device elsewhere: %v, want ErrDeviceKnown", err)
	}
	ds2 := deviceStore(t, another())
	wantDevice(t, "through another handle", ds2, d1.PublicKey(), alice.ID, true)
	wantDevice(t, "through another handle", ds2, d2.PublicKey(), alice.ID, false)
}

// testDeviceRace adds one device to two chains at once through two
// handles: exactly one add is stored and the index names its chain.
func testDeviceRace(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	ds := deviceStore(t, s)
	s2 := another()
	now := time.Now()
	const n = 4
	people := make([]*Person, n)
	adds := make([]*sigchain.Link, n)
	dev := Identity(t, 20)
	for i := range people {
		people[i] = NewPerson(t, Identity(t, 30+i), fmt.Sprintf("p%d@kez.lat", i), now)
		appendAll(t, s, people[i].Links)
		adds[i] = people[i].AddDevice(t, dev, now)
	}
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, l := range adds {
		st := s
		if i%2 == 1 {
			st = s2
		}
		wg.Go(func() { <-start; errs[i] = st.Append(ctx, l) })
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("adds %d and %d both stored", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, sigchain.ErrDeviceKnown):
			t.Fatalf("add %d: %v, want ErrDeviceKnown", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no add was stored")
	}
	wantDevice(t, "after the race", ds, dev.PublicKey(), people[winner].ID, false)
	for i, p := range people {
		want := p.Links[0]
		if i == winner {
			want = adds[i]
		}
		wantHead(t, fmt.Sprintf("chain %d", i), s, p.ID.PublicKey(), want)
	}
}

// testDeviceOrphan: collecting an orphan chain removes its devices from
// the index, with their prekeys, and the device may then join another
// chain; a kept chain keeps its devices.
func testDeviceOrphan(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	ds := deviceStore(t, s)
	ps := prekeyStore(t, s)
	c := collector(t, s)
	now := time.Now()
	orphan, named := NewPerson(t, Identity(t, 1), "", now), NewPerson(t, Identity(t, 2), "named@kez.lat", now)
	od, nd := Identity(t, 11), Identity(t, 12)
	orphan.AddDevice(t, od, now)
	orphan.RevokeDevice(t, orphan.ID.PublicKey(), now)
	named.AddDevice(t, nd, now)
	appendAll(t, s, orphan.Links)
	appendAll(t, s, named.Links)
	for _, d := range []*kez.Identity{od, nd} {
		if err := ps.PutPrekey(ctx, Prekey(t, d, 1, now, time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := c.CollectOrphans(ctx, now.Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("collected %d, %v", n, err)
	}
	wantDevice(t, "the collected chain's device", ds, od.PublicKey(), nil, false)
	wantDevice(t, "the collected chain's revoked primary", ds, orphan.ID.PublicKey(), nil, false)
	wantStored(t, "the collected chain's device", ps, od.PublicKey(), nil)
	wantDevice(t, "the kept chain's device", ds, nd.PublicKey(), named.ID, false)
	if err := ps.PutPrekey(ctx, Prekey(t, od, 2, now.Add(time.Second), time.Hour)); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("a prekey of the collected chain's device: %v, want ErrNotFound", err)
	}
	other := NewPerson(t, Identity(t, 3), "other@kez.lat", now)
	other.AddDevice(t, od, now)
	appendAll(t, s, other.Links)
	wantDevice(t, "the device on its new chain", ds, od.PublicKey(), other.ID, false)
}

// testLinkRequestStore: a request is stored once under its code; the
// cap counts requests not expired; a sweep deletes the expired ones
// (where the store keeps them until swept).
func testLinkRequestStore(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	ls := linkStore(t, s)
	now := time.Now()
	r1, r2, r3 := LinkRequest(t, Identity(t, 11), "a", now), LinkRequest(t, Identity(t, 12), "b", now), LinkRequest(t, Identity(t, 13), "c", now)
	if _, err := ls.LinkRequest(ctx, r1.Code()); !errors.Is(err, sigchain.ErrNoLinkRequest) {
		t.Fatalf("an unknown code: %v", err)
	}
	for i, c := range []struct {
		req     *sigchain.LinkRequest
		max     int
		created bool
		err     error
	}{
		{r1, 2, true, nil},
		{r1, 2, false, nil}, // the same again
		{r2, 2, true, nil},
		{r3, 2, false, sigchain.ErrLinkRequestsFull},
		{r1, 2, false, nil}, // the same again, also at the cap
		{r3, -1, true, nil}, // no cap
	} {
		created, err := ls.PutLinkRequest(ctx, c.req, now, c.max)
		if created != c.created || !errors.Is(err, c.err) || (c.err == nil) != (err == nil) {
			t.Fatalf("put %d: %v, %v; want %v, %v", i, created, err, c.created, c.err)
		}
	}
	ls2 := linkStore(t, another())
	for _, r := range []*sigchain.LinkRequest{r1, r2, r3} {
		got, err := ls2.LinkRequest(ctx, r.Code())
		if err != nil || string(got) != string(r.Bytes()) {
			t.Fatalf("request %s through another handle: %q, %v", r.Code(), got, err)
		}
	}
	n, err := ls.SweepLinkRequests(ctx, now)
	if n != 0 || err != nil {
		t.Fatalf("a sweep before any expired: %d, %v", n, err)
	}
	n, err = ls.SweepLinkRequests(ctx, r1.Expires().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		return // the store drops expired requests by itself
	}
	if n != 3 {
		t.Fatalf("swept %d, want 3", n)
	}
	if _, err := ls.LinkRequest(ctx, r1.Code()); !errors.Is(err, sigchain.ErrNoLinkRequest) {
		t.Fatalf("a swept request: %v", err)
	}
	// Expired requests do not count against the cap.
	r4 := LinkRequest(t, Identity(t, 14), "d", now)
	if _, err := ls.PutLinkRequest(ctx, r1, now, 3); err != nil {
		t.Fatal(err)
	}
	if created, err := ls.PutLinkRequest(ctx, r4, r1.Expires().Add(time.Second), 1); !created || err != nil {
		t.Fatalf("a request once the others expired: %v, %v", created, err)
	}
}
