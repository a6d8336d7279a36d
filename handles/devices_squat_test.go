package handles

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// hookedServer replaces s's registry server by one whose clock is now()
// and which counts the calls of its revocation hook.
func (s *stack) hookedServer(t testing.TB, now func() time.Time) *atomic.Int32 {
	t.Helper()
	var hooked atomic.Int32
	srv, err := NewServer(ServerConfig{Domain: s.domain, Store: s.reg, SigServer: s.sigc, Logger: quietLog, Limits: NoLimits(), Now: now,
		DeviceRevoked: func(context.Context, kez.PublicKey, kez.PublicKey) { hooked.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	s.server = srv
	s.chat.Config.Handler = srv
	return &hooked
}

// forgeRevocation returns a revoke_device link signed by p that names
// key, whatever p's chain holds: the link rules would refuse it (key is no
// device of p's chain), so it is signed by hand, as an attacker would.
func forgeRevocation(t testing.TB, p *person, key kez.PublicKey) []byte {
	t.Helper()
	// A valid revocation of a throwaway device of a local copy of p's
	// chain, its device key then swapped and the link signed again.
	throwaway := newIdentity(t)
	req, err := sigchain.NewLinkRequest(throwaway, "x", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	add, err := sigchain.NewLink(p.id, p.st, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st, err := p.st.Extend([]*sigchain.Link{add})
	if err != nil {
		t.Fatal(err)
	}
	rev, err := sigchain.NewLink(p.id, st, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(throwaway.PublicKey()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b := rev.Bytes()
	payload := bytes.Replace(b[:bytes.LastIndex(b, []byte(`,"sig":"`))], []byte(throwaway.PublicKey().String()), []byte(key.String()), 1)
	sig, err := p.id.Sign(kez.ContextSigchainLink, append(bytes.Clone(payload), '}'))
	if err != nil {
		t.Fatal(err)
	}
	forged := append(payload, `,"sig":"`+base64.RawURLEncoding.EncodeToString(sig)+`"}`...)
	if ch, err := sigchain.VerifyDeviceLink(forged); err != nil || ch.Device != key || !ch.Revoke {
		t.Fatalf("the forged revocation: %+v %v", ch, err)
	}
	return forged
}

// TestDevicesForeignRevocationLocksNoOneOut: mallory, who holds a handle,
// signs revoke_device links naming keys that are not his devices and that
// the registry has not seen: a device on alice's chain not registered here
// yet, and the key of victor, who has a chain but no handle here yet. None
// is recorded (no hook runs), so alice's device registers afterwards and
// victor claims his handle. A revocation the registry never saw the add
// of is still recorded when the person's chain at the sig-server shows
// it, and refuses the device's add for good.
func TestDevicesForeignRevocationLocksNoOneOut(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.lat")
	hooked := s.hookedServer(t, time.Now)
	c := s.client()
	alice, mallory := s.person(t, "alice"), s.person(t, "mallory")
	tablet, addLink := s.addDevice(t, alice, "tablet") // on alice's chain, not yet here
	victor := newIdentity(t)
	s.startChain(t, victor, "")

	for _, target := range []struct {
		what string
		key  kez.PublicKey
	}{
		{"alice's device not registered here yet", tablet.PublicKey()},
		{"the key of a person without a handle here yet", victor.PublicKey()},
	} {
		info, _, err := c.RegisterDevice(ctx, forgeRevocation(t, mallory, target.key))
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("mallory revoking %s: %+v %v, want ErrNotFound", target.what, info, err)
		}
		if _, err := c.LookupDevice(ctx, target.key); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s after mallory's revocation: %v, want ErrNotFound", target.what, err)
		}
	}
	if n := hooked.Load(); n != 0 {
		t.Errorf("the revocation hook ran %d times for keys that are not mallory's", n)
	}
	if info, created, err := c.RegisterDevice(ctx, addLink); err != nil || !created || info.Person != alice.id.PublicKey().String() {
		t.Fatalf("alice's device after mallory's revocation: %+v %v %v", info, created, err)
	}
	h := Handle{Name: "victor", Domain: s.domain}
	if _, err := Register(ctx, victor, h, RegisterOptions{ServerURL: s.chat.URL, SigServerURL: s.sig.URL}); err != nil {
		t.Fatalf("victor's claim after mallory's revocation: %v", err)
	}

	// Alice's own revocation of a device whose add never reached the
	// registry: her chain at the sig-server shows it, so it is recorded,
	// the hook runs, and the add link is refused afterwards.
	pen, penAdd := s.addDevice(t, alice, "pen")
	rlink := s.appendLink(t, alice, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(pen.PublicKey()))
	if info, _, err := c.RegisterDevice(ctx, rlink); err != nil || !info.Revoked {
		t.Fatalf("alice revoking a device the registry never saw: %+v %v", info, err)
	}
	if n := hooked.Load(); n != 1 {
		t.Errorf("the hook ran %d times, want 1", n)
	}
	if _, _, err := c.RegisterDevice(ctx, penAdd); !errors.Is(err, ErrDeviceRevoked) {
		t.Fatalf("the add of a device revoked on the chain: %v, want ErrDeviceRevoked", err)
	}
	// A revocation signed before its link is on the chain is refused
	// (nothing recorded): the client appends it at the sig-server first.
	early := newIdentity(t)
	req, err := sigchain.NewLinkRequest(early, "early", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s.appendLink(t, alice, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req))
	el, err := sigchain.NewLink(alice.id, alice.st, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(early.PublicKey()), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.RegisterDevice(ctx, el.Bytes()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a revocation not on the chain yet, of a device the registry never saw: %v, want ErrNotFound", err)
	}
}

// TestDevicesStaleRequestReplay: a device's link request is public once
// its add_device link is on the person's chain. Mallory puts alice's
// request, after it expired, into an add_device link of his own (its ctime
// backdated into the request's validity, which the link rules allow) and
// sends it to a registry that has not seen the device: it is refused, so
// he cannot take the device (and then revoke it as his own, which would
// close its connections and empty its inbox). Alice's own link for it is
// taken, late as it is, because her chain at the sig-server lists the
// device; a link sent again for a device already registered is harmless
// however late.
func TestDevicesStaleRequestReplay(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.lat")
	var late atomic.Bool
	s.hookedServer(t, func() time.Time {
		if late.Load() {
			return time.Now().Add(sigchain.LinkRequestTTL + sigchain.LinkRequestSkew + time.Minute)
		}
		return time.Now()
	})
	c := s.client()
	alice, mallory := s.person(t, "alice"), s.person(t, "mallory")
	phone, phoneAdd := s.addDevice(t, alice, "phone")
	if _, _, err := c.RegisterDevice(ctx, phoneAdd); err != nil {
		t.Fatal(err)
	}
	_, tabletAdd := s.addDevice(t, alice, "tablet") // on the chain, not here
	late.Store(true)

	req := requestOf(t, tabletAdd)
	stolen, err := sigchain.NewLink(mallory.id, mallory.st, sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), req.Created())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sigchain.VerifyDeviceLink(stolen.Bytes()); err != nil {
		t.Fatalf("the replayed request should pass the rules that need no chain: %v", err)
	}
	if info, _, err := c.RegisterDevice(ctx, stolen.Bytes()); !errors.Is(err, ErrBadDeviceLink) {
		t.Fatalf("mallory's add of alice's device with an expired request: %+v %v, want ErrBadDeviceLink", info, err)
	}
	if info, created, err := c.RegisterDevice(ctx, tabletAdd); err != nil || !created || info.Person != alice.id.PublicKey().String() {
		t.Fatalf("alice's late add of a device on her chain: %+v %v %v", info, created, err)
	}
	if _, created, err := c.RegisterDevice(ctx, phoneAdd); err != nil || created {
		t.Fatalf("alice's registered device sent again late: %v %v", created, err)
	}
	// A stale request for a device on no chain at all.
	dev := newIdentity(t)
	oldReq, err := sigchain.NewLinkRequest(dev, "old", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ol, err := sigchain.NewLink(mallory.id, mallory.st, sigchain.TypeAddDevice, sigchain.AddDeviceBody(oldReq), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.RegisterDevice(ctx, ol.Bytes()); !errors.Is(err, ErrBadDeviceLink) {
		t.Fatalf("an expired request on no chain: %v, want ErrBadDeviceLink", err)
	}
	if got, err := c.LookupDevice(ctx, phone.PublicKey()); err != nil || got.Person != alice.id.PublicKey().String() {
		t.Fatalf("alice's phone: %+v %v", got, err)
	}
}

// TestDevicesRevokeWhileSuspended: an operator suspends alice's handle
// (her stolen laptop was sending spam, say). She may still revoke the
// laptop: otherwise the registry would learn of it only if she sent the
// revocation again after being reinstated, and the laptop would log in
// again meanwhile. She may not add a device while suspended.
func TestDevicesRevokeWhileSuspended(t *testing.T) {
	ctx := context.Background()
	s := newStack(t, "kez.lat")
	hooked := s.hookedServer(t, time.Now)
	c := s.client()
	alice := s.person(t, "alice")
	laptop, link := s.addDevice(t, alice, "laptop")
	if _, _, err := c.RegisterDevice(ctx, link); err != nil {
		t.Fatal(err)
	}
	if err := s.reg.SetSuspended(ctx, Handle{"alice", "kez.lat"}, true); err != nil {
		t.Fatal(err)
	}
	rlink := s.appendLink(t, alice, sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(laptop.PublicKey()))
	if info, _, err := c.RegisterDevice(ctx, rlink); err != nil || !info.Revoked {
		t.Fatalf("revoking while suspended: %+v %v", info, err)
	}
	if n := hooked.Load(); n != 1 {
		t.Fatalf("the revocation hook ran %d times, want 1", n)
	}
	if err := s.reg.SetSuspended(ctx, Handle{"alice", "kez.lat"}, false); err != nil {
		t.Fatal(err)
	}
	if _, err := s.reg.LookupKey(ctx, laptop.PublicKey()); !errors.Is(err, ErrDeviceRevoked) {
		t.Fatalf("the laptop after alice was reinstated: %v, want ErrDeviceRevoked", err)
	}
	if err := s.reg.SetSuspended(ctx, Handle{"alice", "kez.lat"}, true); err != nil {
		t.Fatal(err)
	}
	_, add := s.addDevice(t, alice, "phone")
	if _, _, err := c.RegisterDevice(ctx, add); !errors.Is(err, ErrSuspended) {
		t.Fatalf("adding while suspended: %v, want ErrSuspended", err)
	}
}
