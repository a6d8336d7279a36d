package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/kez"
)

// Dev is a device record of device for person, named name, added at a
// fixed time.
func Dev(person, device kez.PublicKey, name string) handles.DeviceRecord {
	return handles.DeviceRecord{Person: person, Device: device, Name: name, Added: time.UnixMilli(1_800_000_100_000)}
}

func addDevice(t *testing.T, s handles.Store, d handles.DeviceRecord, wantCreated bool) {
	t.Helper()
	created, err := s.AddDevice(context.Background(), d)
	if err != nil || created != wantCreated {
		t.Fatalf("add device %.8s of %.8s: created %v, %v; want created %v", d.Device.String(), d.Person.String(), created, err, wantCreated)
	}
}

func testDevices(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	alice, bob, laptop, phone := Key(1), Key(2), Key(10), Key(11)
	claim(t, s, Rec("alice", alice), true)
	claim(t, s, Rec("bob", bob), true)

	addDevice(t, s, Dev(alice, laptop, "laptop"), true)
	addDevice(t, s, Dev(alice, laptop, "laptop"), false) // a replay
	addDevice(t, s, Dev(alice, phone, "phone"), true)

	// A device logs in as its person: the person's entry, Device set.
	r, err := s.LookupKey(ctx, laptop)
	if err != nil || r.Handle != h("alice") || r.Key != alice || r.Device != laptop {
		t.Fatalf("LookupKey of a device: %+v %v", r, err)
	}
	if r, err := s.LookupKey(ctx, alice); err != nil || r.Key != alice || !r.Device.IsZero() {
		t.Fatalf("LookupKey of the person: %+v %v", r, err)
	}

	for _, tc := range []struct {
		name string
		d    handles.DeviceRecord
		want error
	}{
		{"another person's device", Dev(bob, laptop, "mine"), handles.ErrDeviceTaken},
		{"a key holding a handle", Dev(alice, bob, "bob"), handles.ErrDeviceTaken},
		{"a person without a handle", Dev(Key(3), Key(12), "x"), handles.ErrNotFound},
	} {
		if _, err := s.AddDevice(ctx, tc.d); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	for _, d := range []handles.DeviceRecord{Dev(alice, alice, "self"), Dev(alice, Key(13), ""), {Person: alice, Name: "x"}} {
		if _, err := s.AddDevice(ctx, d); err == nil {
			t.Errorf("add %+v: no error", d)
		}
	}
	// A device key may not claim a handle of its own.
	if _, err := s.Claim(ctx, Rec("laptop", laptop)); !errors.Is(err, handles.ErrKeyHasHandle) {
		t.Errorf("claim by a device key: %v, want ErrKeyHasHandle", err)
	}

	// Revocation is permanent: no login, no re-add (a replayed add link).
	at := time.UnixMilli(1_800_000_200_000)
	if err := s.RevokeDevice(ctx, alice, laptop, at); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeDevice(ctx, alice, laptop, at.Add(time.Hour)); err != nil {
		t.Fatalf("revoking again: %v", err)
	}
	_, err = s.LookupKey(ctx, laptop)
	var re *handles.DeviceRevokedError
	if !errors.Is(err, handles.ErrDeviceRevoked) || !errors.As(err, &re) || re.Record.Key != alice || re.Record.Handle != h("alice") {
		t.Fatalf("LookupKey of a revoked device: %v", err)
	}
	if _, err := s.AddDevice(ctx, Dev(alice, laptop, "laptop")); !errors.Is(err, handles.ErrDeviceRevoked) {
		t.Fatalf("re-adding a revoked device: %v", err)
	}
	if _, err := s.AddDevice(ctx, Dev(bob, laptop, "laptop")); !errors.Is(err, handles.ErrDeviceTaken) {
		t.Fatalf("another person adding a revoked device: %v", err)
	}
	// Someone else's device, or one never seen, is not the person's to revoke…
	if err := s.RevokeDevice(ctx, bob, phone, at); !errors.Is(err, handles.ErrNotFound) {
		t.Fatalf("bob revoking alice's phone: %v", err)
	}
	if r, err := s.LookupKey(ctx, phone); err != nil || r.Device != phone {
		t.Fatalf("alice's phone after bob's attempt: %+v %v", r, err)
	}
	// … but a revocation of a device this registry never saw added is
	// kept, so that its add link posted later is refused.
	tablet := Key(14)
	if err := s.RevokeDevice(ctx, alice, tablet, at); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddDevice(ctx, Dev(alice, tablet, "tablet")); !errors.Is(err, handles.ErrDeviceRevoked) {
		t.Fatalf("adding a device revoked before it was added: %v", err)
	}

	// The person's own key, revoked as a device: it may not log in, but
	// still holds its handle (and may renew it).
	if err := s.RevokeDevice(ctx, alice, alice, at); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupKey(ctx, alice); !errors.As(err, &re) || re.Record.Handle != h("alice") || re.Record.Device != alice {
		t.Fatalf("LookupKey of a revoked primary: %v", err)
	}
	claim(t, s, Rec("alice", alice), false)
	if r, err := s.LookupKey(ctx, phone); err != nil || r.Handle != h("alice") {
		t.Fatalf("the phone after the primary's revocation: %+v %v", r, err)
	}

	ds, err := s.Devices(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	state := map[kez.PublicKey]bool{}
	for _, d := range ds {
		if d.Person != alice {
			t.Errorf("Devices lists %+v", d)
		}
		state[d.Device] = d.Revoked
	}
	want := map[kez.PublicKey]bool{laptop: true, phone: false, tablet: true, alice: true}
	if fmt.Sprint(state) != fmt.Sprint(want) {
		t.Errorf("Devices: %v, want %v", state, want)
	}
	if ds, err := s.Devices(ctx, bob); err != nil || len(ds) != 0 {
		t.Errorf("bob's devices: %v %v", ds, err)
	}

	// A suspended person adds no device; a released person's devices
	// find no entry.
	if err := s.SetSuspended(ctx, h("alice"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddDevice(ctx, Dev(alice, Key(15), "x")); !errors.Is(err, handles.ErrSuspended) {
		t.Errorf("adding a device to a suspended person: %v", err)
	}
	if r, err := s.LookupKey(ctx, phone); err != nil || !r.Suspended {
		t.Errorf("a suspended person's device: %+v %v", r, err)
	}
	if err := s.Release(ctx, h("alice")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LookupKey(ctx, phone); !errors.Is(err, handles.ErrNotFound) {
		t.Errorf("a released person's device: %v", err)
	}
}

func testDeviceLimit(t *testing.T, open Open) {
	ctx := context.Background()
	s, _ := open(t)
	alice := Key(1)
	claim(t, s, Rec("alice", alice), true)
	// The person's own key is the first device.
	for i := 1; i < handles.MaxDevices; i++ {
		addDevice(t, s, Dev(alice, Key(1000+i), fmt.Sprintf("d%d", i)), true)
	}
	if _, err := s.AddDevice(ctx, Dev(alice, Key(2000), "one too many")); !errors.Is(err, handles.ErrTooManyDevices) {
		t.Fatalf("device %d: %v, want ErrTooManyDevices", handles.MaxDevices+1, err)
	}
	// Revoking one makes room for one.
	if err := s.RevokeDevice(ctx, alice, Key(1001), time.Now()); err != nil {
		t.Fatal(err)
	}
	addDevice(t, s, Dev(alice, Key(2000), "in its place"), true)
	if _, err := s.AddDevice(ctx, Dev(alice, Key(2001), "again too many")); !errors.Is(err, handles.ErrTooManyDevices) {
		t.Fatalf("after the swap: %v, want ErrTooManyDevices", err)
	}
	// So does revoking the primary.
	if err := s.RevokeDevice(ctx, alice, alice, time.Now()); err != nil {
		t.Fatal(err)
	}
	addDevice(t, s, Dev(alice, Key(2001), "for the primary"), true)
}

func testConcurrentDevices(t *testing.T, open Open) {
	// Eight adds at once for a person with one place left: one wins.
	s0, another := open(t)
	alice := Key(1)
	claim(t, s0, Rec("alice", alice), true)
	for i := 1; i < handles.MaxDevices-1; i++ {
		addDevice(t, s0, Dev(alice, Key(1000+i), fmt.Sprintf("d%d", i)), true)
	}
	const n = 8
	stores := []handles.Store{s0, another()}
	errs, created := make([]error, n), make([]bool, n)
	done := make(chan int)
	start := make(chan struct{})
	for i := range n {
		go func() {
			<-start
			created[i], errs[i] = stores[i%2].AddDevice(context.Background(), Dev(alice, Key(3000+i), "racer"))
			done <- i
		}()
	}
	close(start)
	for range n {
		<-done
	}
	oneWinner(t, errs, created, handles.ErrTooManyDevices)

	// One device added by two persons at once: one gets it.
	claim(t, s0, Rec("bob", Key(2)), true)
	claim(t, s0, Rec("carol", Key(3)), true)
	d := Key(4000)
	start2 := make(chan struct{})
	for i := range 2 {
		go func() {
			<-start2
			created[i], errs[i] = stores[i].AddDevice(context.Background(), Dev(Key(2+i), d, "contested"))
			done <- i
		}()
	}
	close(start2)
	<-done
	<-done
	oneWinner(t, errs[:2], created[:2], handles.ErrDeviceTaken)
}
