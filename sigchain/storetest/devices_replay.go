package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/sigchain"
)

// testDeviceReplay: a device's link request is public once a chain
// carries it, and a chain's ctimes are its signer's word, so anyone can
// copy the request into an add_device link of a chain of their own,
// dated within the request's validity, at any later time. A sig-server
// stores an add_device link only while its request is valid by its own
// clock (plus the skew): a replay onto another server after that, or
// onto the same server once the chain that added the device was
// collected, is refused with 422 link_expired and nothing is stored.
func testDeviceReplay(t *testing.T, open Open) {
	ctx := context.Background()
	stA, _ := open(t)
	stB, _ := open(t)
	a, b := startDevices(t, stA, sigchain.NoLimits()), startDevices(t, stB, sigchain.NoLimits())
	now := a.now
	b.verify.Add(a.now.Sub(b.now)) // both servers' clocks at the same time
	alice := NewPerson(t, Identity(t, 1), "alice@kez.lat", now)
	dev := Identity(t, 11)
	add := alice.AddDevice(t, dev, now)
	ca, cb := a.client("192.0.2.1"), b.client("192.0.2.2")
	for _, l := range alice.Links {
		if err := ca.Append(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := sigchain.VerifyDeviceLink(add.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	req := ch.Request // what anyone reading alice's chain has

	// An hour later Mallory dates a chain of hers at the request's time
	// and carries it to server B, which never saw the device.
	b.verify.Add(time.Hour)
	mallory := NewPerson(t, Identity(t, 2), "mallory@kez.lat", req.Created())
	steal := mallory.Next(t, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), req.Created())
	if err := cb.Append(ctx, mallory.Links[0]); err != nil {
		t.Fatal(err)
	}
	if err := cb.Append(ctx, steal); !errors.Is(err, sigchain.ErrLinkExpired) || !errors.Is(err, sigchain.ErrInvalid) {
		t.Fatalf("a replayed add_device an hour after its request expired: %v, want 422 link_expired", err)
	}
	wantHead(t, "mallory after the refused replay", stB, mallory.ID.PublicKey(), mallory.Links[0])
	wantDevice(t, "the device on server B", deviceStore(t, stB), dev.PublicKey(), nil, false)

	// The limit is the request's expiry plus the skew: an approver whose
	// clock is up to that much behind the server's still gets its link
	// stored, a second later it does not.
	late := LinkRequest(t, Identity(t, 12), "tablet", b.verify.Now().Add(-sigchain.LinkRequestTTL-sigchain.LinkRequestSkew))
	carol := NewPerson(t, Identity(t, 3), "carol@kez.lat", late.Created())
	carol.Next(t, sigchain.TypeAddDevice, sigchain.AddDeviceBody(late), late.Expires())
	for _, l := range carol.Links {
		if err := cb.Append(ctx, l); err != nil {
			t.Fatalf("an add made at its request's expiry, stored at expiry + skew: %v", err)
		}
	}
	tooLate := LinkRequest(t, Identity(t, 13), "watch", b.verify.Now().Add(-sigchain.LinkRequestTTL-sigchain.LinkRequestSkew-time.Second))
	dave := NewPerson(t, Identity(t, 4), "dave@kez.lat", tooLate.Created())
	dave.Next(t, sigchain.TypeAddDevice, sigchain.AddDeviceBody(tooLate), tooLate.Expires())
	if err := cb.Append(ctx, dave.Links[0]); err != nil {
		t.Fatal(err)
	}
	if err := cb.Append(ctx, dave.Links[1]); !errors.Is(err, sigchain.ErrLinkExpired) {
		t.Fatalf("an add stored a second after its request's expiry + skew: %v, want link_expired", err)
	}

	// On server A: an orphan chain adds a device and is collected; its
	// index entry goes with it, and the old request stays refused.
	orphan := NewPerson(t, Identity(t, 5), "", now)
	odev := Identity(t, 14)
	oadd := orphan.AddDevice(t, odev, now)
	appendAll(t, stA, orphan.Links)
	if n, err := collector(t, stA).CollectOrphans(ctx, now.Add(time.Hour)); n != 1 || err != nil {
		t.Fatalf("collected %d, %v", n, err)
	}
	och, err := sigchain.VerifyDeviceLink(oadd.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	a.verify.Add(time.Hour)
	eve := NewPerson(t, Identity(t, 6), "eve@kez.lat", och.Request.Created())
	eve.Next(t, sigchain.TypeAddDevice, sigchain.AddDeviceBody(och.Request), och.Request.Created())
	if err := ca.Append(ctx, eve.Links[0]); err != nil {
		t.Fatal(err)
	}
	if err := ca.Append(ctx, eve.Links[1]); !errors.Is(err, sigchain.ErrLinkExpired) {
		t.Fatalf("replaying a collected chain's device request: %v, want link_expired", err)
	}
	wantDevice(t, "the collected chain's device", deviceStore(t, stA), odev.PublicKey(), nil, false)

	// A retry of a stored add_device link is still answered 200.
	if err := ca.Append(ctx, add); err != nil {
		t.Fatalf("retrying alice's stored add an hour later: %v", err)
	}
}

// testDeviceOwnChain: a key is a person or a device, never both, and the
// store holds that itself (the handler checks first, but two appends
// can pass its check at once): it refuses an eldest link of a key in the
// index and an add_device link naming a key that has a chain, storing
// nothing; of an eldest link of a key and an add_device link naming it
// racing through two handles, exactly one is stored.
func testDeviceOwnChain(t *testing.T, open Open) {
	ctx := context.Background()
	s, another := open(t)
	ds := deviceStore(t, s)
	now := time.Now()
	alice := NewPerson(t, Identity(t, 1), "alice@kez.lat", now)
	dev, own := Identity(t, 11), Identity(t, 12)
	alice.AddDevice(t, dev, now)
	appendAll(t, s, alice.Links)

	if err := s.Append(ctx, NewPerson(t, dev, "", now).Links[0]); !errors.Is(err, sigchain.ErrDeviceKnown) {
		t.Fatalf("an eldest link of alice's device: %v, want ErrDeviceKnown", err)
	}
	if _, err := s.Head(ctx, dev.PublicKey()); !errors.Is(err, sigchain.ErrNotFound) {
		t.Fatalf("the device's own chain: %v, want none", err)
	}

	appendAll(t, s, NewPerson(t, own, "own@kez.lat", now).Links)
	if err := s.Append(ctx, alice.TryAddDevice(t, own, now)); !errors.Is(err, sigchain.ErrDeviceKnown) {
		t.Fatalf("adding a key that has a chain: %v, want ErrDeviceKnown", err)
	}
	wantHead(t, "alice", s, alice.ID.PublicKey(), alice.Links[1])
	wantDevice(t, "the key with a chain", ds, own.PublicKey(), nil, false)

	// Races: the key's eldest link against its add, through two handles.
	s2 := another()
	for round := range 4 {
		p := NewPerson(t, Identity(t, 40+round), fmt.Sprintf("p%d@kez.lat", round), now)
		appendAll(t, s, p.Links)
		key := Identity(t, 50+round)
		links := []*sigchain.Link{p.AddDevice(t, key, now), NewPerson(t, key, "", now).Links[0]}
		if round%2 == 1 {
			links[0], links[1] = links[1], links[0]
		}
		errs := make([]error, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, st := range []sigchain.Store{s, s2} {
			wg.Go(func() { <-start; errs[i] = st.Append(ctx, links[i]) })
		}
		close(start)
		wg.Wait()
		stored := 0
		for i, err := range errs {
			switch {
			case err == nil:
				stored++
			case !errors.Is(err, sigchain.ErrDeviceKnown) && !errors.Is(err, sigchain.ErrConflict):
				t.Fatalf("round %d, append %d: %v", round, i, err)
			}
		}
		_, chainErr := s.Head(ctx, key.PublicKey())
		_, devErr := ds.Device(ctx, key.PublicKey())
		if chainErr == nil && devErr == nil {
			t.Fatalf("round %d: %s is both a person and a device", round, key.PublicKey())
		}
		if stored != 1 {
			t.Fatalf("round %d: %d appends stored, want 1 (errors %v)", round, stored, errs)
		}
	}
}
