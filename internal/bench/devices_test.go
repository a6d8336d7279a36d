package bench

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/callout"
	"github.com/kez-lat/kez-chat/chat"
	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testDevicesRig checks the devices group's rig on st: devices are linked
// through the servers once (a second link reuses them, a used or unknown
// code changes nothing, a revoked device never comes back and cannot log
// in), every copy of a fan-out opens at its device, and a copy that is
// not that device's (sealed for another device, or whose Nats-Msg-Id
// names another) is counted as failed, never as opened.
func testDevicesRig(ctx context.Context, t *testing.T, st *Stack) {
	users, err := st.Register(ctx, "kbt", 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	a, b := users[0], users[1]
	bdevs, err := st.devicesOf(ctx, b, 3)
	if err != nil {
		t.Fatal(err)
	}
	again, err := st.devicesOf(ctx, b, 3)
	if err != nil || again[2].Key != bdevs[2].Key {
		t.Fatalf("linking the same devices again: %v", err)
	}
	chain := func() *sigchain.State {
		t.Helper()
		sigc, _ := st.apiClients()
		s, err := sigc.FetchVerified(ctx, b.Key, nil)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if n := len(chain().CurrentDevices()); n != 3 {
		t.Fatalf("%s has %d current devices, want 3", b.Name, n)
	}

	// Codes: one used already, one never posted.
	dev, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	req, err := st.RequestLink(ctx, dev, "used")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApproveLink(ctx, b, req.Code()); err != nil {
		t.Fatal(err)
	}
	seqno := chain().Seqno()
	if _, err := st.ApproveLink(ctx, a, req.Code()); err == nil {
		t.Error("a used code was approved again, by another person")
	}
	other, _, err := kez.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	unposted, err := sigchain.NewLinkRequest(other, "unposted", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ApproveLink(ctx, b, unposted.Code()); !errors.Is(err, sigchain.ErrNoLinkRequest) {
		t.Errorf("a code never posted: %v, want ErrNoLinkRequest", err)
	}
	if got := chain().Seqno(); got != seqno {
		t.Errorf("refused codes moved the chain from seqno %d to %d", seqno, got)
	}

	// Revoked: no second link, no login.
	if _, err := st.RevokeDevice(ctx, b, dev.PublicKey()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.LinkDevice(ctx, b, dev, "back"); err == nil {
		t.Error("a revoked device was linked again")
	}
	if nc, err := chat.Connect(ctx, st.NATSURL, dev, nats.NoReconnect()); !errors.Is(err, chat.ErrNotRegistered) {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("a revoked device's login: %v, want ErrNotRegistered", err)
	}

	// The fan-out: a (one device) to b's three devices.
	rig, err := newFanoutRig(ctx, st, []*User{a}, bdevs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.close)
	body := []byte("a message to every device")
	const n = 5
	if _, err := rig.fanout(ctx, rig.recipients, rig.own, body, n); err != nil {
		t.Fatal(err)
	}
	if got := rig.opened.Load(); got != n*3 || rig.failed.Load() != 0 {
		t.Fatalf("opened %d of %d copies, %d failed: %v", got, n*3, rig.failed.Load(), rig.lastErr.get())
	}
	d0, d1 := rig.recipients[0], rig.recipients[1]
	copyTo := func(to, sealedFor, named *msgUser) *nats.Msg {
		id := chat.NewMessageID()
		m := nats.NewMsg(callout.SendSubjectPrefix + to.Key.String() + "." + rig.from.Key.String())
		m.Header.Set(jetstream.MsgIDHeader, id.String()+"-"+named.Key.String())
		env, err := rig.from.seals[sealedFor.Key].Seal(nil, sessionPlaintext(id, body))
		if err != nil {
			t.Fatal(err)
		}
		m.Data = env
		return m
	}
	opened := rig.opened.Load()
	for name, m := range map[string]*nats.Msg{
		"sealed for another device": copyTo(d0, d1, d0),
		"named for another device":  copyTo(d0, d0, d1),
	} {
		failed := rig.failed.Load()
		if _, err := rig.deliverOne(ctx, modeSession, rig.from, m, time.Now()); err != nil {
			t.Fatal(err)
		}
		if rig.failed.Load() != failed+1 || rig.opened.Load() != opened {
			t.Errorf("%s: failed %d → %d, opened %d → %d: want it refused", name, failed, rig.failed.Load(), opened, rig.opened.Load())
		}
	}
}
