package chatserver_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chatserver"
	"github.com/kez-lat/kez-chat/internal/inbox"
	"github.com/kez-lat/kez-chat/internal/testenv/limittest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// askDevices makes a consumer request with the Kez-Devices header as d.
func askDevices(t testing.TB, d *deviceConn) ([]wire.DeviceSeen, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return inbox.Devices(ctx, d.nc, d.key.String())
}

// seenKeys returns the keys of devs.
func seenKeys(devs []wire.DeviceSeen) []string {
	var out []string
	for _, d := range devs {
		out = append(out, d.Key)
	}
	return out
}

func sameKeys(got []wire.DeviceSeen, want ...kez.PublicKey) bool {
	if len(got) != len(want) {
		return false
	}
	for i, k := range want {
		if got[i].Key != k.String() {
			return false
		}
	}
	return true
}

// pullOne pulls one message as d and waits for it.
func pullOne(t testing.TB, d *deviceConn, token string) {
	t.Helper()
	sub, err := d.nc.SubscribeSync(callout.DeliverSubjectPrefix + d.key.String() + "." + token)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	d.nc.Publish(callout.PullSubjectPrefix+d.key.String(), []byte(`{"batch":1,"expires":5000000000,"deliver":"`+token+`"}`))
	if _, err := sub.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("pull: %v", err)
	}
}

// TestGateDevicesSeen: a device asks, with its consumer request, when its
// person's devices were last seen: each current device, in the
// registry's order, the asker seen now, a device that pulled when it
// pulled, one that never logged in not at all. Another person's device
// learns only of its own person; a revoked device drops out of the list
// at once and, still connected to a replica that did not kick it, is
// refused; a malformed header is refused.
func TestGateDevicesSeen(t *testing.T) {
	clock := &limittest.Clock{}
	r := startReplicasAt(t, 2, chatserver.MailLimits{}, clock.Now)
	alice := newDevicePerson(t, r.sigURL, r.urls[0], "alice")
	bobID := register(t, r.sigURL, r.urls[0], "bob")
	phone := alice.addDevice(t, r.urls[0], "phone")
	laptop := alice.addDevice(t, r.urls[0], "laptop")
	a := deviceLogin(t, r.natsURL, alice.id)
	p := deviceLogin(t, r.natsURL, phone)
	l := deviceLogin(t, r.natsURL, laptop)
	bob := deviceLogin(t, r.natsURL, bobID)

	// The phone receives and pulls a message: JetStream saw it then.
	if code, _ := gateCode(t, bob.send(t, phone.PublicKey(), []byte("to the phone"))); code != 0 {
		t.Fatalf("send: %d", code)
	}
	pulled := time.Now().Unix()
	pullOne(t, p, "t1")
	clock.Add(3 * time.Minute)

	devs, err := askDevices(t, a)
	if err != nil {
		t.Fatal(err)
	}
	if !sameKeys(devs, alice.id.PublicKey(), phone.PublicKey(), laptop.PublicKey()) {
		t.Fatalf("alice's devices: %v", seenKeys(devs))
	}
	if devs[0].LastActive != clock.Now().Unix() {
		t.Errorf("the asking device seen at %d, want now %d", devs[0].LastActive, clock.Now().Unix())
	}
	if devs[1].LastActive < pulled || devs[1].LastActive > clock.Now().Unix() {
		t.Errorf("the phone seen at %d, want from %d to %d", devs[1].LastActive, pulled, clock.Now().Unix())
	}
	if devs[2].LastActive != 0 {
		t.Errorf("the laptop, which never pulled, seen at %d", devs[2].LastActive)
	}
	// The phone asks too: the same devices, itself seen now.
	if devs, err = askDevices(t, p); err != nil || !sameKeys(devs, alice.id.PublicKey(), phone.PublicKey(), laptop.PublicKey()) || devs[1].LastActive != clock.Now().Unix() {
		t.Fatalf("the phone's answer: %+v %v", devs, err)
	}

	// Bob, another person, learns of his own device only, however often
	// he asks (both replicas).
	for range 4 {
		devs, err := askDevices(t, bob)
		if err != nil || !sameKeys(devs, bobID.PublicKey()) {
			t.Fatalf("bob's answer: %+v %v", devs, err)
		}
	}
	// No device may ask on another's subject: the broker refuses it.
	m := nats.NewMsg(callout.ConsumerSubjectPrefix + alice.id.PublicKey().String())
	m.Header.Set(callout.DevicesHeader, "1")
	bob.nc.PublishMsg(m)
	bob.wantViolation(t, callout.ConsumerSubjectPrefix+alice.id.PublicKey().String())

	// A malformed header is refused.
	for _, v := range [][]string{{"2"}, {"1", "1"}, {""}} {
		m := nats.NewMsg(callout.ConsumerSubjectPrefix + a.key.String())
		m.Header[callout.DevicesHeader] = v
		resp, err := a.nc.RequestMsg(m, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if code, _ := gateCode(t, resp); code != callout.ErrCodeBadRequest {
			t.Errorf("header %q: code %d", v, code)
		}
	}

	// The laptop is revoked at the second replica, which cannot close its
	// connection; the first one serves alone from then on.
	alice.revoke(t, r.urls[1], laptop.PublicKey())
	r.servers[1].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A request the closing replica took is lost: ask again.
		_, err := askDevices(t, l)
		if isCode(err, callout.ErrCodeSenderRevoked) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the revoked laptop's request: %v", err)
		}
	}
	if devs, err = askDevices(t, a); err != nil || !sameKeys(devs, alice.id.PublicKey(), phone.PublicKey()) {
		t.Fatalf("alice's devices after the revocation: %+v %v", devs, err)
	}
}

