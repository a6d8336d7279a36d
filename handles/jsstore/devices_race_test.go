package jsstore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/kez-lat/kez-chat/handles"
	"github.com/kez-lat/kez-chat/handles/storetest"
	"github.com/kez-lat/kez-chat/kez"
)

// TestPruneDuringAddKeepsTheBound: an add writes the person's list (the
// compare-and-set that keeps the bound), then the device's record. A
// second add that finds the list full meanwhile prunes it of devices
// without a record: the first add's device among them. The first add's
// record, written after, must not make a current device beyond the bound
// (33 here), and later adds must not write a list longer than a person
// may have (which would make every later read of it fail).
func TestPruneDuringAddKeepsTheBound(t *testing.T) {
	ctx := context.Background()
	s, _ := newTestStore(t)
	alice := storetest.Key(1)
	if _, err := s.Claim(ctx, storetest.Rec("alice", alice)); err != nil {
		t.Fatal(err)
	}
	var devices []kez.PublicKey
	for i := 1; i < handles.MaxDevices-1; i++ { // the primary and 30: one place left
		d := storetest.Key(100 + i)
		if _, err := s.AddDevice(ctx, storetest.Dev(alice, d, fmt.Sprintf("d%d", i))); err != nil {
			t.Fatal(err)
		}
		devices = append(devices, d)
	}
	// The first add of the last place, cut after its list write.
	first, second := storetest.Key(500), storetest.Key(501)
	list, lrev, err := s.listOf(ctx, alice)
	if err != nil {
		t.Fatal(err)
	}
	list.Current = append(list.Current, first.String())
	if _, err := s.put(ctx, personDevicesKey(alice), list.encode(), lrev); err != nil {
		t.Fatal(err)
	}
	// The second add finds the list full and prunes the first's device.
	if _, err := s.AddDevice(ctx, storetest.Dev(alice, second, "second")); err != nil {
		t.Fatal(err)
	}
	// The first add goes on: its record, created where none was.
	rec := device{V: formatVersion, Person: alice.String(), Name: "first", Added: s.now().UnixMilli()}
	if _, err := s.put(ctx, deviceKey(first), rec.encode(), 0); err != nil && !errors.Is(err, errConflict) {
		t.Fatal(err)
	}
	// And the first add's caller sends it again.
	if _, err := s.AddDevice(ctx, storetest.Dev(alice, first, "first")); err == nil {
		t.Log("the first device was listed again")
	}
	current := 1 // alice's own key
	for _, d := range append(devices, first, second) {
		if rec, err := s.LookupKey(ctx, d); err == nil && rec.Key == alice {
			current++
		}
	}
	if current > handles.MaxDevices {
		t.Errorf("alice has %d current devices that log in, the bound is %d", current, handles.MaxDevices)
	}
	if _, err := s.Devices(ctx, alice); err != nil {
		t.Errorf("alice's device list: %v", err)
	}
	if _, err := s.AddDevice(ctx, storetest.Dev(alice, storetest.Key(502), "third")); !errors.Is(err, handles.ErrTooManyDevices) {
		t.Errorf("one more device: %v, want ErrTooManyDevices", err)
	}
}
