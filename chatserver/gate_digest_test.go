package chatserver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/internal/testenv/stacktest"
	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// sendDigest asks the gate to store data for to with the Kez-Devices
// header digest ("" for none), and returns the gate's code (0: stored).
func (g *gateUser) sendDigest(t testing.TB, to kez.PublicKey, digest string) int {
	t.Helper()
	m := nats.NewMsg(callout.SendSubjectPrefix + to.String() + "." + g.key.String())
	m.Data = []byte("x")
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%x", time.Now().UnixNano()))
	if digest != "" {
		m.Header.Set(wire.Devices, digest)
	}
	resp, err := g.nc.RequestMsg(m, 5*time.Second)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	code, _ := gateCode(t, resp)
	return code
}

// chainDigest is the digest of u's current devices as u's public chain
// lists them.
func chainDigest(t testing.TB, st *stacktest.Stack, u kez.PublicKey) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := (&sigchain.Client{BaseURL: st.SigServerURL}).FetchVerified(ctx, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, k := range s.CurrentDevices() {
		keys = append(keys, k.String())
	}
	return wire.DevicesDigest(keys)
}

// A send's Kez-Devices header is checked against the registry's list of
// the recipient person's devices: a stale or made-up one is refused with
// ErrCodeDevicesChanged and nothing is stored; no header is as before.
// The digest is of what the person's public chain shows, so the answer
// tells an attacker nothing the chain does not; a wrong guess costs one
// refusal, drawn from the sender's rate limits like any send.
func TestGateDevicesDigest(t *testing.T) {
	st := stacktest.Start(t, stacktest.Options{})
	alice := st.NewUser(t, "alice")
	mallory := gateLogin(t, st, "mallory")
	stored := uint64(0)
	want := func(what string, code, wantCode int) {
		t.Helper()
		if code != wantCode {
			t.Fatalf("%s: code %d, want %d", what, code, wantCode)
		}
		if code == 0 {
			stored++
		}
		if n := streamMsgs(t, st); n != stored {
			t.Fatalf("%s: the stream holds %d, want %d", what, n, stored)
		}
	}
	one := chainDigest(t, st, alice.Key)
	if one != wire.DevicesDigest([]string{alice.Key.String()}) {
		t.Fatal("a chain without device links: the digest is not of the person's key alone")
	}
	want("the current digest", mallory.sendDigest(t, alice.Key, one), 0)
	want("no header (an older client)", mallory.sendDigest(t, alice.Key, ""), 0)
	for _, bad := range []string{"0000000000000000", "not hex", one + one} {
		want("a made-up digest "+bad, mallory.sendDigest(t, alice.Key, bad), callout.ErrCodeDevicesChanged)
	}

	// Alice links a device: at once (the gate's cached digest is dropped
	// with the registration), a send with her old list is refused.
	phone := st.AddDevice(t, alice, "phone")
	two := chainDigest(t, st, alice.Key)
	if two == one || two != wire.DevicesDigest([]string{phone.PublicKey().String(), alice.Key.String()}) {
		t.Fatalf("the digest after a link: %s", two)
	}
	want("the old list after a link", mallory.sendDigest(t, alice.Key, one), callout.ErrCodeDevicesChanged)
	want("the new list", mallory.sendDigest(t, alice.Key, two), 0)
	// To the device itself: the digest is of its person's devices.
	want("the new list, to the phone", mallory.sendDigest(t, phone.PublicKey(), two), 0)
	want("the old list, to the phone", mallory.sendDigest(t, phone.PublicKey(), one), callout.ErrCodeDevicesChanged)

	// Revoked: the old list is current again, at once.
	st.RevokeDevice(t, alice, phone.PublicKey())
	stored-- // the phone's inbox is purged
	if d := chainDigest(t, st, alice.Key); d != one {
		t.Fatalf("the digest after the revocation: %s, want %s", d, one)
	}
	want("the list with the revoked phone", mallory.sendDigest(t, alice.Key, two), callout.ErrCodeDevicesChanged)
	want("the list after the revocation", mallory.sendDigest(t, alice.Key, one), 0)
}
