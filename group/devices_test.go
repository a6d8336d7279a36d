package group

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/kez"
	"github.com/kez-lat/kez-chat/sigchain"
)

// personChain builds a real sigchain for person: eldest, then each device
// added at the given times, then the revocations.
type personChain struct {
	t  *testing.T
	id *kez.Identity
	st *sigchain.State
}

func newPersonChain(t *testing.T, id *kez.Identity, at int64) *personChain {
	p := &personChain{t: t, id: id}
	p.link(sigchain.TypeEldest, sigchain.EldestBody(id.PublicKey(), id.EncryptionKey(0).PublicKey(), 0, "alice@kez.lat"), at)
	return p
}

func (p *personChain) link(typ string, body []byte, at int64) {
	p.t.Helper()
	l, err := sigchain.NewLink(p.id, p.st, typ, body, time.Unix(at, 0))
	if err != nil {
		p.t.Fatal(err)
	}
	if p.st, err = p.st.Extend([]*sigchain.Link{l}, sigchain.WithClock(func() time.Time { return time.Unix(at, 0) })); err != nil {
		p.t.Fatal(err)
	}
}

func (p *personChain) addDevice(dev *kez.Identity, name string, at int64) {
	p.t.Helper()
	req, err := sigchain.NewLinkRequest(dev, name, time.Unix(at, 0))
	if err != nil {
		p.t.Fatal(err)
	}
	p.link(sigchain.TypeAddDevice, sigchain.AddDeviceBody(req), at)
}

// TestChainDeviceChecker verifies group links signed by devices against
// the signer's real sigchain: a current device passes, a revoked one only
// for links made before its revocation, a key the chain never had never.
func TestChainDeviceChecker(t *testing.T) {
	c := newCast(t)
	ak := c.alice.PublicKey()
	t0 := int64(vectorNow - 86400)
	alice := newPersonChain(t, c.alice, t0)
	alice.addDevice(c.aliceDev, "laptop", t0+10)
	alice.addDevice(c.aliceOld, "old phone", t0+20)
	revokedAt := int64(oldDeviceRevoked)
	alice.link(sigchain.TypeRevokeDevice, sigchain.RevokeDeviceBody(c.aliceOld.PublicKey()), revokedAt)

	lookups := 0
	check := ChainDeviceChecker(func(_ context.Context, person kez.PublicKey) (*sigchain.State, error) {
		lookups++
		if person == ak {
			return alice.st, nil
		}
		return nil, errors.New("no such chain")
	})
	bgp := context.Background()
	ch := team(t, c) // links at vectorNow-3600 and -3540; the next at -3480
	verify := func(signer *kez.Identity, by kez.PublicKey, ctime int64) error {
		head := ch.st.head
		b := rawLink(t, signer, testGroup, 3, &head, ctime, by, TypeTitle, TitleBody("x"))
		_, err := Verify(bgp, append(ch.links, b), check, fixedClock(vectorNow))
		return err
	}
	if err := verify(c.aliceDev, ak, ch.ctime); err != nil {
		t.Fatalf("current device: %v", err)
	}
	if err := verify(c.aliceOld, ak, revokedAt-1); err != nil {
		t.Fatalf("device revoked after the link: %v", err)
	}
	for _, at := range []int64{revokedAt, revokedAt + 1} {
		if err := verify(c.aliceOld, ak, at); !errors.Is(err, ErrDeviceNotAllowed) || !errors.Is(err, ErrInvalid) {
			t.Fatalf("device revoked at or before the link: %v", err)
		}
	}
	if err := verify(c.mal, ak, ch.ctime); !errors.Is(err, ErrDeviceNotAllowed) {
		t.Fatalf("key not on the chain: %v", err)
	}
	// bob's link signed by alice's device: the lookup of bob's chain
	// fails, so verification stops without a verdict.
	ch2 := team(t, c)
	head := ch2.st.head
	b := rawLink(t, c.aliceDev, testGroup, 3, &head, ch2.ctime, c.bob.PublicKey(), TypeTitle, TitleBody("x"))
	_, err := Verify(bgp, append(ch2.links, b), check, fixedClock(vectorNow))
	if err == nil || errors.Is(err, ErrInvalid) {
		t.Fatalf("lookup failure: %v", err)
	}
	// A lookup that answers with another person's chain is refused.
	wrong := ChainDeviceChecker(func(context.Context, kez.PublicKey) (*sigchain.State, error) { return alice.st, nil })
	if err := wrong(bgp, c.bob.PublicKey(), c.aliceDev.PublicKey(), time.Unix(vectorNow, 0)); !errors.Is(err, ErrDeviceNotAllowed) {
		t.Fatalf("another person's chain: %v", err)
	}
	if lookups == 0 {
		t.Fatal("the lookup was never called")
	}
}
