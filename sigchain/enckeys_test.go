package sigchain

import (
	"testing"
)

// TestEncryptionKeys checks that a state lists every published generation,
// also across Extend, without a later Extend changing an earlier state.
func TestEncryptionKeys(t *testing.T) {
	alice := testIdentity(t, aliceWords)
	b := newBuilder(t, alice, "alice@kez.lat")
	first := b.st
	b.add(TypeSetEncryptionKey, SetEncryptionKeyBody(alice.EncryptionKey(1).PublicKey(), 1))
	mid := b.st
	b.add(TypeSetEncryptionKey, SetEncryptionKeyBody(alice.EncryptionKey(5).PublicKey(), 5))
	st, err := Verify(b.links, fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*State{st, b.st} {
		ks := s.EncryptionKeys()
		if len(ks) != 3 {
			t.Fatalf("%d generations, want 3", len(ks))
		}
		for i, want := range []struct {
			gen   uint32
			seqno uint64
		}{{0, 1}, {1, 2}, {5, 3}} {
			if ks[i].Generation != want.gen || ks[i].Seqno != want.seqno || !ks[i].Key.Equal(alice.EncryptionKey(want.gen).PublicKey()) {
				t.Fatalf("generation %d: %+v", i, ks[i])
			}
			k, ok := s.EncryptionKeyOf(want.gen)
			if !ok || k.Seqno != want.seqno {
				t.Fatalf("EncryptionKeyOf(%d) = %+v, %v", want.gen, k, ok)
			}
		}
		if _, ok := s.EncryptionKeyOf(2); ok {
			t.Fatal("generation 2 was never published")
		}
	}
	if n := len(first.EncryptionKeys()); n != 1 {
		t.Fatalf("the eldest state lists %d generations", n)
	}
	if n := len(mid.EncryptionKeys()); n != 2 {
		t.Fatalf("the middle state lists %d generations", n)
	}
	// Extending two states from one must not share the list.
	alt, err := mid.Extend([]*Link{b.links[2]}, fixedClock(vectorNow))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(mid.EncryptionKeys()); n != 2 || len(alt.EncryptionKeys()) != 3 {
		t.Fatal("Extend changed the state it extended")
	}
}

// TestRotationDue: due once a revoke_device follows the link of the
// current encryption key, not after the rotation, nor for a revocation
// the rotation follows.
func TestRotationDue(t *testing.T) {
	alice := testIdentity(t, aliceWords)
	d1, d2 := testDevice(t, 1), testDevice(t, 2)
	b := newBuilder(t, alice, "alice@kez.lat")
	b.addDevice(d1, "laptop")
	b.addDevice(d2, "phone")
	if b.st.RotationDue() {
		t.Fatal("due without a revocation")
	}
	b.add(TypeRevokeDevice, RevokeDeviceBody(d1.PublicKey()))
	if !b.st.RotationDue() {
		t.Fatal("not due after a revocation")
	}
	b.add(TypeSetEncryptionKey, SetEncryptionKeyBody(alice.EncryptionKey(1).PublicKey(), 1))
	if b.st.RotationDue() {
		t.Fatal("due after the rotation")
	}
	b.add(TypeRevokeDevice, RevokeDeviceBody(d2.PublicKey()))
	if !b.st.RotationDue() {
		t.Fatal("not due after a second revocation")
	}
}
