package chat

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/kez"
)

// DeviceStatus lists the user's devices as their chain does, this one
// marked and seen now, another that pulled seen then, a revoked one not
// seen; another person's client learns only of its own devices; an
// offline client cannot ask.
func TestDeviceStatus(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := newPerson(t, st, "alice", 3)
	bob := newPerson(t, st, "bob", 1)
	a1, a2, a3 := alice.devices[0], alice.devices[1], alice.devices[2]
	ctx := testCtx(t)
	before := time.Now().Add(-time.Second)
	mustSync(t, a2) // a pull: the chat-server sees it
	st.RevokeDevice(t, alice.user, a3.DeviceKey())

	devs, err := a1.DeviceStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 3 || devs[0].Key != alice.user.Key || !devs[0].Primary || devs[1].Key != a2.DeviceKey() || devs[2].Key != a3.DeviceKey() {
		t.Fatalf("alice's devices: %+v", devs)
	}
	if !devs[0].This || devs[1].This || devs[2].This {
		t.Errorf("this device: %v %v %v", devs[0].This, devs[1].This, devs[2].This)
	}
	if devs[0].LastSeen.Before(before) {
		t.Errorf("this device seen at %v, before the call", devs[0].LastSeen)
	}
	if devs[1].LastSeen.Before(before) || devs[1].LastSeen.After(time.Now()) {
		t.Errorf("the device that pulled seen at %v, want after %v", devs[1].LastSeen, before)
	}
	if !devs[2].Revoked || !devs[2].LastSeen.IsZero() {
		t.Errorf("the revoked device: revoked %v, seen %v", devs[2].Revoked, devs[2].LastSeen)
	}
	if devs[1].Name != "alice-2" {
		t.Errorf("the second device's name: %q", devs[1].Name)
	}

	// From the linked device: the same list, itself marked.
	devs, err = a2.DeviceStatus(ctx)
	if err != nil || len(devs) != 3 || devs[0].This || !devs[1].This || devs[0].LastSeen.IsZero() {
		t.Fatalf("from the linked device: %+v %v", devs, err)
	}

	// Bob learns nothing of alice's devices.
	devs, err = bob.devices[0].DeviceStatus(ctx)
	if err != nil || len(devs) != 1 || devs[0].Key != bob.user.Key || !devs[0].This {
		t.Fatalf("bob's devices: %+v %v", devs, err)
	}

	off := openClient(t, st, st.NewUser(t, "carol"), func(c *Config) { c.Client.NATSURL = "" })
	if _, err := off.DeviceStatus(ctx); !errors.Is(err, ErrOffline) {
		t.Fatalf("offline: %v", err)
	}
}

// A contact's device added or revoked is told once, when a check of the
// contact finds it (here: a message from the new device, CheckContact
// after the revocation), and listed by ContactDeviceEvents; the devices
// the contact had when added are no events.
func TestContactDeviceEvents(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	var mu sync.Mutex
	var told []ContactDevice
	alice := newPerson(t, st, "alice", 1, func(c *Config) {
		c.OnContactDevice = func(d ContactDevice) {
			mu.Lock()
			told = append(told, d)
			mu.Unlock()
		}
	})
	bob := newPerson(t, st, "bob", 2)
	a, b := alice.devices[0], bob.devices[0]
	ctx := testCtx(t)
	bobHandle := mustAdd(t, a, "bob").Handle
	mustAdd(t, b, "alice")
	told1 := func() []ContactDevice {
		mu.Lock()
		defer mu.Unlock()
		return append([]ContactDevice(nil), told...)
	}
	if got := told1(); len(got) != 0 {
		t.Fatalf("adding bob with two devices told %+v", got)
	}

	dev := st.AddDevice(t, bob.user, "bob's \"phone\"\u00e9")
	phone := openDevice(t, st, bob.user, dev, "phone")
	mustAdd(t, phone, "alice")
	mustSend(t, phone, "alice", "from my phone")
	receiveN(t, a, 1)
	got := told1()
	if len(got) != 1 || got[0].Device != dev.PublicKey() || got[0].Revoked || got[0].Name != "bob's \"phone\"\u00e9" ||
		got[0].Handle != bobHandle || got[0].Person != bob.user.Key || got[0].Seqno < 2 || got[0].At.IsZero() {
		t.Fatalf("told of the new device: %+v", got)
	}
	if want := `@` + bobHandle + ` added a device, "bob's \"phone\"é" (signed by their key).`; got[0].String() != want {
		t.Errorf("worded %q, want %q", got[0].String(), want)
	}

	st.RevokeDevice(t, bob.user, dev.PublicKey())
	if ct, err := a.CheckContact(ctx, "bob"); err != nil || ct.Flag != FlagNone {
		t.Fatalf("checking bob: %v", err)
	}
	got = told1()
	if len(got) != 2 || got[1].Device != dev.PublicKey() || !got[1].Revoked || got[1].Seqno <= got[0].Seqno {
		t.Fatalf("told of the revocation: %+v", got)
	}
	if !strings.Contains(got[1].String(), "revoked a device") {
		t.Errorf("worded %q", got[1].String())
	}
	// Checking again finds nothing new.
	if _, err := a.CheckContact(ctx, "bob"); err != nil || len(told1()) != 2 {
		t.Fatalf("checked again: %v, told %+v", err, told1())
	}

	evs, err := a.ContactDeviceEvents(ctx, "bob")
	if err != nil || len(evs) != 2 || evs[0].Device != dev.PublicKey() || evs[0].Revoked || !evs[1].Revoked || evs[0].Name != got[0].Name {
		t.Fatalf("listed: %+v %v", evs, err)
	}
	if _, err := a.ContactDeviceEvents(ctx, "nobody"); !errors.Is(err, ErrNotContact) {
		t.Fatalf("events of a stranger: %v", err)
	}
}