// TestGateDevicesSeenCost: the look-ups a devices request makes are
// charged to the asking device's consumer-request bucket, one token per
// device, and their answer is reused for ten seconds per person, so a
// flood costs JetStream one round of look-ups per person at most and
// then runs out of tokens.
func TestGateDevicesSeenCost(t *testing.T) {
	clock := &limittest.Clock{}
	// Four tokens a device, refilled one per 1000 s.
	r := startReplicasAt(t, 1, chatserver.MailLimits{APIRate: 0.001, APIBurst: 4}, clock.Now)
	alice := newDevicePerson(t, r.sigURL, r.urls[0], "alice")
	phone := alice.addDevice(t, r.urls[0], "phone")
	laptop := alice.addDevice(t, r.urls[0], "laptop")
	tablet := alice.addDevice(t, r.urls[0], "tablet")
	a := deviceLogin(t, r.natsURL, alice.id)
	l := deviceLogin(t, r.natsURL, laptop)

	// The laptop: 1 for the request and 4 for the look-ups of four
	// devices are more than its 4 tokens.
	if _, err := askDevices(t, l); !isCode(err, callout.ErrCodeSenderQuota) {
		t.Fatalf("a request whose look-ups the bucket cannot pay: %v", err)
	}
	// With three devices left, alice's primary pays 1 + 3.
	alice.revoke(t, r.urls[0], tablet.PublicKey())
	devs, err := askDevices(t, a)
	if err != nil || !sameKeys(devs, alice.id.PublicKey(), phone.PublicKey(), laptop.PublicKey()) {
		t.Fatalf("the primary's request: %+v %v", devs, err)
	}
	// The laptop has 3 tokens left (its refused request took 1), too few
	// for the look-ups: the answer is reused, for 1.
	if devs, err := askDevices(t, l); err != nil || len(devs) != 3 {
		t.Fatalf("a request within ten seconds: %+v %v", devs, err)
	}
	// Ten seconds on, the look-ups are made again, and charged again: its
	// 2 tokens do not pay for them.
	clock.Add(11 * time.Second)
	if _, err := askDevices(t, l); !isCode(err, callout.ErrCodeSenderQuota) {
		t.Fatalf("fresh look-ups over the bucket: %v", err)
	}
}

func isCode(err error, code int) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && int(apiErr.ErrorCode) == code
}
