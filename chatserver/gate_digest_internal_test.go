package chatserver

import (
	"context"
	"testing"
	"time"

	"github.com/kez-lat/kez-chat/internal/wire"
	"github.com/kez-lat/kez-chat/kez"
)

// A device stored while the gate asks the registry for the person's
// devices must not leave the answer given before it in the cache: the
// next send, sealed by a sender who has seen the new device, would be
// refused again for up to digestTTL, and a copy is sent again only once.
func TestDigestLookupRacingAnAddIsNotKept(t *testing.T) {
	key := func() kez.PublicKey {
		id, _, err := kez.NewIdentity()
		if err != nil {
			t.Fatal(err)
		}
		return id.PublicKey()
	}
	person, phone := key(), key()
	g := &gate{digests: newTracker[digestEntry](16)}
	devices := []kez.PublicKey{person}
	added := false
	g.devices = func(context.Context, kez.PublicKey) ([]kez.PublicKey, error) {
		answer := append([]kez.PublicKey(nil), devices...)
		if !added {
			// The phone is stored while this answer is on its way.
			added = true
			devices = append(devices, phone)
			g.forgetDigests(person.String())
		}
		return answer, nil
	}
	now := time.Now()
	before, err := g.devicesDigest(person.String(), now)
	if err != nil {
		t.Fatal(err)
	}
	if before != wire.DevicesDigest([]string{person.String()}) {
		t.Fatalf("the first answer: %s", before)
	}
	after, err := g.devicesDigest(person.String(), now)
	if err != nil {
		t.Fatal(err)
	}
	if want := wire.DevicesDigest([]string{person.String(), phone.String()}); after != want {
		t.Fatalf("after the add the gate answers %s (the answer from before it, kept), want %s", after, want)
	}
}