// A device event's detail reads back as written; anything else is not
// one.
func TestDeviceEventDetail(t *testing.T) {
	k := kez.PublicKey{1, 2, 3}
	for _, tc := range []struct {
		d       chainDevice
		revoked bool
		seqno   uint64
	}{
		{chainDevice{Key: k, Name: "phone", AddedSeqno: 7}, false, 9},
		{chainDevice{Key: k, Name: `a "quoted" ) at chain seqno 3`, AddedSeqno: 2}, true, 12},
		{chainDevice{Key: k, Name: "日本語", AddedSeqno: 1 << 40}, false, 1},
	} {
		kind := eventDeviceAdded
		if tc.revoked {
			kind = eventDeviceRevoked
		}
		d, err := parseDeviceEvent(kind, deviceDetail(tc.d, tc.revoked, tc.seqno))
		want := tc.d.AddedSeqno
		if tc.revoked {
			want = tc.seqno
		}
		if err != nil || d.Device != k || d.Name != tc.d.Name || d.Revoked != tc.revoked || d.Seqno != want {
			t.Errorf("%+v: read back %+v, %v", tc, d, err)
		}
	}
	good := deviceDetail(chainDevice{Key: k, Name: "phone", AddedSeqno: 3}, false, 3)
	for _, tc := range [][2]string{
		{"refreshed", good},
		{eventDeviceRevoked, good}, // "at" is an addition's
		{eventDeviceAdded, good + " "},
		{eventDeviceAdded, strings.Replace(good, "seqno 3", "seqno 03", 1)},
		{eventDeviceAdded, strings.Replace(good, `"phone"`, `"phone`, 1)},
		{eventDeviceAdded, strings.Replace(good, k.String(), "Uxyz", 1)},
		{eventDeviceAdded, ""},
	} {
		if d, err := parseDeviceEvent(tc[0], tc[1]); err == nil {
			t.Errorf("%q %q read as %+v", tc[0], tc[1], d)
		}
	}
}

// FuzzDeviceEventDetail: reading any detail back never panics, and what
// reads as a device event, written again, reads the same.
func FuzzDeviceEventDetail(f *testing.F) {
	k := kez.PublicKey{9}
	f.Add(eventDeviceAdded, deviceDetail(chainDevice{Key: k, Name: "phone", AddedSeqno: 3}, false, 3))
	f.Add(eventDeviceRevoked, deviceDetail(chainDevice{Key: k, Name: `x") by chain seqno 1`}, true, 4))
	f.Add(eventDeviceAdded, "device U ("+"\""+"\\xff"+"\""+") at chain seqno 1")
	f.Fuzz(func(t *testing.T, kind, detail string) {
		d, err := parseDeviceEvent(kind, detail)
		if err != nil {
			return
		}
		cd := chainDevice{Key: d.Device, Name: d.Name, AddedSeqno: d.Seqno}
		again := deviceDetail(cd, d.Revoked, d.Seqno)
		if d2, err := parseDeviceEvent(kind, again); err != nil || d2 != d {
			t.Fatalf("%q read as %+v, written again as %q, read as %+v (%v)", detail, d, again, d2, err)
		}
	})
}
