package session

import (
	"bytes"
	"encoding/hex"
	"errors"
	"testing"
)

// The attacker's review of issue 17 (docs/security.md §7, "Groups (issue
// 17)").

// weakSigningKeys are encodings of ed25519 points of order 1, 2, 4 and 8,
// canonical and not, and with the sign bit set: under any of them the
// signature (R = the identity, s = 0), or another fixed one, verifies for
// every message with the verifiers of the standard library.
var weakSigningKeys = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // the identity
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4, sign bit
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p: 0, not canonical
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p+1: 1, not canonical
	"0100000000000000000000000000000000000000000000000000000000000080", // the identity, sign bit
}

// TestSenderKeyWeakSigningKey: a sender key's signing public key comes in
// its distribution. With a small-order one (the identity), the signature
// binds nothing: any member, who holds the chain key, writes as that
// device, and the device's person may later deny its own messages ("any
// member could have made it"). Distributions and stored receiver keys
// with such a key are refused, and a receiver key built from one by hand
// opens nothing.
func TestSenderKeyWeakSigningKey(t *testing.T) {
	k := newTestSenderKey(t, "alice", 1)
	d := k.Distribution()
	identity, _ := hex.DecodeString(weakSigningKeys[0])
	copy(d.SigningKey[:], identity)

	// What bob, a member holding d, forges as alice's device: the chain's
	// next message, signed with (R = identity, s = 0).
	forged := appendGroupHeader(nil, &d.GID, d.Epoch, d.Device, d.Iteration)
	mk := d.ChainKey
	_, m := kdfCK(&mk)
	aead, nonce := groupAEAD(&m)
	forged = aead.Seal(forged, nonce, []byte("forged by bob"), forged)
	forged = append(forged, identity...)
	forged = append(forged, make([]byte, 32)...)
	refuseGroup(t, NewReceiverKey(d), forged, ErrBadSignature)

	good, _ := k.Distribution().MarshalBinary()
	for _, s := range weakSigningKeys {
		key, _ := hex.DecodeString(s)
		b := append(bytes.Clone(good[:109]), key...)
		if _, err := ParseSenderKeyDistribution(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("distribution with signing key %s: %v", s, err)
		}
		r := NewReceiverKey(k.Distribution())
		st, _ := r.MarshalBinary()
		copy(st[77:109], key)
		if _, err := ParseReceiverKey(st); !errors.Is(err, ErrMalformed) {
			t.Errorf("stored receiver key with signing key %s: %v", s, err)
		}
	}
	// Control: the genuine key still opens.
	openGroupOK(t, receiverOf(t, k), sealGroup(t, k, "genuine"), "genuine")
}
